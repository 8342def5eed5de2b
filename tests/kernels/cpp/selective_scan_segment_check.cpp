// Host build of csrc/selective_scan_segment/segment_walk.h and segment_backward.h: the per-thread functions of
// the CUDA kernels, run here by plain loops over the same tasks the CUDA grid maps to threads. Built as a shared
// library by tests/kernels/test_selective_scan_cuda_segment.py (g++) and called through ctypes.
//   segment_forward_{f32,f64}(..., phases): phases 1 = summaries only, 2 = + carry, 3 = + outputs and merge.
//   segment_backward_carries_{f32,f64}(..., phases): 1 = reverse summaries only, 2 = + reverse carry.
//   segment_backward_f64(inputs, ..., grads): the whole backward (float64).
// Returns 0, or 1 for a state count above the widest instantiation (64).
#include <cstdint>
#include <vector>

#include "selective_scan_segment/segment_backward.h"

using namespace anatokernels::segment;

namespace {

// The CUDA grid of one phase as plain loops: f(b, k, d, i) for every (b, k, d) row and i < count (a segment j or
// a state n).
template <typename T, typename Count, typename F>
void each_lane(const Args<T, T>& a, Count count, F f) {
  for (int32_t b = 0; b < a.batch; ++b)
    for (int32_t k = 0; k < a.K; ++k)
      for (int32_t d = 0; d < a.Dm; ++d)
        for (Count i = 0; i < count; ++i) f(b, k, d, i);
}

template <typename T>
int forward(const T* u, const T* delta, const T* A, const T* B, const T* C, const T* D, const T* z, const T* bias,
            const int64_t* geometry, const int32_t* sizes, int softplus, int phases, T* states, T* sums, T* y,
            T* last, T* out) {
  // sizes: batch, K, Dm, L, N, G, seg, slots
  Args<T, T> a{u, delta, B, C, z, A, D, bias, geometry, states, sums, y, last,
               sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5], sizes[6], sizes[7], softplus != 0};
  if (a.K == 1) a.y = out;  // direct: phase 3 gates and stores the output itself
  const uint32_t tasks = static_cast<uint32_t>(a.slots - 1);
  return dispatch_width(a.N, [&](auto width) {
    constexpr int NMAX = decltype(width)::value;
    constexpr bool FULL = decltype(width)::full;
    each_lane(a, tasks, [&](int32_t b, int32_t k, int32_t d, auto j) {
      forward_walk<false, NMAX, FULL>(a, b, k, d, j);
    });
    if (phases < 2) return;
    each_lane(a, a.N, [&](int32_t b, int32_t k, int32_t d, auto n) { carry_forward(a, b, k, d, n); });
    if (phases < 3) return;
    each_lane(a, tasks, [&](int32_t b, int32_t k, int32_t d, auto j) {
      forward_walk<true, NMAX, FULL>(a, b, k, d, j);
    });
    if (a.K == 1) return;
    for (int32_t b = 0; b < a.batch; ++b)
      for (int32_t d = 0; d < a.Dm; ++d)
        for (int32_t l = 0; l < a.L; ++l)
          out[(static_cast<int64_t>(b) * a.Dm + d) * a.L + l] = merge_value(a, y, b, d, l);
  }) ? 0 : 1;
}

// Backward phases 1 (and with phases >= 2 the reverse carry) into gb (Bt, K, Dm, slots, N) and sums.
template <typename T>
int backward_carries(const T* delta, const T* A, const T* C, const T* z, const T* bias, const int64_t* geometry,
                     const int32_t* sizes, int softplus, const T* dout, const T* dlast, int phases, T* gb, T* sums) {
  Args<T, T> a{nullptr, delta, nullptr, C, z, A, nullptr, bias, geometry, gb, sums, nullptr, nullptr,
               sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5], sizes[6], sizes[7], softplus != 0,
               dout, dlast};
  const uint32_t tasks = static_cast<uint32_t>(a.slots - 1);
  return dispatch_width(a.N, [&](auto width) {
    constexpr int NMAX = decltype(width)::value;
    constexpr bool FULL = decltype(width)::full;
    each_lane(a, tasks, [&](int32_t b, int32_t k, int32_t d, auto j) { backward_summary<NMAX, FULL>(a, b, k, d, j); });
    if (phases < 2) return;
    each_lane(a, a.N, [&](int32_t b, int32_t k, int32_t d, auto n) { carry_reverse(a, b, k, d, n); });
  }) ? 0 : 1;
}

// The whole backward: phases 1-2 into gb/sums, the gradient walk (chunks of 2 steps, so that segments of 3 or
// more steps take the recompute path; sums added directly: DirectSum; then every task again with no segment, as
// the idle warps of a GPU block run it, which must change nothing), and dz.
// grads: du, ddelta (T); dA, dB, dC, dD, dbias (zeroed), y, dz.
template <typename T>
int backward(const T* const* in, const int64_t* geometry, const int32_t* sizes, int softplus, const T* dout,
             const T* dlast, const T* H, T* gb, T* sums, T* const* grads) {
  // in: u, delta, A, B, C, D, z, bias
  Args<T, T> a{in[0], in[1], in[3], in[4], in[6], in[2], in[5], in[7], geometry, gb, sums, nullptr, nullptr,
               sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5], sizes[6], sizes[7], softplus != 0,
               dout, dlast};
  Grads<T, T> q{H, grads[0], grads[1], grads[2], grads[3], grads[4], grads[5], grads[6], grads[7]};
  if (a.K == 1) q.y = grads[8];  // dz directly
  if (backward_carries<T>(a.delta, a.A, a.C, a.z, a.bias, geometry, sizes, softplus, dout, dlast, 2, gb, sums))
    return 1;
  const uint32_t tasks = static_cast<uint32_t>(a.slots - 1);
  DirectSum sum;
  dispatch_width(a.N, [&](auto width) {
    constexpr int NMAX = decltype(width)::value;
    constexpr bool FULL = decltype(width)::full;
    each_lane(a, tasks, [&](int32_t b, int32_t k, int32_t d, auto j) {
      backward_walk<2, NMAX, FULL>(a, q, b, k, d, j, sum);
    });
    each_lane(a, tasks, [&](int32_t b, int32_t k, int32_t d, auto j) {  // as a GPU block's idle warps: no change
      backward_walk<2, NMAX, FULL>(a, q, b, k, d, j, sum, false);
    });
  });
  if (a.K > 1 && a.z) {
    for (int32_t b = 0; b < a.batch; ++b)
      for (int32_t d = 0; d < a.Dm; ++d)
        for (int32_t l = 0; l < a.L; ++l)
          grads[8][(static_cast<int64_t>(b) * a.Dm + d) * a.L + l] = merge_dz(a, q.y, b, d, l);
  }
  return 0;
}

}  // namespace

extern "C" int segment_backward_f64(const double* const* in, const int64_t* geometry, const int32_t* sizes,
                                    int softplus, const double* dout, const double* dlast, const double* H,
                                    double* gb, double* sums, double* const* grads) {
  return backward<double>(in, geometry, sizes, softplus, dout, dlast, H, gb, sums, grads);
}

#define ANATO_SEGMENT_BACKWARD(SUFFIX, T)                                                                      \
  extern "C" int segment_backward_carries_##SUFFIX(const T* delta, const T* A, const T* C, const T* z,          \
                                                   const T* bias, const int64_t* geometry, const int32_t* sizes, \
                                                   int softplus, const T* dout, const T* dlast, int phases,      \
                                                   T* gb, T* sums) {                                             \
    return backward_carries<T>(delta, A, C, z, bias, geometry, sizes, softplus, dout, dlast, phases, gb, sums); \
  }

ANATO_SEGMENT_BACKWARD(f32, float)
ANATO_SEGMENT_BACKWARD(f64, double)

#define ANATO_SEGMENT_FORWARD(SUFFIX, T)                                                                        \
  extern "C" int segment_forward_##SUFFIX(const T* u, const T* delta, const T* A, const T* B, const T* C,       \
                                          const T* D, const T* z, const T* bias, const int64_t* geometry,       \
                                          const int32_t* sizes, int softplus, int phases, T* states, T* sums,   \
                                          T* y, T* last, T* out) {                                              \
    return forward<T>(u, delta, A, B, C, D, z, bias, geometry, sizes, softplus, phases, states, sums, y, last,  \
                      out);                                                                                     \
  }

ANATO_SEGMENT_FORWARD(f32, float)
ANATO_SEGMENT_FORWARD(f64, double)
