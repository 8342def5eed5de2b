// Plain CUDA launchers of the segment-parallel selective scan, forward and backward (no ATen: nvcc compiles the
// .cu standalone). T (activations) is float, double, __half or __nv_bfloat16; Acc is double for double, else float.
// Layouts and phases: segment_walk.h (every tensor contiguous). The caller allocates
//   states (Bt, K, Dm, slots, N), sums (Bt, K, Dm, slots), last (Bt, K, Dm, N) and, for K > 1, y (Bt, K, Dm, L)
// in Acc, slots = S_max + 1 with segments of kSegmentSteps steps, and out (Bt, Dm, L) in Acc.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "selective_scan_segment/segment_backward.h"

namespace anatokernels {

// Steps per segment on the GPU (a row of 64 at 64^3: one segment per row of the fastest axis).
constexpr int kSegmentSteps = 64;
// Threads per block of the walk kernels: one (channel, segment) task each.
constexpr int kSegmentThreads = 128;

// Runs phases 1-4; a.y is the (Bt, K, Dm, L) buffer (unused for K = 1, where phase 3 writes out directly).
// Returns cudaErrorInvalidValue for N > 64.
template <typename T, typename Acc>
cudaError_t selective_scan3d_segment_fwd_cuda(const segment::Args<T, Acc>& a, Acc* out, cudaStream_t stream);

// Runs backward phases 1-4 (segment_backward.h). a: the forward's inputs with dout (Bt, Dm, L) and dlast
// (Bt, K, Dm, N), a.states (Bt, K, Dm, slots, N) and a.sums (Bt, K, Dm, slots) the backward's own buffers (Acc).
// q: q.H the forward's states; du, ddelta (Bt, K, Dm, L) in T; dA (K, Dm, N), dB, dC (Bt, K, G, N, L), dD, dbias
// (K, Dm; null without D / delta_bias) in Acc, zeroed by the caller (the kernels add to them); with z and K > 1,
// q.y a (Bt, K, Dm, L) buffer of the y_k. dz (Bt, Dm, L) in Acc, written where z is given. Returns
// cudaErrorInvalidValue for N > 64.
template <typename T, typename Acc>
cudaError_t selective_scan3d_segment_bwd_cuda(const segment::Args<T, Acc>& a, const segment::Grads<T, Acc>& q,
                                              Acc* dz, cudaStream_t stream);

}  // namespace anatokernels
