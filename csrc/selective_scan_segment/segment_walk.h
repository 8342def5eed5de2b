// The per-thread arithmetic of the segment-parallel selective scan, shared by the CUDA kernels
// (selective_scan_segment_cuda.cu) and the host build the tests check against the PyTorch reference
// (tests/kernels/cpp/selective_scan_segment_check.cpp): plain C++, no torch headers.
//
// Canonical layout (anatokernels/selective_scan/function.py), every tensor contiguous:
//   u, delta (Bt, K, Dm, L); A (K, Dm, N); B, C (Bt, K, G, N, L); D, bias (K, Dm); z (Bt, Dm, L);
//   geometry (K, 7) rows (n0, n1, n2, st0, st1, st2, reverse).
// A *segment* is a run of at most `seg` consecutive steps of one order along its fastest axis (n2):
// each row of that axis holds cdiv(n2, seg) segments, the last one shorter when seg does not divide n2.
// Order k has S_k = n0·n1·cdiv(n2, seg) segments; segment j (in scan order) is read in place from a start
// position with a step of ±st2 (int32 positions: L < 2^31; two 32-bit divisions per segment, none per step).
// State buffers have `slots` = S_max + 1 slots per (b, k, d) row:
//   states (Bt, K, Dm, slots, N), sums (Bt, K, Dm, slots).
// Forward phases:
//   1. forward_walk<false>: task (b, k, d, j) walks segment j from a zero state; its end state -> states
//      slot j + 1, its Σδ -> sums slot j + 1 (its total decay is exp(A·Σδ)).
//   2. carry_forward: per (b, k, d, n), h_j = exp(A·Σδ_j)·h_{j-1} + x_j over the segments, in place: slot j
//      becomes the state entering segment j (slot 0 = 0), slot S_k the last state (kept for the backward).
//   3. forward_walk<true>: segment j walked again from its entering state; y_k = Σ_n C·h + D·u at every step
//      into y (Bt, K, Dm, L), or with K = 1 gated by silu(z) straight into out (Bt, Dm, L).
//   4. merge_value: out = Σ_k y_k, times silu(z) (K > 1).
// The backward's per-thread functions: segment_backward.h.
#pragma once
#include <cmath>
#include <cstdint>

#include "selective_scan/scan_geometry.h"  // ANATO_HOST_DEVICE

#if defined(__CUDACC__)
#define ANATO_UNROLL _Pragma("unroll")
#define ANATO_NO_UNROLL _Pragma("unroll 1")
#else
#define ANATO_UNROLL
#define ANATO_NO_UNROLL
#endif

namespace anatokernels {
namespace segment {

constexpr double kLog2e = 1.4426950408889634;

// 2^x: on the GPU the MUFU.EX2 instruction (ex2.approx.ftz, 2 ulp: what --use_fast_math makes of exp2f, spelled
// out so that the static contracts, compiled without that flag, measure the instruction stream that runs).
ANATO_HOST_DEVICE float exp2_acc(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}
ANATO_HOST_DEVICE double exp2_acc(double x) { return exp2(x); }
ANATO_HOST_DEVICE float softplus_acc(float x) { return x > 20.0f ? x : log1pf(exp2_acc(x * float(kLog2e))); }
ANATO_HOST_DEVICE double softplus_acc(double x) { return x > 20.0 ? x : log1p(exp(x)); }
// 1 / (1 + e^-x); on the GPU an approximate reciprocal (MUFU.RCP, 2 ulp) instead of an IEEE division.
ANATO_HOST_DEVICE float sigmoid_acc(float x) {
  const float e = 1.0f + exp2_acc(-x * float(kLog2e));
#if defined(__CUDA_ARCH__)
  return __fdividef(1.0f, e);
#else
  return 1.0f / e;
#endif
}
ANATO_HOST_DEVICE double sigmoid_acc(double x) { return 1.0 / (1.0 + exp(-x)); }

// Pointers and sizes of one call. y: (Bt, K, Dm, L), or (Bt, Dm, L) when K == 1 (gated there).
template <typename T, typename Acc>
struct Args {
  const T *u, *delta, *B, *C, *z;  // z may be null
  const Acc *A, *D, *bias;         // D, bias may be null
  const int64_t* geometry;
  Acc *states, *sums, *y, *last;  // the backward's state gradients and Σδ go in states and sums
  int32_t batch, K, Dm, L, N, G, seg, slots;
  bool softplus;
  const T* dout = nullptr;     // backward: (Bt, Dm, L)
  const Acc* dlast = nullptr;  // backward: (Bt, K, Dm, N)
};

// One segment: first native position, step (±st2) and number of steps.
struct Segment {
  int32_t start, step, length;
};

// Order k's geometry as 32-bit values and its segment count S_k.
struct Order {
  uint32_t n1, per_row, count;
  int32_t n2, st0, st1, st2;
  bool reverse;
};

ANATO_HOST_DEVICE Order order_of(const int64_t* row, int32_t seg) {
  Order o;
  o.n1 = static_cast<uint32_t>(row[1]);
  o.n2 = static_cast<int32_t>(row[2]);
  o.st0 = static_cast<int32_t>(row[3]);
  o.st1 = static_cast<int32_t>(row[4]);
  o.st2 = static_cast<int32_t>(row[5]);
  o.reverse = row[6] != 0;
  o.per_row = static_cast<uint32_t>((o.n2 + seg - 1) / seg);
  o.count = static_cast<uint32_t>(row[0]) * o.n1 * o.per_row;
  return o;
}

// Segment j < count in scan order (a reversed order walks the forward segments backwards, each from its end).
ANATO_HOST_DEVICE Segment segment_at(const Order& o, uint32_t j, int32_t seg) {
  const uint32_t f = o.reverse ? o.count - 1 - j : j;
  const uint32_t r = f / o.per_row, piece = f - r * o.per_row;
  const uint32_t i0 = r / o.n1, i1 = r - i0 * o.n1;
  const int32_t first = static_cast<int32_t>(piece) * seg;
  const int32_t length = o.n2 - first < seg ? o.n2 - first : seg;
  const int32_t base = static_cast<int32_t>(i0) * o.st0 + static_cast<int32_t>(i1) * o.st1;
  if (o.reverse) return Segment{base + (first + length - 1) * o.st2, -o.st2, length};
  return Segment{base + first * o.st2, o.st2, length};
}

// δ after bias and (optionally) softplus.
template <typename Acc>
ANATO_HOST_DEVICE Acc delta_value(Acc raw, Acc bias, bool softplus) {
  const Acc x = raw + bias;
  return softplus ? softplus_acc(x) : x;
}

// A walk's row offsets: row = (b·K + k)·Dm + d of u, δ and the state buffers; bc of B, C (b, k, group).
struct Rows {
  int64_t row, bc;
  int32_t kd;
};

template <typename T, typename Acc>
ANATO_HOST_DEVICE Rows rows_of(const Args<T, Acc>& a, int32_t b, int32_t k, int32_t d) {
  const int32_t group = d / (a.Dm / a.G);
  return Rows{static_cast<int64_t>(b * a.K + k) * a.Dm + d,
              (static_cast<int64_t>(b * a.K + k) * a.G + group) * a.N * a.L, k * a.Dm + d};
}

// A·log2e of channel kd's states (0 past N).
template <int NMAX, bool FULL, typename Acc>
ANATO_HOST_DEVICE void load_decay(const Acc* A, int32_t kd, int32_t N, Acc* A2) {
  ANATO_UNROLL
  for (int n = 0; n < NMAX; ++n) A2[n] = (FULL || n < N) ? A[kd * N + n] * Acc(kLog2e) : Acc(0);
}

// Phases 1 (OUTPUT = false) and 3 (OUTPUT = true) for task (b, k, d, j); a j past S_k does nothing.
// All N <= NMAX states stay in registers (h, A·log2e); Σ_n C·h is an in-thread sum. FULL: N == NMAX (no
// per-state guards in the step loop).
template <bool OUTPUT, int NMAX, bool FULL, typename T, typename Acc>
ANATO_HOST_DEVICE void forward_walk(const Args<T, Acc>& a, int32_t b, int32_t k, int32_t d, uint32_t j) {
  const Order o = order_of(a.geometry + 7 * k, a.seg);
  if (j >= o.count) return;
  const Segment s = segment_at(o, j, a.seg);
  const int32_t N = a.N, L = a.L;
  const Rows r = rows_of(a, b, k, d);
  const int64_t row = r.row;
  const int32_t kd = r.kd;
  const T* u = a.u + row * L;
  const T* delta = a.delta + row * L;
  const T* Bp = a.B + r.bc + s.start;  // B, C of state n at the current step: Bp[n·L], Cp[n·L]
  const T* Cp = a.C + r.bc + s.start;
  Acc* slot = a.states + (row * a.slots + j) * N;
  const Acc bias = a.bias ? a.bias[kd] : Acc(0);
  const Acc Dv = a.D ? a.D[kd] : Acc(0);
  const bool direct = a.K == 1;
  Acc* y = direct ? a.y + static_cast<int64_t>(b * a.Dm + d) * L : a.y + row * L;
  const T* z = (direct && a.z) ? a.z + static_cast<int64_t>(b * a.Dm + d) * L : nullptr;
  Acc A2[NMAX], h[NMAX];
  load_decay<NMAX, FULL>(a.A, kd, N, A2);
ANATO_UNROLL
  for (int n = 0; n < NMAX; ++n) h[n] = (OUTPUT && (FULL || n < N)) ? slot[n] : Acc(0);
  Acc sum = 0;
  int32_t pos = s.start;
  for (int32_t i = 0; i < s.length; ++i, pos += s.step, Bp += s.step, Cp += s.step) {
    const Acc dt = delta_value(static_cast<Acc>(delta[pos]), bias, a.softplus);
    const Acc uu = static_cast<Acc>(u[pos]);
    const Acc du = dt * uu;
    Acc out = Dv * uu;
ANATO_UNROLL
    for (int n = 0; n < NMAX; ++n) {
      if (FULL || n < N) {
        h[n] = exp2_acc(dt * A2[n]) * h[n] + du * static_cast<Acc>(Bp[n * L]);
        if (OUTPUT) out += static_cast<Acc>(Cp[n * L]) * h[n];
      }
    }
    if (OUTPUT) {
      if (z) {
        const Acc zt = static_cast<Acc>(z[pos]);
        out = out * zt * sigmoid_acc(zt);
      }
      y[pos] = out;
    } else {
      sum += dt;
    }
  }
  if (!OUTPUT) {
ANATO_UNROLL
    for (int n = 0; n < NMAX; ++n) {
      if (FULL || n < N) slot[N + n] = h[n];
    }
    a.sums[row * a.slots + j + 1] = sum;
  }
}

// One (b, k, d, n) lane of the carry passes (phase 2 forward and backward): the order's segment count S_k, the
// (Bt, K, Dm) row index, A·log2 e, the lane's slots of `states` (stride N) and the row's Σδ in `sums`.
template <typename Acc>
struct CarryLane {
  uint32_t count;
  int64_t row;
  Acc A2;
  Acc* x;
  const Acc* sums;
};

template <typename T, typename Acc>
ANATO_HOST_DEVICE CarryLane<Acc> carry_lane(const Args<T, Acc>& a, int32_t b, int32_t k, int32_t d, int32_t n) {
  const int64_t row = static_cast<int64_t>(b * a.K + k) * a.Dm + d;
  return {order_of(a.geometry + 7 * k, a.seg).count, row, a.A[(k * a.Dm + d) * a.N + n] * Acc(kLog2e),
          a.states + row * a.slots * a.N + n, a.sums + row * a.slots};
}

// Phase 2 for (b, k, d, n): slot j of `states` (slot 1..S_k holding segment j - 1's zero-start end state)
// becomes the state entering segment j; slot 0 = 0; last (Bt, K, Dm, N) = slot S_k.
template <typename T, typename Acc>
ANATO_HOST_DEVICE void carry_forward(const Args<T, Acc>& a, int32_t b, int32_t k, int32_t d, int32_t n) {
  const CarryLane<Acc> c = carry_lane(a, b, k, d, n);
  const int32_t N = a.N;
  Acc h = 0;
  c.x[0] = h;
  for (uint32_t m = 1; m <= c.count; ++m) {
    h = exp2_acc(c.A2 * c.sums[m]) * h + c.x[static_cast<int64_t>(m) * N];
    c.x[static_cast<int64_t>(m) * N] = h;
  }
  a.last[c.row * N + n] = h;
}

// Phase 4 (K > 1) at native position l of (b, d): Σ_k y_k, times silu(z).
template <typename T, typename Acc>
ANATO_HOST_DEVICE Acc merge_value(const Args<T, Acc>& a, const Acc* y_orders, int32_t b, int32_t d, int32_t l) {
  Acc out = 0;
ANATO_NO_UNROLL
  for (int32_t k = 0; k < a.K; ++k) out += y_orders[(static_cast<int64_t>(b * a.K + k) * a.Dm + d) * a.L + l];
  if (a.z) {
    const Acc zt = static_cast<Acc>(a.z[static_cast<int64_t>(b * a.Dm + d) * a.L + l]);
    out = out * zt * sigmoid_acc(zt);
  }
  return out;
}

// Calls fn(Width<NMAX, FULL>{}) with NMAX the smallest of 4, 8, 16, 32, 64 holding n_state and FULL when
// n_state == NMAX; returns false (fn not called) for n_state > 64.
template <int NMAX, bool FULL>
struct Width {
  static constexpr int value = NMAX;
  static constexpr bool full = FULL;
};

template <int NMAX, typename Fn>
void dispatch_full(int32_t n_state, Fn&& fn) {
  if (n_state == NMAX) fn(Width<NMAX, true>{});
  else fn(Width<NMAX, false>{});
}

template <typename Fn>
bool dispatch_width(int32_t n_state, Fn&& fn) {
  if (n_state <= 4) dispatch_full<4>(n_state, fn);
  else if (n_state <= 8) dispatch_full<8>(n_state, fn);
  else if (n_state <= 16) dispatch_full<16>(n_state, fn);
  else if (n_state <= 32) dispatch_full<32>(n_state, fn);
  else if (n_state <= 64) dispatch_full<64>(n_state, fn);
  else return false;
  return true;
}

}  // namespace segment
}  // namespace anatokernels
