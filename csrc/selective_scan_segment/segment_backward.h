// The backward's per-thread arithmetic of the segment-parallel selective scan (see segment_walk.h for the
// layout, the segments and the forward), shared by the CUDA kernels (selective_scan_segment_cuda.cu) and, like
// the forward's, by the host build the tests check (tests/kernels/cpp/selective_scan_segment_check.cpp).
//   1. backward_summary: task (b, k, d, j) walks segment j in reverse from a zero gradient: R_j -> states slot j,
//      Σδ -> sums slot j (the backward's own buffers).
//   2. carry_reverse: per (b, k, d, n), G_{j-1} = R_j + exp(A·Σδ_j)·G_j from dlast, in place: slot j + 1 = G_j.
//   3. backward_walk: task (b, k, d, j) recomputes its states from the forward's H_j and walks back from G_j:
//      du, dδ, dA, dB, dC, dD, dδ-bias and y_k (with K = 1 dz itself). Its sums over tasks (dB, dC words; dA,
//      dD, dδ-bias totals) go through a `Sum` policy: DirectSum here, a block-wide reduction on the GPU.
//   4. merge_dz (K > 1): dz = dout·(Σ_k y_k)·silu'(z).
#pragma once
#include "selective_scan_segment/segment_walk.h"

// The state loops of backward_walk on the GPU: unrolled up to 16 states (the per-state gradients and the states
// entering a chunk in registers); a wider instantiation keeps one loop body (those arrays in local memory), which
// keeps the compile time and the code of the 32- and 64-state kernels small.
#if defined(__CUDACC__)
#define ANATO_UNROLL_STATES _Pragma("unroll (NMAX <= 16 ? NMAX : 1)")
#else
#define ANATO_UNROLL_STATES
#endif

namespace anatokernels {
namespace segment {

// p itself, made opaque to the GPU compiler: left to itself it re-associates a row pointer plus a per-step position
// into 64-bit index sums (four to six instructions per address instead of one or two). Accesses through it are
// generic (LD/ST, not LDG/STG): the same memory path for global addresses.
template <typename T>
ANATO_HOST_DEVICE T* opaque(T* p) {
#if defined(__CUDA_ARCH__)
  asm("" : "+l"(p));
#endif
  return p;
}

// Backward phase 1 for task (b, k, d, j): segment j walked in reverse from a zero gradient, with g_t the gradient
// reaching y_k at step t (dout·silu(z)): R[n] = a_t[n]·(g_t·C_t[n] + R[n]) from its last step to its first, the
// gradient its own steps send to the state entering it -> states slot j; its Σδ -> sums slot j.
template <int NMAX, bool FULL, typename T, typename Acc>
ANATO_HOST_DEVICE void backward_summary(const Args<T, Acc>& a, int32_t b, int32_t k, int32_t d, uint32_t j) {
  const Order o = order_of(a.geometry + 7 * k, a.seg);
  if (j >= o.count) return;
  const Segment s = segment_at(o, j, a.seg);
  const int32_t N = a.N, L = a.L;
  const Rows r = rows_of(a, b, k, d);
  const int32_t last = s.start + (s.length - 1) * s.step;
  const T* delta = a.delta + r.row * L;
  const T* dout = a.dout + static_cast<int64_t>(b * a.Dm + d) * L;
  const T* z = a.z ? a.z + static_cast<int64_t>(b * a.Dm + d) * L : nullptr;
  const T* Cp = a.C + r.bc + last;
  const Acc bias = a.bias ? a.bias[r.kd] : Acc(0);
  Acc A2[NMAX], R[NMAX];
  load_decay<NMAX, FULL>(a.A, r.kd, N, A2);
ANATO_UNROLL
  for (int n = 0; n < NMAX; ++n) R[n] = Acc(0);
  Acc sum = 0;
  int32_t pos = last;
  for (int32_t i = 0; i < s.length; ++i, pos -= s.step, Cp -= s.step) {
    const Acc dt = delta_value(static_cast<Acc>(delta[pos]), bias, a.softplus);
    Acc g = static_cast<Acc>(dout[pos]);
    if (z) {
      const Acc zt = static_cast<Acc>(z[pos]);
      g *= zt * sigmoid_acc(zt);
    }
ANATO_UNROLL
    for (int n = 0; n < NMAX; ++n) {
      if (FULL || n < N) R[n] = exp2_acc(dt * A2[n]) * (g * static_cast<Acc>(Cp[n * L]) + R[n]);
    }
    sum += dt;
  }
  Acc* slot = a.states + (r.row * a.slots + j) * N;
ANATO_UNROLL
  for (int n = 0; n < NMAX; ++n) {
    if (FULL || n < N) slot[n] = R[n];
  }
  a.sums[r.row * a.slots + j] = sum;
}

// Backward phase 2 for (b, k, d, n): from G_{S-1} = dlast, G_{m-1} = R_m + exp(A·Σδ_m)·G_m for m = S-1..0, in
// place: slot m becomes G_{m-1}, slot S = dlast, so slot j + 1 holds G_j, the state gradient reaching the end of
// segment j from later steps (slot 0: the gradient of the zero initial state, unused).
template <typename T, typename Acc>
ANATO_HOST_DEVICE void carry_reverse(const Args<T, Acc>& a, int32_t b, int32_t k, int32_t d, int32_t n) {
  const CarryLane<Acc> c = carry_lane(a, b, k, d, n);
  const int32_t N = a.N;
  Acc g = a.dlast[c.row * N + n];
  c.x[static_cast<int64_t>(c.count) * N] = g;
  for (uint32_t m = c.count; m-- > 0;) {
    g = exp2_acc(c.A2 * c.sums[m]) * g + c.x[static_cast<int64_t>(m) * N];
    c.x[static_cast<int64_t>(m) * N] = g;
  }
}

// The backward's outputs. du, ddelta (Bt, K, Dm, L) and, with z, y (Bt, K, Dm, L; dz for K = 1, then (Bt, Dm, L))
// are stored; dA (K, Dm, N), dB, dC (Bt, K, G, N, L), dD, dbias (K, Dm) are added to (zeroed by the caller).
// H: the forward's entering states (Bt, K, Dm, slots, N).
template <typename T, typename Acc>
struct Grads {
  const Acc* H;
  T *du, *ddelta;
  Acc *dA, *dB, *dC, *dD, *dbias, *y;
};

// One chunk of at most W steps of a segment: its length, the position of its step i (first + i·step), per step
// δ (after softplus), δ·u, the gradient g reaching y_k, and the sums over states n of λ_n·B_n (lb: du = δ·lb,
// dδ = la + u·lb), of λ_n·A_n·a_n·h_n,t-1 (la) and y_k. Steps len..W-1 are padding with δ = u = g = 0, which
// leave every state and gradient as it is (exp(0·A) = 1): the walks run all W steps without a branch, reading B
// and C of a padding step at `pad`, a valid position (the segment's start).
template <int W, typename Acc>
struct Chunk {
  int32_t len, first, step, pad;
  Acc dt[W], dtu[W], g[W], lb[W], la[W], y[W];
  ANATO_HOST_DEVICE int32_t pos(int32_t i) const { return first + i * step; }
  ANATO_HOST_DEVICE int32_t read(int32_t i) const { return i < len ? pos(i) : pad; }
};

// NMAX values of one task, element n at p[n·stride].
template <typename Acc>
struct Column {
  Acc* p;
  int32_t stride;
  ANATO_HOST_DEVICE Acc& operator[](int n) const { return p[n * stride]; }
};

// The host's Sum policy (one task at a time): every sum added straight to its output. The outputs it adds to are
// zeroed by the caller. words: a chunk's dB, dC contributions of one state at its c.len steps. column: where
// backward_walk keeps its q-th array of per-state values that live across chunks but are touched once per chunk
// (0: dA, 1: the states at the segment's middle): here the task's own [NMAX] array `spare`.
struct DirectSum {
  template <typename Acc>
  ANATO_HOST_DEVICE Column<Acc> column(Acc* spare, int) const {
    return {spare, 1};
  }
  template <int W, typename Acc>
  ANATO_HOST_DEVICE void words(Acc* dB, Acc* dC, const Chunk<W, Acc>& c, const Acc* db, const Acc* dc) const {
    for (int32_t i = 0; i < c.len; ++i) {
      dB[c.pos(i)] += db[i];
      dC[c.pos(i)] += dc[i];
    }
  }
  template <typename Acc>
  ANATO_HOST_DEVICE void total(Acc* p, Acc v) const {
    *p += v;
  }
};

// A task's rows of the per-step tensors, each opaque(): u, δ, du, dδ (Bt, K, Dm, L); dout, z (Bt, Dm, L); with z
// y_k (its (Bt, K, Dm, L) row, or for K = 1 dz's (Bt, Dm, L) row), else null.
template <typename T, typename Acc>
struct StepRows {
  const T *u, *delta, *dout, *z;
  T *du, *ddelta;
  Acc* y;
};

template <typename T, typename Acc>
ANATO_HOST_DEVICE StepRows<T, Acc> step_rows(const Args<T, Acc>& a, const Grads<T, Acc>& q, const Rows& r, int32_t b,
                                             int32_t d) {
  const int64_t row = r.row * a.L, zrow = static_cast<int64_t>(b * a.Dm + d) * a.L;
  return {opaque(a.u + row),          opaque(a.delta + row),
          opaque(a.dout + zrow),      a.z ? opaque(a.z + zrow) : nullptr,
          opaque(q.du + row),         opaque(q.ddelta + row),
          a.z ? opaque(q.y + (a.K == 1 ? zrow : row)) : nullptr};
}

// Chunk c0 of segment s; `live` false: g = 0 (a GPU block's idle warp: every gradient it computes is zero).
template <int W, typename T, typename Acc>
ANATO_HOST_DEVICE void load_chunk(const Args<T, Acc>& a, const StepRows<T, Acc>& t, const Segment& s, int32_t c0,
                                  Acc bias, Acc Dv, bool live, Chunk<W, Acc>& c) {
  c.len = s.length - c0 < W ? (s.length > c0 ? s.length - c0 : 0) : W;
  c.first = s.start + c0 * s.step;
  c.step = s.step;
  c.pad = s.start;
ANATO_UNROLL
  for (int32_t i = 0; i < W; ++i) {
    const bool step = i < c.len;
    const int32_t p = c.read(i);
    const Acc uu = step ? static_cast<Acc>(t.u[p]) : Acc(0);
    c.dt[i] = step ? delta_value(static_cast<Acc>(t.delta[p]), bias, a.softplus) : Acc(0);
    c.dtu[i] = c.dt[i] * uu;
    c.g[i] = step && live ? static_cast<Acc>(t.dout[p]) : Acc(0);
    if (a.z) {
      const Acc zt = static_cast<Acc>(t.z[p]);
      c.g[i] *= zt * sigmoid_acc(zt);
    }
    c.lb[i] = c.la[i] = Acc(0);
    c.y[i] = Dv * uu;
  }
}

// States h[NMAX] of segment s walked in place from before its step `from` to before its step `to` (steps past the
// segment's end are not walked), all states at once (δ once per step, A·log2e read once).
template <int NMAX, bool FULL, typename T, typename Acc>
ANATO_HOST_DEVICE void walk_states(const Args<T, Acc>& a, const Rows& r, const StepRows<T, Acc>& t, const Segment& s,
                                   int32_t from, int32_t to, Acc bias, Acc* h) {
  const int32_t N = a.N, L = a.L, end = to < s.length ? to : s.length;
  Acc A2[NMAX];
  load_decay<NMAX, FULL>(a.A, r.kd, N, A2);
  const T* Bp = a.B + r.bc + s.start + from * s.step;
  int32_t pos = s.start + from * s.step;
  for (int32_t i = from; i < end; ++i, pos += s.step, Bp += s.step) {
    const Acc dt = delta_value(static_cast<Acc>(t.delta[pos]), bias, a.softplus);
    const Acc du = dt * static_cast<Acc>(t.u[pos]);
ANATO_UNROLL
    for (int n = 0; n < NMAX; ++n) {
      if (FULL || n < N) {
        h[n] = exp2_acc(dt * A2[n]) * h[n] + du * static_cast<Acc>(Bp[n * L]);
      }
    }
  }
}

// State n over one chunk: its states recomputed into a [W] column from hin (the state entering the chunk), then
// the reverse walk λ_t = g_t·C_t + (gradient reaching h_t from later steps: `carry`, then a_{t+1}·λ_{t+1}), adding
// to dA_n (once per chunk) and the chunk's lb, la, y_k sums; its dB, dC words go to sum.words (called for an empty
// chunk too: the GPU's block-wide reduction needs every thread). Returns the gradient reaching the state before
// the chunk.
template <int W, typename T, typename Acc, typename Sum>
ANATO_HOST_DEVICE Acc state_reverse_walk(const Args<T, Acc>& a, const Grads<T, Acc>& q, const Rows& r, int32_t n,
                                         Acc hin, Acc carry, Chunk<W, Acc>& c, Acc& dA, Sum& sum) {
  const int32_t L = a.L;
  const Acc A = a.A[r.kd * a.N + n], A2 = A * Acc(kLog2e);
  const T* Bn = opaque(a.B + r.bc + static_cast<int64_t>(n) * L);
  const T* Cn = opaque(a.C + r.bc + static_cast<int64_t>(n) * L);
  Acc db[W], dc[W], h[W], bt[W];  // padding steps: db = dc = 0, h = the last step's, the carry passes through
  Acc prev = hin, dAn = 0;
ANATO_UNROLL
  for (int32_t i = 0; i < W; ++i) {
    bt[i] = static_cast<Acc>(Bn[c.read(i)]);
    h[i] = prev = exp2_acc(c.dt[i] * A2) * prev + c.dtu[i] * bt[i];
  }
ANATO_UNROLL
  for (int32_t i = W - 1; i >= 0; --i) {
    const Acc ct = static_cast<Acc>(Cn[c.read(i)]);
    const Acc lt = c.g[i] * ct + carry;
    const Acc hp = i > 0 ? h[i - 1] : hin;
    const Acc at = exp2_acc(c.dt[i] * A2);
    const Acc lah = lt * at * hp;
    dc[i] = c.g[i] * h[i];
    db[i] = lt * c.dtu[i];
    c.lb[i] += lt * bt[i];
    c.la[i] += A * lah;
    dAn += c.dt[i] * lah;
    c.y[i] += ct * h[i];
    carry = at * lt;
  }
  dA += dAn;
  sum.words(q.dB + r.bc + static_cast<int64_t>(n) * L, q.dC + r.bc + static_cast<int64_t>(n) * L, c, db, dc);
  return carry;
}

// A chunk's per-step outputs: du = δ·lb (+ D·g), dδ = la + u·lb (through softplus: u and δ before it read again,
// not kept in register columns), with z y_k (K = 1: dz); dD and dδ-bias sums.
template <int W, typename T, typename Acc>
ANATO_HOST_DEVICE void store_chunk(const Args<T, Acc>& a, const StepRows<T, Acc>& t, Acc bias, Acc Dv,
                                   const Chunk<W, Acc>& c, Acc& dD, Acc& dbias) {
ANATO_UNROLL
  for (int32_t i = 0; i < W; ++i) {
    if (i >= c.len) break;
    const int32_t p = c.pos(i);
    const Acc uu = static_cast<Acc>(t.u[p]), dd = c.la[i] + uu * c.lb[i];
    t.du[p] = static_cast<T>(c.dt[i] * c.lb[i] + Dv * c.g[i]);
    const Acc ddt = a.softplus ? dd * sigmoid_acc(static_cast<Acc>(t.delta[p]) + bias) : dd;
    t.ddelta[p] = static_cast<T>(ddt);
    dD += c.g[i] * uu;
    dbias += ddt;
    if (a.z && a.K == 1) {
      const Acc zt = static_cast<Acc>(t.z[p]), sg = sigmoid_acc(zt);
      t.y[p] = static_cast<Acc>(t.dout[p]) * c.y[i] * sg * (Acc(1) + zt * (Acc(1) - sg));
    } else if (a.z) {
      t.y[p] = c.y[i];
    }
  }
}

// Backward phase 3 for task (b, k, d, j): segment j in chunks of W steps, last chunk first: the states entering the
// chunk recomputed (walk_states) from H_j or, for the second half of the segment, from the states entering its
// step `mid` (computed once, kept in registers: at most half a segment recomputed per chunk), then the chunk
// state by state (state_reverse_walk), the gradient reaching the segment's end G_j (states slot j + 1) carried.
// The [W] columns are unrolled loops over a compile-time W (registers on the GPU). Every task runs the same
// cdiv(seg, W) chunks (those past its segment, or all of them for j >= S_k, are empty), so that a GPU block
// reaches each sum.words together. dA, dD, dδ-bias: one sum.total each. `live` false (a GPU block's idle warp,
// here as the group's last channel): the walk runs with zero gradients, stores nothing and adds zeros.
template <int W, int NMAX, bool FULL, typename T, typename Acc, typename Sum>
ANATO_HOST_DEVICE void backward_walk(const Args<T, Acc>& a, const Grads<T, Acc>& q, int32_t b, int32_t k, int32_t d,
                                     uint32_t j, Sum& sum, bool live = true) {
  const Order o = order_of(a.geometry + 7 * k, a.seg);
  const bool has = j < o.count;
  const Segment s = has ? segment_at(o, j, a.seg) : Segment{0, 0, 0};
  const int32_t N = a.N;
  const Rows r = rows_of(a, b, k, d);
  const StepRows<T, Acc> t = step_rows(a, q, r, b, d);
  const Acc bias = a.bias ? a.bias[r.kd] : Acc(0);
  const Acc Dv = a.D ? a.D[r.kd] : Acc(0);
  const Acc* Hj = has ? q.H + (r.row * a.slots + j) * N : nullptr;
  Acc lam[NMAX], spare[2][NMAX];  // lam: the state gradient reaching the end of the current chunk from later steps
  const Column<Acc> dA = sum.column(spare[0], 0), hmid = sum.column(spare[1], 1);
  const int32_t mid = (a.seg + W - 1) / W / 2 * W;
  Acc h[NMAX];
ANATO_UNROLL_STATES
  for (int n = 0; n < NMAX; ++n) {
    lam[n] = (has && live && (FULL || n < N)) ? a.states[(r.row * a.slots + j + 1) * N + n] : Acc(0);
    dA[n] = Acc(0);
    h[n] = (Hj && (FULL || n < N)) ? Hj[n] : Acc(0);
  }
  walk_states<NMAX, FULL>(a, r, t, s, 0, mid, bias, h);
ANATO_UNROLL_STATES
  for (int n = 0; n < NMAX; ++n) hmid[n] = h[n];
  Acc dD = 0, dbias = 0;
  for (int32_t c0 = ((a.seg - 1) / W) * W; c0 >= 0; c0 -= W) {
    const bool upper = c0 >= mid;
    Acc hin[NMAX];
ANATO_UNROLL_STATES
    for (int n = 0; n < NMAX; ++n) hin[n] = upper ? hmid[n] : (Hj && (FULL || n < N)) ? Hj[n] : Acc(0);
    walk_states<NMAX, FULL>(a, r, t, s, upper ? mid : 0, c0, bias, hin);
    Chunk<W, Acc> c;
    load_chunk(a, t, s, c0, bias, Dv, live, c);
ANATO_UNROLL_STATES
    for (int n = 0; n < NMAX; ++n) {
      if (FULL || n < N) lam[n] = state_reverse_walk(a, q, r, n, hin[n], lam[n], c, dA[n], sum);
    }
    if (live) store_chunk(a, t, bias, Dv, c, dD, dbias);
  }
ANATO_UNROLL_STATES
  for (int n = 0; n < NMAX; ++n) {
    if (FULL || n < N) sum.total(q.dA + r.kd * N + n, dA[n]);
  }
  if (q.dD) sum.total(q.dD + r.kd, dD);
  if (q.dbias) sum.total(q.dbias + r.kd, dbias);
}

// dz (K > 1) at native position l of (b, d): dout·(Σ_k y_k)·silu'(z).
template <typename T, typename Acc>
ANATO_HOST_DEVICE Acc merge_dz(const Args<T, Acc>& a, const Acc* y_orders, int32_t b, int32_t d, int32_t l) {
  Acc y = 0;
ANATO_NO_UNROLL
  for (int32_t k = 0; k < a.K; ++k) y += y_orders[(static_cast<int64_t>(b * a.K + k) * a.Dm + d) * a.L + l];
  const int64_t at = static_cast<int64_t>(b * a.Dm + d) * a.L + l;
  const Acc zt = static_cast<Acc>(a.z[at]), sg = sigmoid_acc(zt);
  return static_cast<Acc>(a.dout[at]) * y * sg * (Acc(1) + zt * (Acc(1) - sg));
}

}  // namespace segment
}  // namespace anatokernels
