// Plain CUDA launchers for the multi-order selective scan (no ATen: nvcc compiles the .cu standalone).
// T (activations) is float, double, __half or __nv_bfloat16; acc_t is double for double, else float.
//
// Layouts (element strides given for the strided activations):
//   u, delta (Bt, K, Dm, L); B, C (Bt, K, G, N, L); z, dout (Bt, Dm, L)        any strides, T
//   A (K, Dm, N); D, bias (K, Dm); geometry (K, 7) int64 (see scan_geometry.h)  contiguous, acc_t
//   out, dz (Bt, Dm, L); last, dlast (Bt, K, Dm, N); checkpoints (Bt, K, Dm, ceil(L/chunk), N);
//   dB, dC (Bt, K, G, N, L); per-sample partials dA (Bt, K, Dm, N), dD, dbias (Bt, K, Dm)   contiguous, acc_t
//   du, ddelta (Bt, K, Dm, L)                                                    contiguous, T
// With K > 1 the launchers add into out and dz (the orders share them), and dB, dC are always summed
// with atomics: the caller zeroes those buffers first.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace anatokernels {

// Steps per chunk of the CUDA kernels (128 threads x 4 steps); checkpoints are taken every chunk.
constexpr int64_t kScanCudaChunk = 512;

struct ScanShape {
  int64_t batch, orders, dim, length, n_state, groups, n_chunks;
  bool softplus;
};

template <typename T, typename acc_t>
struct ScanInputs {
  const T* u;
  int64_t u_stride[4];
  const T* delta;
  int64_t delta_stride[4];
  const acc_t* A;
  const T* B;
  int64_t B_stride[5];
  const T* C;
  int64_t C_stride[5];
  const acc_t* D;     // nullptr when absent
  const T* z;         // nullptr when absent
  int64_t z_stride[3];
  const acc_t* bias;  // nullptr when absent
  const int64_t* geometry;
};

template <typename T, typename acc_t>
struct ScanForwardArgs {
  ScanShape shape;
  ScanInputs<T, acc_t> in;
  acc_t* out;
  acc_t* last;
  acc_t* checkpoints;
};

template <typename T, typename acc_t>
struct ScanBackwardArgs {
  ScanShape shape;
  ScanInputs<T, acc_t> in;
  const acc_t* checkpoints;
  const T* dout;
  int64_t dout_stride[3];
  const acc_t* dlast;
  T* du;
  T* ddelta;
  acc_t* dA_partial;
  acc_t* dB;
  acc_t* dC;
  acc_t* dD_partial;     // nullptr without D
  acc_t* dz;             // nullptr without z
  acc_t* dbias_partial;  // nullptr without bias
};

template <typename T, typename acc_t>
cudaError_t selective_scan3d_fwd_cuda(const ScanForwardArgs<T, acc_t>& args, cudaStream_t stream);

template <typename T, typename acc_t>
cudaError_t selective_scan3d_bwd_cuda(const ScanBackwardArgs<T, acc_t>& args, cudaStream_t stream);

}  // namespace anatokernels
