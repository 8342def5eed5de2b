// CUDA kernels of the segment-parallel selective scan, forward. Each thread runs one task of
// segment_walk.h (the functions the host build in tests/kernels/cpp/ checks against the reference):
//   walk_kernel<false>  phase 1, task (b, k, d, segment j): grid (cdiv(S_max, 128), K·Dm, Bt)
//   carry_kernel        phase 2, task (b, k, d, n): consecutive threads take consecutive states n
//   walk_kernel<true>   phase 3, as phase 1
//   merge_kernel        phase 4 (K > 1), kMergeItems native positions of (b, d) per thread:
//                       grid (cdiv(L, 256·kMergeItems), Dm, Bt)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "selective_scan_segment/selective_scan_segment_cuda.h"

namespace anatokernels {
namespace {

constexpr int kMergeThreads = 256;
constexpr int kMergeItems = 4;  // positions per thread (kMergeThreads apart: coalesced)

template <bool OUTPUT, int NMAX, bool FULL, typename T, typename Acc>
__global__ void __launch_bounds__(kSegmentThreads) walk_kernel(const segment::Args<T, Acc> a) {
  const uint32_t j = blockIdx.x * kSegmentThreads + threadIdx.x;
  const int32_t k = static_cast<int32_t>(blockIdx.y) / a.Dm;
  const int32_t d = static_cast<int32_t>(blockIdx.y) - k * a.Dm;
  segment::forward_walk<OUTPUT, NMAX, FULL>(a, static_cast<int32_t>(blockIdx.z), k, d, j);
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(kSegmentThreads) carry_kernel(const segment::Args<T, Acc> a) {
  const uint32_t task = blockIdx.x * kSegmentThreads + threadIdx.x;
  const uint32_t n_state = static_cast<uint32_t>(a.N), dim = static_cast<uint32_t>(a.Dm);
  const uint32_t row = task / n_state;
  if (row >= static_cast<uint32_t>(a.batch * a.K) * dim) return;
  const uint32_t bk = row / dim, k = bk % static_cast<uint32_t>(a.K);
  segment::carry_forward(a, static_cast<int32_t>(bk / a.K), static_cast<int32_t>(k),
                         static_cast<int32_t>(row - bk * dim), static_cast<int32_t>(task - row * n_state));
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(kMergeThreads) merge_kernel(const segment::Args<T, Acc> a, Acc* out) {
  const int32_t b = static_cast<int32_t>(blockIdx.z), d = static_cast<int32_t>(blockIdx.y);
  Acc* row = out + (static_cast<int64_t>(b) * a.Dm + d) * a.L;
#pragma unroll
  for (int i = 0; i < kMergeItems; ++i) {
    const int32_t l = static_cast<int32_t>((blockIdx.x * kMergeItems + i) * kMergeThreads + threadIdx.x);
    if (l < a.L) row[l] = segment::merge_value(a, a.y, b, d, l);
  }
}

}  // namespace

template <typename T, typename Acc>
cudaError_t selective_scan3d_segment_fwd_cuda(const segment::Args<T, Acc>& args, Acc* out, cudaStream_t stream) {
  segment::Args<T, Acc> a = args;
  if (a.K == 1) a.y = out;
  const dim3 walk_grid((a.slots - 1 + kSegmentThreads - 1) / kSegmentThreads, a.K * a.Dm, a.batch);
  const unsigned carry_blocks = (static_cast<unsigned>(a.batch * a.K * a.Dm * a.N) + kSegmentThreads - 1) /
                                kSegmentThreads;
  const bool known = segment::dispatch_width(a.N, [&](auto width) {
    constexpr int NMAX = decltype(width)::value;
    constexpr bool FULL = decltype(width)::full;
    walk_kernel<false, NMAX, FULL, T, Acc><<<walk_grid, kSegmentThreads, 0, stream>>>(a);
    carry_kernel<T, Acc><<<carry_blocks, kSegmentThreads, 0, stream>>>(a);
    walk_kernel<true, NMAX, FULL, T, Acc><<<walk_grid, kSegmentThreads, 0, stream>>>(a);
  });
  if (!known) return cudaErrorInvalidValue;
  if (a.K > 1) {
    const dim3 merge_grid((a.L + kMergeThreads * kMergeItems - 1) / (kMergeThreads * kMergeItems), a.Dm, a.batch);
    merge_kernel<T, Acc><<<merge_grid, kMergeThreads, 0, stream>>>(a, out);
  }
  return cudaGetLastError();
}

#define ANATO_SEGMENT_INSTANTIATE(T, ACC)                                                                     \
  template cudaError_t selective_scan3d_segment_fwd_cuda<T, ACC>(const segment::Args<T, ACC>&, ACC*,        \
                                                                 cudaStream_t);
ANATO_SEGMENT_INSTANTIATE(float, float)
ANATO_SEGMENT_INSTANTIATE(double, double)
ANATO_SEGMENT_INSTANTIATE(__half, float)
ANATO_SEGMENT_INSTANTIATE(__nv_bfloat16, float)

}  // namespace anatokernels
