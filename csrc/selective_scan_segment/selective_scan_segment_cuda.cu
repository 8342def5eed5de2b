// CUDA kernels of the segment-parallel selective scan. Each thread runs one task of segment_walk.h (forward)
// or segment_backward.h (backward), the functions the host build in tests/kernels/cpp/ checks against the
// reference. Forward:
//   walk_kernel<false>      phase 1, task (b, k, d, segment j): grid (cdiv(S_max, 128), K·Dm, Bt)
//   carry_kernel<false>     phase 2, task (b, k, d, n): consecutive threads take consecutive states n
//   walk_kernel<true>       phase 3, as phase 1
//   merge_kernel<false>     phase 4 (K > 1), kMergeItems native positions of (b, d) per thread:
//                           grid (cdiv(L, 256·kMergeItems), Dm, Bt)
// Backward:
//   summary_kernel          phase 1 (reverse summaries), as forward phase 1
//   carry_kernel<true>      phase 2 (reverse carry), as forward phase 2
//   backward_walk_kernel    phase 3, blocks of kBackwardChannels warps: warp w = channel first + w of one B/C
//                           group, lane x = segment 32·blockIdx.x + x; grid (cdiv(S_max, 32),
//                           K·G·cdiv(Dm/G, kBackwardChannels), Bt). dB, dC summed over the block's channels in
//                           shared memory, then one relaxed atomic per block and word (BlockSum)
//   merge_kernel<true>      phase 4 (K > 1, with z): dz, as forward phase 4
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "selective_scan_segment/selective_scan_segment_cuda.h"

namespace anatokernels {
namespace {

constexpr int kMergeThreads = 256;
constexpr int kMergeItems = 4;  // positions per thread (kMergeThreads apart: coalesced)
constexpr int kBackwardLanes = 32;    // segments per block of the backward walk: one warp per channel
constexpr int kBackwardChannels = 4;  // channels of one B/C group per block (warps), summed in shared memory
constexpr int kBackwardChunk = 8;     // W: steps per chunk of the backward walk (its [W] columns in registers)
constexpr int kBackwardThreads = kBackwardLanes * kBackwardChannels;

// Task (b, k, d, j) of a thread of the forward walks and the backward summaries (grid as walk_kernel).
struct Task {
  int32_t b, k, d;
  uint32_t j;
};

template <typename T, typename Acc>
__device__ Task segment_task(const segment::Args<T, Acc>& a) {
  const int32_t k = static_cast<int32_t>(blockIdx.y) / a.Dm;
  return Task{static_cast<int32_t>(blockIdx.z), k, static_cast<int32_t>(blockIdx.y) - k * a.Dm,
              blockIdx.x * kSegmentThreads + threadIdx.x};
}

template <bool OUTPUT, int NMAX, bool FULL, typename T, typename Acc>
__global__ void __launch_bounds__(kSegmentThreads) walk_kernel(const segment::Args<T, Acc> a) {
  const Task t = segment_task(a);
  segment::forward_walk<OUTPUT, NMAX, FULL>(a, t.b, t.k, t.d, t.j);
}

template <int NMAX, bool FULL, typename T, typename Acc>
__global__ void __launch_bounds__(kSegmentThreads) summary_kernel(const segment::Args<T, Acc> a) {
  const Task t = segment_task(a);
  segment::backward_summary<NMAX, FULL>(a, t.b, t.k, t.d, t.j);
}

// REVERSE: the backward's carry (carry_reverse), else the forward's (carry_forward).
template <bool REVERSE, typename T, typename Acc>
__global__ void __launch_bounds__(kSegmentThreads) carry_kernel(const segment::Args<T, Acc> a) {
  const uint32_t task = blockIdx.x * kSegmentThreads + threadIdx.x;
  const uint32_t n_state = static_cast<uint32_t>(a.N), dim = static_cast<uint32_t>(a.Dm);
  const uint32_t row = task / n_state;
  if (row >= static_cast<uint32_t>(a.batch * a.K) * dim) return;
  const uint32_t bk = row / dim, k = bk % static_cast<uint32_t>(a.K);
  const int32_t b = static_cast<int32_t>(bk / a.K), d = static_cast<int32_t>(row - bk * dim);
  const int32_t n = static_cast<int32_t>(task - row * n_state);
  if (REVERSE) segment::carry_reverse(a, b, static_cast<int32_t>(k), d, n);
  else segment::carry_forward(a, b, static_cast<int32_t>(k), d, n);
}

// The backward walk's Sum policy (segment_backward.h) in a backward_walk_kernel block: warp w = one channel, lane
// x = one segment, the same segments in every warp. words: a chunk's dB, dC contributions of one state are summed
// over the block's channels in shared memory (buf: two [kBackwardChannels][kBackwardLanes][kRow] halves, a lane's
// 2W words in a row as kVecs 16-byte vectors, dB's then dC's), each warp summing vectors w, w + kBackwardChannels,
// ... of its lane's row over the channels and adding each word with one relaxed atomic (RED). Consecutive calls use
// alternate halves, so one barrier per call suffices: a thread writes a half again only after the next call's
// barrier, which every thread reaches after its reads of that half. total (dA, dD, dδ-bias: one address per warp):
// a shuffle sum over the warp, one atomic from lane 0. Every thread of the block calls both at the same points
// (backward_walk's uniform chunk loop): the barriers are outside any divergent branch. column: backward_walk's
// per-state arrays touched once per chunk (dA, the middle states) in shared memory, `cols`
// ([2][NMAX][kBackwardLanes·kBackwardChannels], a thread's element n at n·blockDim: no bank conflicts), which frees
// their registers; without SHARED_COLUMNS (float64, NMAX > 16: the smem budget), the task's own array `spare`.
template <int W, typename Acc, bool SHARED_COLUMNS>
struct BlockSum {
  using Vec = typename std::conditional<std::is_same<Acc, float>::value, float4, double2>::type;
  static constexpr int kPer = sizeof(Vec) / sizeof(Acc);  // words per vector
  static constexpr int kRow = 2 * W + kPer;               // a lane's row, padded: 16-byte vectors without conflicts
  static constexpr int kVecs = 2 * W / kPer;              // vectors of a row: W / kPer of dB, then of dC
  static_assert(W % kPer == 0 && kVecs % kBackwardChannels == 0, "a chunk's words fill whole vectors, per warp");
  Acc (*buf)[kBackwardChannels][kBackwardLanes][kRow];  // [2]
  Acc* cols;  // [2][nmax][kBackwardThreads] with SHARED_COLUMNS
  int nmax;
  int half = 0;

  __device__ segment::Column<Acc> column(Acc* spare, int q) const {
    if constexpr (!SHARED_COLUMNS) return {spare, 1};
    else return {cols + q * nmax * kBackwardThreads + threadIdx.y * kBackwardLanes + threadIdx.x, kBackwardThreads};
  }

  __device__ static Vec pack(const Acc* v) {
    Vec out;
    Acc* e = reinterpret_cast<Acc*>(&out);
#pragma unroll
    for (int q = 0; q < kPer; ++q) e[q] = v[q];
    return out;
  }

  __device__ void words(Acc* dB, Acc* dC, const segment::Chunk<W, Acc>& c, const Acc* db, const Acc* dc) {
    const int x = static_cast<int>(threadIdx.x), w = static_cast<int>(threadIdx.y);
    Vec* row = reinterpret_cast<Vec*>(buf[half][w][x]);
#pragma unroll
    for (int i = 0; i < W; i += kPer) {
      row[i / kPer] = pack(db + i);
      row[(W + i) / kPer] = pack(dc + i);
    }
    __syncthreads();
#pragma unroll
    for (int m = 0; m < kVecs / kBackwardChannels; ++m) {
      const int vec = w + m * kBackwardChannels, i = (vec % (W / kPer)) * kPer;
      // no step of this vector in the chunk (the branch also keeps ptxas from interleaving the next state's loads
      // with this reduction, which took sm_90 past 255 registers)
      if (i >= c.len) continue;
      Acc s[kPer];
#pragma unroll
      for (int v = 0; v < kBackwardChannels; ++v) {
        const Vec part = reinterpret_cast<const Vec*>(buf[half][v][x])[vec];
        const Acc* e = reinterpret_cast<const Acc*>(&part);
#pragma unroll
        for (int q = 0; q < kPer; ++q) s[q] = v ? s[q] + e[q] : e[q];
      }
      Acc* out = vec < W / kPer ? dB : dC;
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        if (i + q < c.len) atomicAdd(out + c.pos(i + q), s[q]);
      }
    }
    half ^= 1;
  }

  __device__ void total(Acc* p, Acc v) const {
#pragma unroll
    for (int lanes = kBackwardLanes / 2; lanes > 0; lanes /= 2) v += __shfl_xor_sync(0xffffffffu, v, lanes);
    if (threadIdx.x == 0) atomicAdd(p, v);
  }
};

// Backward phase 3. A warp past its group's channels (Dm/G not a multiple of kBackwardChannels) walks the group's
// last channel with zero gradients (`live` false): it takes part in the barriers, stores nothing and adds zeros.
template <int NMAX, bool FULL, typename T, typename Acc>
__global__ void __launch_bounds__(kBackwardThreads)
    backward_walk_kernel(const segment::Args<T, Acc> a, const segment::Grads<T, Acc> q) {
  constexpr bool kSharedColumns = NMAX <= 16 && sizeof(Acc) == 4;
  using Sum = BlockSum<kBackwardChunk, Acc, kSharedColumns>;
  __shared__ __align__(16) Acc buf[2][kBackwardChannels][kBackwardLanes][Sum::kRow];
  __shared__ Acc cols[kSharedColumns ? 2 * NMAX * kBackwardThreads : 1];
  const int32_t per_group = a.Dm / a.G;
  const int32_t blocks = (per_group + kBackwardChannels - 1) / kBackwardChannels;  // per (k, group)
  const int32_t k = static_cast<int32_t>(blockIdx.y) / (a.G * blocks);
  const int32_t rest = static_cast<int32_t>(blockIdx.y) - k * a.G * blocks, g = rest / blocks;
  const int32_t end = (g + 1) * per_group;
  const int32_t d = g * per_group + (rest - g * blocks) * kBackwardChannels + static_cast<int32_t>(threadIdx.y);
  Sum sum{buf, cols, NMAX};
  segment::backward_walk<kBackwardChunk, NMAX, FULL>(a, q, static_cast<int32_t>(blockIdx.z), k, d < end ? d : end - 1,
                                                     blockIdx.x * kBackwardLanes + threadIdx.x, sum, d < end);
}

// DZ: the backward's phase 4 (merge_dz into dz), else the forward's (merge_value into out); y_orders (Bt, K, Dm, L).
template <bool DZ, typename T, typename Acc>
__global__ void __launch_bounds__(kMergeThreads)
    merge_kernel(const segment::Args<T, Acc> a, const Acc* y_orders, Acc* out) {
  const int32_t b = static_cast<int32_t>(blockIdx.z), d = static_cast<int32_t>(blockIdx.y);
  Acc* row = out + (static_cast<int64_t>(b) * a.Dm + d) * a.L;
#pragma unroll
  for (int i = 0; i < kMergeItems; ++i) {
    const int32_t l = static_cast<int32_t>((blockIdx.x * kMergeItems + i) * kMergeThreads + threadIdx.x);
    if (l < a.L) row[l] = DZ ? segment::merge_dz(a, y_orders, b, d, l) : segment::merge_value(a, y_orders, b, d, l);
  }
}

template <typename T, typename Acc>
dim3 walk_grid(const segment::Args<T, Acc>& a) {
  return dim3((a.slots - 1 + kSegmentThreads - 1) / kSegmentThreads, a.K * a.Dm, a.batch);
}

template <typename T, typename Acc>
unsigned carry_blocks(const segment::Args<T, Acc>& a) {
  return (static_cast<unsigned>(a.batch * a.K * a.Dm * a.N) + kSegmentThreads - 1) / kSegmentThreads;
}

template <typename T, typename Acc>
dim3 merge_grid(const segment::Args<T, Acc>& a) {
  return dim3((a.L + kMergeThreads * kMergeItems - 1) / (kMergeThreads * kMergeItems), a.Dm, a.batch);
}

}  // namespace

template <typename T, typename Acc>
cudaError_t selective_scan3d_segment_fwd_cuda(const segment::Args<T, Acc>& args, Acc* out, cudaStream_t stream) {
  segment::Args<T, Acc> a = args;
  if (a.K == 1) a.y = out;
  const bool known = segment::dispatch_width(a.N, [&](auto width) {
    constexpr int NMAX = decltype(width)::value;
    constexpr bool FULL = decltype(width)::full;
    walk_kernel<false, NMAX, FULL, T, Acc><<<walk_grid(a), kSegmentThreads, 0, stream>>>(a);
    carry_kernel<false, T, Acc><<<carry_blocks(a), kSegmentThreads, 0, stream>>>(a);
    walk_kernel<true, NMAX, FULL, T, Acc><<<walk_grid(a), kSegmentThreads, 0, stream>>>(a);
  });
  if (!known) return cudaErrorInvalidValue;
  if (a.K > 1) merge_kernel<false, T, Acc><<<merge_grid(a), kMergeThreads, 0, stream>>>(a, a.y, out);
  return cudaGetLastError();
}

template <typename T, typename Acc>
cudaError_t selective_scan3d_segment_bwd_cuda(const segment::Args<T, Acc>& a, const segment::Grads<T, Acc>& grads,
                                              Acc* dz, cudaStream_t stream) {
  segment::Grads<T, Acc> q = grads;
  if (a.K == 1) q.y = dz;
  const int32_t per_group = a.Dm / a.G;
  const dim3 backward_grid((a.slots - 1 + kBackwardLanes - 1) / kBackwardLanes,
                           a.K * a.G * ((per_group + kBackwardChannels - 1) / kBackwardChannels), a.batch);
  const bool known = segment::dispatch_width(a.N, [&](auto width) {
    constexpr int NMAX = decltype(width)::value;
    constexpr bool FULL = decltype(width)::full;
    summary_kernel<NMAX, FULL, T, Acc><<<walk_grid(a), kSegmentThreads, 0, stream>>>(a);
    carry_kernel<true, T, Acc><<<carry_blocks(a), kSegmentThreads, 0, stream>>>(a);
    backward_walk_kernel<NMAX, FULL, T, Acc>
        <<<backward_grid, dim3(kBackwardLanes, kBackwardChannels), 0, stream>>>(a, q);
  });
  if (!known) return cudaErrorInvalidValue;
  if (a.K > 1 && a.z) merge_kernel<true, T, Acc><<<merge_grid(a), kMergeThreads, 0, stream>>>(a, q.y, dz);
  return cudaGetLastError();
}

#define ANATO_SEGMENT_INSTANTIATE(T, ACC)                                                                     \
  template cudaError_t selective_scan3d_segment_fwd_cuda<T, ACC>(const segment::Args<T, ACC>&, ACC*,        \
                                                                 cudaStream_t);                              \
  template cudaError_t selective_scan3d_segment_bwd_cuda<T, ACC>(const segment::Args<T, ACC>&,              \
                                                                 const segment::Grads<T, ACC>&, ACC*,        \
                                                                 cudaStream_t);
ANATO_SEGMENT_INSTANTIATE(float, float)
ANATO_SEGMENT_INSTANTIATE(double, double)
ANATO_SEGMENT_INSTANTIATE(__half, float)
ANATO_SEGMENT_INSTANTIATE(__nv_bfloat16, float)

}  // namespace anatokernels
