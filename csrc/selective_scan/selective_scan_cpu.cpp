// C++/OpenMP multi-order selective scan, forward and backward. Registered as
//   anatokernels::selective_scan3d_fwd_cpu(u, delta, A, B, C, D?, z?, delta_bias?, geometry, softplus, chunk,
//                                          out, last, checkpoints)
//   anatokernels::selective_scan3d_bwd_cpu(dout, dlast, u, delta, A, B, C, D?, z?, delta_bias?, checkpoints,
//                                          geometry, softplus, chunk, du, ddelta, dA, dB, dC, dD, dz, dbias)
// Layouts (see anatokernels/selective_scan/function.py): u, delta (Bt, K, Dm, L); B, C (Bt, K, G, N, L);
// z, dout (Bt, Dm, L), any strides, in the activation dtype. A (K, Dm, N), D and delta_bias (K, Dm),
// geometry (K, 7) int64 and every other buffer are contiguous, in the accumulation dtype acc_t (float, or
// double for float64 inputs). out, dz (Bt, Dm, L) are in acc_t too; the caller casts them.
//
// Work split: the sequence is walked in phases of a few chunks (T steps each), all threads in step. For
// each phase the B and C rows are gathered once into (steps, N) tiles (n contiguous), then the (b, d) rows
// are handed out to the threads one at a time (dynamic: a thread that is descheduled on a shared machine
// does not hold up the phase); each thread scans its row serially over t, vectorised over the N states.
// Orders are walked inside one thread's rows, so the sum over orders needs no atomics and is
// deterministic. The backward recomputes each chunk from its checkpoint; dB and dC (summed over the
// channels of a group) are reduced per phase from the partial tiles of fixed blocks of rows.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <ATen/Parallel.h>

#include "selective_scan/scan_geometry.h"
#include "selective_scan/selective_scan_args.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(_M_X64))
#define ANATO_X86_DISPATCH 1
#define ANATO_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ANATO_X86_DISPATCH 0
#define ANATO_ALWAYS_INLINE inline
#endif

namespace anatokernels {
namespace {

// exp for float that the compiler can vectorise (no libm call): 2^n · p(f), f in [-ln2/2, ln2/2],
// p the degree-6 Taylor polynomial (relative error ~1e-7); 0 below e^-87, inf above e^88.
ANATO_ALWAYS_INLINE float exp_acc(float x) {
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float nf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float f = (xc - nf * 0.693145751953125f) - nf * 1.428606765330187e-6f;
  const float p =
      1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6 + f * (1.0f / 24 + f * (1.0f / 120 + f * (1.0f / 720))))));
  const int32_t bits = (static_cast<int32_t>(nf) + 127) << 23;
  const float result = p * __builtin_bit_cast(float, bits);
  return x < -87.0f ? 0.0f : (x > 88.0f ? HUGE_VALF : result);
}

ANATO_ALWAYS_INLINE double exp_acc(double x) { return std::exp(x); }

// softplus(x) = max(x, 0) + log1p(e), e = exp(-|x|) in (0, 1], with log1p(e) = 2 atanh(s), s = e/(2+e) <= 1/3,
// summed to s^13 (relative error < 2e-8); identity above 20 as in torch.
ANATO_ALWAYS_INLINE float softplus_acc(float x) {
  const float e = exp_acc(x < 0.0f ? x : -x);
  const float s = e / (2.0f + e), s2 = s * s;
  const float series =
      1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9 + s2 * (1.0f / 11 + s2 / 13)))));
  const float value = (x > 0.0f ? x : 0.0f) + 2.0f * s * series;
  return x > 20.0f ? x : value;
}

ANATO_ALWAYS_INLINE double softplus_acc(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

template <typename acc_t>
ANATO_ALWAYS_INLINE acc_t sigmoid_acc(acc_t x) {
  return acc_t(1) / (acc_t(1) + exp_acc(-x));
}

// Σ v[0..W) as a pairwise tree (W a power of two): vectorises, unlike an in-order sum. Overwrites v.
template <int W, typename acc_t>
ANATO_ALWAYS_INLINE acc_t tree_sum(acc_t* v) {
  if constexpr (W == 1) {
    return v[0];
  } else {
#pragma omp simd
    for (int i = 0; i < W / 2; ++i) v[i] += v[i + W / 2];
    return tree_sum<W / 2>(v);
  }
}

// Σ_n a[n]·b[n] over N = NFIX (a power of two) or n_state states.
template <typename acc_t, int NFIX>
ANATO_ALWAYS_INLINE acc_t dot(int64_t n_state, const acc_t* a, const acc_t* b) {
  if constexpr (NFIX > 0) {
    acc_t prod[NFIX];
#pragma omp simd
    for (int n = 0; n < NFIX; ++n) prod[n] = a[n] * b[n];
    return tree_sum<NFIX>(prod);
  } else {
    acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t n = 0; n < n_state; ++n) sum += a[n] * b[n];
    return sum;
  }
}

// ---- inner loops over one chunk of one (b, k, d) row; N = NFIX when NFIX > 0 ----

// out[i] = softplus(x[i]) (or x[i]) and, if sig is given, sig[i] = sigmoid(x[i]), for i < n.
template <typename acc_t>
ANATO_ALWAYS_INLINE void activations_body(int64_t n, const acc_t* x, bool softplus, acc_t* out, acc_t* sig) {
  if (out != nullptr) {
    if (softplus) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) out[i] = softplus_acc(x[i]);
    } else {
      std::copy_n(x, n, out);
    }
  }
  if (sig != nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) sig[i] = sigmoid_acc(x[i]);
  }
}

// h <- scan over `steps` steps; y[t] = Σ_n C[t, n] h_t[n]. dt, u: (steps,); B, C: (steps, N) tiles.
template <typename acc_t, int NFIX>
ANATO_ALWAYS_INLINE void forward_chunk_body(int64_t steps, int64_t n_state, const acc_t* dt, const acc_t* u,
                                            const acc_t* B, const acc_t* C, const acc_t* A, acc_t* h, acc_t* y) {
  if constexpr (NFIX > 0) {  // state and decays in locals, so that they can live in registers
    acc_t hl[NFIX], al[NFIX];
    std::copy_n(h, NFIX, hl);
    std::copy_n(A, NFIX, al);
    for (int64_t t = 0; t < steps; ++t) {
      const acc_t d = dt[t], du = dt[t] * u[t];
      const acc_t* Bt = B + t * NFIX;
#pragma omp simd
      for (int n = 0; n < NFIX; ++n) hl[n] = exp_acc(d * al[n]) * hl[n] + du * Bt[n];
      y[t] = dot<acc_t, NFIX>(NFIX, hl, C + t * NFIX);
    }
    std::copy_n(hl, NFIX, h);
  } else {
    for (int64_t t = 0; t < steps; ++t) {
      const acc_t d = dt[t], du = dt[t] * u[t];
      const acc_t* Bt = B + t * n_state;
#pragma omp simd
      for (int64_t n = 0; n < n_state; ++n) h[n] = exp_acc(d * A[n]) * h[n] + du * Bt[n];
      y[t] = dot<acc_t, 0>(n_state, h, C + t * n_state);
    }
  }
}

// Backward of one chunk. h0: state before the chunk; dh: in, the gradient flowing into the chunk's last
// state from the future (a_{t+1}·dh_{t+1}); out, the same for the state before the chunk. g: gated dout.
// Writes du[t] = δ_t Σ_n dh_t B_t (before the D skip) and ddt[t] = dL/dδ_t (before softplus); adds to
// dA (N,) and to the partial tiles dB, dC (steps, N). If y is given, it receives Σ_n C h_t.
// hs, as: (steps, N) scratch for the recomputed states and decays.
template <typename acc_t, int NFIX>
ANATO_ALWAYS_INLINE void backward_chunk_body(int64_t steps, int64_t n_state, const acc_t* dt, const acc_t* u,
                                             const acc_t* g, const acc_t* B, const acc_t* C, const acc_t* A,
                                             const acc_t* h0, acc_t* dh, acc_t* hs, acc_t* as, acc_t* y,
                                             acc_t* du, acc_t* ddt, acc_t* dA, acc_t* dB, acc_t* dC) {
  const int64_t N = NFIX > 0 ? NFIX : n_state;
  for (int64_t t = 0; t < steps; ++t) {
    const acc_t d = dt[t], dub = dt[t] * u[t];
    const acc_t* prev = t > 0 ? hs + (t - 1) * N : h0;
    const acc_t* Bt = B + t * N;
    acc_t* ht = hs + t * N;
    acc_t* at = as + t * N;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) {
      const acc_t a = exp_acc(d * A[n]);
      at[n] = a;
      ht[n] = a * prev[n] + dub * Bt[n];
    }
    if (y != nullptr) y[t] = dot<acc_t, NFIX>(N, ht, C + t * N);
  }
  // reverse walk: dh carried in a local (registers when N is fixed), dA accumulated locally
  constexpr int kLocal = NFIX > 0 ? NFIX : 1;
  acc_t dh_fixed[kLocal], dA_fixed[kLocal], grad_fixed[kLocal], adh_fixed[kLocal];
  std::vector<acc_t> dynamic(NFIX > 0 ? 0 : 4 * N);
  acc_t* dhl = NFIX > 0 ? dh_fixed : dynamic.data();
  acc_t* dAl = NFIX > 0 ? dA_fixed : dynamic.data() + N;
  acc_t* grad = NFIX > 0 ? grad_fixed : dynamic.data() + 2 * N;  // dL/dh_t
  acc_t* adh = NFIX > 0 ? adh_fixed : dynamic.data() + 3 * N;    // A·a_t·h_{t-1}·dL/dh_t
  std::copy_n(dh, N, dhl);
  std::fill_n(dAl, N, acc_t(0));
  for (int64_t t = steps - 1; t >= 0; --t) {
    const acc_t d = dt[t], gt = g[t], dub = dt[t] * u[t];
    const acc_t* prev = t > 0 ? hs + (t - 1) * N : h0;
    const acc_t* Ct = C + t * N;
    const acc_t* ht = hs + t * N;
    const acc_t* at = as + t * N;
    acc_t* dBt = dB + t * N;
    acc_t* dCt = dC + t * N;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) {
      const acc_t gr = dhl[n] + gt * Ct[n];
      const acc_t ah = at[n] * prev[n];  // a_t h_{t-1}
      grad[n] = gr;
      adh[n] = gr * A[n] * ah;
      dBt[n] += gr * dub;
      dCt[n] += gt * ht[n];
      dAl[n] += gr * d * ah;
      dhl[n] = gr * at[n];
    }
    const acc_t sum_b = dot<acc_t, NFIX>(N, grad, B + t * N);
    acc_t sum_a = 0;
    if constexpr (NFIX > 0) {
      sum_a = tree_sum<NFIX>(adh);
    } else {
      for (int64_t n = 0; n < N; ++n) sum_a += adh[n];
    }
    du[t] = d * sum_b;
    ddt[t] = sum_b * u[t] + sum_a;
  }
  std::copy_n(dhl, N, dh);
  for (int64_t n = 0; n < N; ++n) dA[n] += dAl[n];
}

// One entry point per instruction set; the bodies are inlined into each with that target's ISA.
#define ANATO_DEFINE_CHUNK_KERNELS(SUFFIX, TARGET)                                                              \
  template <typename acc_t>                                                                                    \
  TARGET void activations_##SUFFIX(int64_t n, const acc_t* x, bool softplus, acc_t* out, acc_t* sig) {         \
    activations_body<acc_t>(n, x, softplus, out, sig);                                                         \
  }                                                                                                            \
  template <typename acc_t, int NFIX>                                                                          \
  TARGET void forward_chunk_##SUFFIX(int64_t steps, int64_t n_state, const acc_t* dt, const acc_t* u,          \
                                     const acc_t* B, const acc_t* C, const acc_t* A, acc_t* h, acc_t* y) {     \
    forward_chunk_body<acc_t, NFIX>(steps, n_state, dt, u, B, C, A, h, y);                                     \
  }                                                                                                            \
  template <typename acc_t, int NFIX>                                                                          \
  TARGET void backward_chunk_##SUFFIX(int64_t steps, int64_t n_state, const acc_t* dt, const acc_t* u,         \
                                      const acc_t* g, const acc_t* B, const acc_t* C, const acc_t* A,          \
                                      const acc_t* h0, acc_t* dh, acc_t* hs, acc_t* as, acc_t* y, acc_t* du,   \
                                      acc_t* ddt, acc_t* dA, acc_t* dB, acc_t* dC) {                           \
    backward_chunk_body<acc_t, NFIX>(steps, n_state, dt, u, g, B, C, A, h0, dh, hs, as, y, du, ddt, dA, dB,    \
                                     dC);                                                                      \
  }

ANATO_DEFINE_CHUNK_KERNELS(generic, )
#if ANATO_X86_DISPATCH
ANATO_DEFINE_CHUNK_KERNELS(avx2, __attribute__((target("avx2,fma"))))
ANATO_DEFINE_CHUNK_KERNELS(avx512, __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"))))
#endif

enum class Isa { kGeneric, kAvx2, kAvx512 };

// The widest instruction set this CPU supports; ANATO_CPU_ISA=generic|avx2|avx512 narrows it (tests).
Isa cpu_isa() {
#if ANATO_X86_DISPATCH
  __builtin_cpu_init();
  Isa best = Isa::kGeneric;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::kAvx2;
  if (best == Isa::kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    best = Isa::kAvx512;
  const char* wanted = std::getenv("ANATO_CPU_ISA");
  if (wanted != nullptr) {
    if (std::strcmp(wanted, "generic") == 0) return Isa::kGeneric;
    if (std::strcmp(wanted, "avx2") == 0 && best != Isa::kGeneric) return Isa::kAvx2;
  }
  return best;
#else
  return Isa::kGeneric;
#endif
}

template <typename acc_t>
struct ChunkKernels {
  using Activations = void (*)(int64_t, const acc_t*, bool, acc_t*, acc_t*);
  using Forward = void (*)(int64_t, int64_t, const acc_t*, const acc_t*, const acc_t*, const acc_t*,
                           const acc_t*, acc_t*, acc_t*);
  using Backward = void (*)(int64_t, int64_t, const acc_t*, const acc_t*, const acc_t*, const acc_t*,
                            const acc_t*, const acc_t*, const acc_t*, acc_t*, acc_t*, acc_t*, acc_t*, acc_t*,
                            acc_t*, acc_t*, acc_t*, acc_t*);
  Activations activations;
  Forward forward;
  Backward backward;
};

template <typename acc_t, int NFIX>
ChunkKernels<acc_t> kernels_for(Isa isa) {
#if ANATO_X86_DISPATCH
  if (isa == Isa::kAvx512)
    return {&activations_avx512<acc_t>, &forward_chunk_avx512<acc_t, NFIX>, &backward_chunk_avx512<acc_t, NFIX>};
  if (isa == Isa::kAvx2)
    return {&activations_avx2<acc_t>, &forward_chunk_avx2<acc_t, NFIX>, &backward_chunk_avx2<acc_t, NFIX>};
#endif
  return {&activations_generic<acc_t>, &forward_chunk_generic<acc_t, NFIX>, &backward_chunk_generic<acc_t, NFIX>};
}

// Fixed-N instantiations for the common state sizes; any other N runs the generic loop.
template <typename acc_t>
ChunkKernels<acc_t> select_kernels(int64_t n_state) {
  const Isa isa = cpu_isa();
  if (n_state == 16) return kernels_for<acc_t, 16>(isa);
  if (n_state == 8) return kernels_for<acc_t, 8>(isa);
  return kernels_for<acc_t, 0>(isa);
}

// ---- problem description shared by forward and backward ----

struct Problem {
  int64_t batch, orders, dim, length, n_state, groups, per_group;
  int64_t chunk, n_chunks;      // checkpoint every `chunk` steps
  int64_t phase_chunks, n_phases;  // threads synchronise once per phase of `phase_chunks` chunks
  bool softplus, has_d, has_z, has_bias;
};

Problem describe(const at::Tensor& u, const at::Tensor& A, const at::Tensor& B, bool softplus, int64_t chunk,
                 bool has_d, bool has_z, bool has_bias) {
  Problem p{};
  p.batch = u.size(0);
  p.orders = u.size(1);
  p.dim = u.size(2);
  p.length = u.size(3);
  p.n_state = A.size(2);
  p.groups = B.size(2);
  p.per_group = p.dim / p.groups;
  p.chunk = chunk;
  p.n_chunks = (p.length + chunk - 1) / chunk;
  // a phase's B and C tiles hold ~64K values: they stay in cache while every channel scans them
  p.phase_chunks = std::max<int64_t>(1, (int64_t{1} << 16) / (p.batch * p.groups * p.n_state * chunk));
  p.n_phases = (p.n_chunks + p.phase_chunks - 1) / p.phase_chunks;
  p.softplus = softplus;
  p.has_d = has_d;
  p.has_z = has_z;
  p.has_bias = has_bias;
  return p;
}

// Steps [start, stop) of phase `ph`.
struct Phase {
  int64_t first_chunk, end_chunk, start, stop;
  Phase(const Problem& p, int64_t ph)
      : first_chunk(ph * p.phase_chunks),
        end_chunk(std::min(p.n_chunks, (ph + 1) * p.phase_chunks)),
        start(first_chunk * p.chunk),
        stop(std::min(p.length, end_chunk * p.chunk)) {}
  int64_t steps() const { return stop - start; }
};

// Strided views of the activation tensors (element strides).
template <typename scalar_t>
struct Strided {
  const scalar_t* ptr;
  int64_t s[5];
  explicit Strided(const at::Tensor& t) : ptr(t.defined() ? t.const_data_ptr<scalar_t>() : nullptr), s{} {
    for (int64_t i = 0; t.defined() && i < t.dim(); ++i) s[i] = t.stride(i);
  }
};

// Per-thread buffers for one chunk of one row.
template <typename acc_t>
struct RowScratch {
  std::vector<int64_t> pos;  // native positions of the whole phase
  std::vector<acc_t> u, x, dt, sig_x, y, g, gated, z, sig_z, du, ddt, hs, as;
  RowScratch(const Problem& p)
      : pos(p.phase_chunks * p.chunk), u(p.chunk), x(p.chunk), dt(p.chunk), sig_x(p.chunk), y(p.chunk),
        g(p.chunk), gated(p.chunk), z(p.chunk), sig_z(p.chunk), du(p.chunk), ddt(p.chunk), hs(p.chunk * p.n_state),
        as(p.chunk * p.n_state) {}
};

// The (steps, N) tiles of B and C of one phase of order k: tiles[((b*G + g)*S + s)*N + n], S = phase steps.
// A work-shared loop over blocks of steps (each thread writes whole cache lines): call from every thread.
template <typename scalar_t, typename acc_t>
void gather_tiles(const Problem& p, const Strided<scalar_t>& B, const Strided<scalar_t>& C, int64_t k,
                  const int64_t* pos, int64_t steps, acc_t* tile_b, acc_t* tile_c) {
  constexpr int64_t kStepBlock = 64;
  const int64_t S = p.phase_chunks * p.chunk, N = p.n_state;
#pragma omp for schedule(static)
  for (int64_t s0 = 0; s0 < steps; s0 += kStepBlock) {
    const int64_t s1 = std::min(steps, s0 + kStepBlock);
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t g = 0; g < p.groups; ++g) {
        acc_t* dst_b = tile_b + (b * p.groups + g) * S * N;
        acc_t* dst_c = tile_c + (b * p.groups + g) * S * N;
        for (int64_t n = 0; n < N; ++n) {
          const scalar_t* src_b = B.ptr + b * B.s[0] + k * B.s[1] + g * B.s[2] + n * B.s[3];
          const scalar_t* src_c = C.ptr + b * C.s[0] + k * C.s[1] + g * C.s[2] + n * C.s[3];
          for (int64_t s = s0; s < s1; ++s) {
            dst_b[s * N + n] = static_cast<acc_t>(src_b[pos[s] * B.s[4]]);
            dst_c[s * N + n] = static_cast<acc_t>(src_c[pos[s] * C.s[4]]);
          }
        }
      }
    }
  }
}

// u, δ after bias (x, the softplus input), δ (dt) and optionally sigmoid(x) at `steps` positions of one row.
template <typename scalar_t, typename acc_t>
void load_row(const Problem& p, const ChunkKernels<acc_t>& kernels, const Strided<scalar_t>& u,
              const Strided<scalar_t>& delta, const acc_t* bias, int64_t b, int64_t k, int64_t d, const int64_t* pos,
              int64_t steps, RowScratch<acc_t>& row, bool want_sigmoid) {
  const scalar_t* u_row = u.ptr + b * u.s[0] + k * u.s[1] + d * u.s[2];
  const scalar_t* d_row = delta.ptr + b * delta.s[0] + k * delta.s[1] + d * delta.s[2];
  const acc_t bias_d = p.has_bias ? bias[k * p.dim + d] : acc_t(0);
  for (int64_t t = 0; t < steps; ++t) {
    row.u[t] = static_cast<acc_t>(u_row[pos[t] * u.s[3]]);
    row.x[t] = static_cast<acc_t>(d_row[pos[t] * delta.s[3]]) + bias_d;
  }
  kernels.activations(steps, row.x.data(), p.softplus, row.dt.data(), want_sigmoid ? row.sig_x.data() : nullptr);
}

void positions(const ScanOrder& order, int64_t start, int64_t steps, int64_t* pos) {
  for (int64_t t = 0; t < steps; ++t) pos[t] = order.position(start + t);
}

template <typename scalar_t, typename acc_t>
void forward_impl(const Problem& p, const at::Tensor& u_t, const at::Tensor& delta_t, const acc_t* A,
                  const at::Tensor& B_t, const at::Tensor& C_t, const acc_t* Dv, const at::Tensor& z_t,
                  const acc_t* bias, const int64_t* geometry, acc_t* out, acc_t* last, acc_t* ckpt) {
  const Strided<scalar_t> u(u_t), delta(delta_t), B(B_t), C(C_t), z(z_t);
  const ChunkKernels<acc_t> kernels = select_kernels<acc_t>(p.n_state);
  const int64_t T = p.chunk, N = p.n_state, rows = p.batch * p.dim, S = p.phase_chunks * T;
  std::vector<acc_t> tile_b(p.batch * p.groups * S * N), tile_c(tile_b.size());
#pragma omp parallel num_threads(at::get_num_threads())
  {
    RowScratch<acc_t> row(p);
    for (int64_t k = 0; k < p.orders; ++k) {
      const ScanOrder order = ScanOrder::from_row(geometry + 7 * k, p.length);
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        std::fill_n(last + (((r / p.dim) * p.orders + k) * p.dim + r % p.dim) * N, N, acc_t(0));
      }
      for (int64_t ph = 0; ph < p.n_phases; ++ph) {
        const Phase phase(p, ph);
        positions(order, phase.start, phase.steps(), row.pos.data());
        gather_tiles(p, B, C, k, row.pos.data(), phase.steps(), tile_b.data(), tile_c.data());
#pragma omp for schedule(dynamic, 1)
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t b = r / p.dim, d = r % p.dim, grp = d / p.per_group;
          const int64_t bkd = (b * p.orders + k) * p.dim + d;
          const acc_t skip = p.has_d ? Dv[k * p.dim + d] : acc_t(0);
          acc_t* h = last + bkd * N;
          acc_t* o = out + r * p.length;
          for (int64_t c = phase.first_chunk; c < phase.end_chunk; ++c) {
            const int64_t offset = c * T - phase.start, steps = std::min(T, p.length - c * T);
            const int64_t* pos = row.pos.data() + offset;
            std::copy_n(h, N, ckpt + (bkd * p.n_chunks + c) * N);
            load_row(p, kernels, u, delta, bias, b, k, d, pos, steps, row, false);
            const int64_t tile = ((b * p.groups + grp) * S + offset) * N;
            kernels.forward(steps, N, row.dt.data(), row.u.data(), tile_b.data() + tile, tile_c.data() + tile,
                            A + (k * p.dim + d) * N, h, row.y.data());
            for (int64_t t = 0; t < steps; ++t) {
              const acc_t v = row.y[t] + skip * row.u[t];
              o[pos[t]] = k == 0 ? v : o[pos[t]] + v;
            }
          }
        }
      }
    }
    if (p.has_z) {  // out *= silu(z), in native order
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const scalar_t* z_row = z.ptr + (r / p.dim) * z.s[0] + (r % p.dim) * z.s[1];
        acc_t* o = out + r * p.length;
        for (int64_t l0 = 0; l0 < p.length; l0 += T) {
          const int64_t steps = std::min(T, p.length - l0);
          for (int64_t t = 0; t < steps; ++t) row.z[t] = static_cast<acc_t>(z_row[(l0 + t) * z.s[2]]);
          kernels.activations(steps, row.z.data(), false, nullptr, row.sig_z.data());
          for (int64_t t = 0; t < steps; ++t) o[l0 + t] *= row.z[t] * row.sig_z[t];
        }
      }
    }
  }
}

template <typename scalar_t, typename acc_t>
void backward_impl(const Problem& p, const at::Tensor& dout_t, const acc_t* dlast, const at::Tensor& u_t,
                   const at::Tensor& delta_t, const acc_t* A, const at::Tensor& B_t, const at::Tensor& C_t,
                   const acc_t* Dv, const at::Tensor& z_t, const acc_t* bias, const acc_t* ckpt,
                   const int64_t* geometry, scalar_t* du_out, scalar_t* ddelta_out, acc_t* dA_out, acc_t* dB_out,
                   acc_t* dC_out, acc_t* dD_out, acc_t* dz_out, acc_t* dbias_out) {
  const Strided<scalar_t> u(u_t), delta(delta_t), B(B_t), C(C_t), dout(dout_t), z(z_t);
  const ChunkKernels<acc_t> kernels = select_kernels<acc_t>(p.n_state);
  const int64_t T = p.chunk, N = p.n_state, rows = p.batch * p.dim, L = p.length, S = p.phase_chunks * T;
  const int64_t tile_size = p.batch * p.groups * S * N;
  const int n_threads = at::get_num_threads();
  // The rows are cut into fixed blocks, each with its own partial dB, dC tiles of a phase, summed in a
  // fixed order: the result does not depend on which thread ran which block.
  const int64_t n_blocks = std::min<int64_t>(rows, 4 * static_cast<int64_t>(n_threads));
  std::vector<acc_t> tile_b(tile_size), tile_c(tile_size);
  std::vector<acc_t> part_b(static_cast<size_t>(n_blocks) * tile_size), part_c(part_b.size());
  std::vector<acc_t> dh(rows * N), dA(rows * N), dD(rows), dbias(rows);
#pragma omp parallel num_threads(n_threads)
  {
    RowScratch<acc_t> row(p);
    for (int64_t k = 0; k < p.orders; ++k) {
      const ScanOrder order = ScanOrder::from_row(geometry + 7 * k, L);
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        std::copy_n(dlast + (((r / p.dim) * p.orders + k) * p.dim + r % p.dim) * N, N, dh.data() + r * N);
        std::fill_n(dA.data() + r * N, N, acc_t(0));
        dD[r] = 0;
        dbias[r] = 0;
      }
      for (int64_t ph = p.n_phases - 1; ph >= 0; --ph) {
        const Phase phase(p, ph);
        positions(order, phase.start, phase.steps(), row.pos.data());
        gather_tiles(p, B, C, k, row.pos.data(), phase.steps(), tile_b.data(), tile_c.data());
#pragma omp for schedule(dynamic, 1)
        for (int64_t blk = 0; blk < n_blocks; ++blk) {
          acc_t* block_b = part_b.data() + static_cast<size_t>(blk) * tile_size;
          acc_t* block_c = part_c.data() + static_cast<size_t>(blk) * tile_size;
          std::fill_n(block_b, tile_size, acc_t(0));
          std::fill_n(block_c, tile_size, acc_t(0));
          for (int64_t r = blk * rows / n_blocks; r < (blk + 1) * rows / n_blocks; ++r) {
            const int64_t b = r / p.dim, d = r % p.dim, grp = d / p.per_group;
            const int64_t bkd = (b * p.orders + k) * p.dim + d;
            const acc_t skip = p.has_d ? Dv[k * p.dim + d] : acc_t(0);
            const scalar_t* dout_row = dout.ptr + b * dout.s[0] + d * dout.s[1];
            const scalar_t* z_row = p.has_z ? z.ptr + b * z.s[0] + d * z.s[1] : nullptr;
            scalar_t* du_row = du_out + bkd * L;
            scalar_t* ddelta_row = ddelta_out + bkd * L;
            acc_t* dz_row = p.has_z ? dz_out + r * L : nullptr;
            acc_t sum_d = 0, sum_bias = 0;
            for (int64_t c = phase.end_chunk - 1; c >= phase.first_chunk; --c) {
              const int64_t offset = c * T - phase.start, steps = std::min(T, L - c * T);
              const int64_t* pos = row.pos.data() + offset;
              load_row(p, kernels, u, delta, bias, b, k, d, pos, steps, row, p.softplus);
              for (int64_t t = 0; t < steps; ++t) row.g[t] = static_cast<acc_t>(dout_row[pos[t] * dout.s[2]]);
              acc_t* gated = row.g.data();  // dL/dy_k: dout, times silu(z) when gated
              if (p.has_z) {
                for (int64_t t = 0; t < steps; ++t) row.z[t] = static_cast<acc_t>(z_row[pos[t] * z.s[2]]);
                kernels.activations(steps, row.z.data(), false, nullptr, row.sig_z.data());
                for (int64_t t = 0; t < steps; ++t) row.gated[t] = row.g[t] * row.z[t] * row.sig_z[t];
                gated = row.gated.data();
              }
              const int64_t tile = ((b * p.groups + grp) * S + offset) * N;
              kernels.backward(steps, N, row.dt.data(), row.u.data(), gated, tile_b.data() + tile,
                               tile_c.data() + tile, A + (k * p.dim + d) * N, ckpt + (bkd * p.n_chunks + c) * N,
                               dh.data() + r * N, row.hs.data(), row.as.data(), p.has_z ? row.y.data() : nullptr,
                               row.du.data(), row.ddt.data(), dA.data() + r * N, block_b + tile, block_c + tile);
              for (int64_t t = 0; t < steps; ++t) {
                du_row[pos[t]] = static_cast<scalar_t>(row.du[t] + skip * gated[t]);
                sum_d += gated[t] * row.u[t];
                const acc_t grad_x =
                    p.softplus ? (row.x[t] > acc_t(20) ? row.ddt[t] : row.ddt[t] * row.sig_x[t]) : row.ddt[t];
                ddelta_row[pos[t]] = static_cast<scalar_t>(grad_x);
                sum_bias += grad_x;
                if (p.has_z) {
                  const acc_t sig = row.sig_z[t];
                  const acc_t dsilu = sig * (acc_t(1) + row.z[t] * (acc_t(1) - sig));
                  const acc_t v = row.g[t] * (row.y[t] + skip * row.u[t]) * dsilu;
                  dz_row[pos[t]] = k == 0 ? v : dz_row[pos[t]] + v;
                }
              }
            }
            dD[r] += sum_d;
            dbias[r] += sum_bias;
          }
        }
        // dB, dC of this phase: the sum of the blocks' partial tiles, written at the phase's positions
        const int64_t tile_rows = p.batch * p.groups * N;
#pragma omp for schedule(static)
        for (int64_t tr = 0; tr < tile_rows; ++tr) {
          const int64_t n = tr % N, bg = tr / N;
          const int64_t dst = (((bg / p.groups) * p.orders + k) * p.groups + bg % p.groups) * N * L + n * L;
          for (int64_t s = 0; s < phase.steps(); ++s) {
            acc_t sum_b = 0, sum_c = 0;
            for (int64_t blk = 0; blk < n_blocks; ++blk) {
              const size_t at = static_cast<size_t>(blk) * tile_size + (bg * S + s) * N + n;
              sum_b += part_b[at];
              sum_c += part_c[at];
            }
            dB_out[dst + row.pos[s]] = sum_b;
            dC_out[dst + row.pos[s]] = sum_c;
          }
        }
      }
      // dA, dD, dbias of order k: summed over the batch in a fixed order
#pragma omp for schedule(static)
      for (int64_t d = 0; d < p.dim; ++d) {
        acc_t* dA_row = dA_out + (k * p.dim + d) * N;
        std::fill_n(dA_row, N, acc_t(0));
        acc_t sum_d = 0, sum_bias = 0;
        for (int64_t b = 0; b < p.batch; ++b) {
          const int64_t r = b * p.dim + d;
          for (int64_t n = 0; n < N; ++n) dA_row[n] += dA[r * N + n];
          sum_d += dD[r];
          sum_bias += dbias[r];
        }
        if (p.has_d) dD_out[k * p.dim + d] = sum_d;
        if (p.has_bias) dbias_out[k * p.dim + d] = sum_bias;
      }
    }
  }
}

// ---- argument checks and dtype dispatch ----

template <typename acc_t>
const acc_t* optional_ptr(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<acc_t>() : nullptr;
}

void selective_scan3d_fwd_cpu(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                              const at::Tensor& B, const at::Tensor& C, const c10::optional<at::Tensor>& D,
                              const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& delta_bias,
                              const at::Tensor& geometry, bool softplus, int64_t chunk, at::Tensor& out,
                              at::Tensor& last, at::Tensor& checkpoints) {
  check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, geometry, chunk, at::kCPU);
  check_scan_forward_buffers(u, A, chunk, out, last, checkpoints);
  const Problem p = describe(u, A, B, softplus, chunk, D.has_value(), z.has_value(), delta_bias.has_value());
  const at::ScalarType acc = A.scalar_type();
  const at::Tensor z_t = z.has_value() ? *z : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, u.scalar_type(), "selective_scan3d_fwd_cpu", [&] {
    if (acc == at::kDouble) {
      forward_impl<scalar_t, double>(p, u, delta, A.const_data_ptr<double>(), B, C, optional_ptr<double>(D), z_t,
                                     optional_ptr<double>(delta_bias), geometry.const_data_ptr<int64_t>(),
                                     out.mutable_data_ptr<double>(), last.mutable_data_ptr<double>(),
                                     checkpoints.mutable_data_ptr<double>());
    } else {
      forward_impl<scalar_t, float>(p, u, delta, A.const_data_ptr<float>(), B, C, optional_ptr<float>(D), z_t,
                                    optional_ptr<float>(delta_bias), geometry.const_data_ptr<int64_t>(),
                                    out.mutable_data_ptr<float>(), last.mutable_data_ptr<float>(),
                                    checkpoints.mutable_data_ptr<float>());
    }
  });
}

void selective_scan3d_bwd_cpu(const at::Tensor& dout, const at::Tensor& dlast, const at::Tensor& u,
                              const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                              const at::Tensor& C, const c10::optional<at::Tensor>& D,
                              const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& delta_bias,
                              const at::Tensor& checkpoints, const at::Tensor& geometry, bool softplus,
                              int64_t chunk, at::Tensor& du, at::Tensor& ddelta, at::Tensor& dA, at::Tensor& dB,
                              at::Tensor& dC, at::Tensor& dD, at::Tensor& dz, at::Tensor& dbias) {
  check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, geometry, chunk, at::kCPU);
  check_scan_backward_buffers(dout, dlast, u, A, B, D.has_value(), z.has_value(), delta_bias.has_value(), checkpoints,
                              chunk, du, ddelta, dA, dB, dC, dD, dz, dbias);
  const Problem p = describe(u, A, B, softplus, chunk, D.has_value(), z.has_value(), delta_bias.has_value());
  const at::ScalarType acc = A.scalar_type();
  const at::Tensor z_t = z.has_value() ? *z : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, u.scalar_type(), "selective_scan3d_bwd_cpu", [&] {
    auto run = [&](auto acc_zero) {
      using acc_t = decltype(acc_zero);
      backward_impl<scalar_t, acc_t>(
          p, dout, dlast.const_data_ptr<acc_t>(), u, delta, A.const_data_ptr<acc_t>(), B, C, optional_ptr<acc_t>(D),
          z_t, optional_ptr<acc_t>(delta_bias), checkpoints.const_data_ptr<acc_t>(),
          geometry.const_data_ptr<int64_t>(), du.mutable_data_ptr<scalar_t>(), ddelta.mutable_data_ptr<scalar_t>(),
          dA.mutable_data_ptr<acc_t>(), dB.mutable_data_ptr<acc_t>(), dC.mutable_data_ptr<acc_t>(),
          p.has_d ? dD.mutable_data_ptr<acc_t>() : nullptr, p.has_z ? dz.mutable_data_ptr<acc_t>() : nullptr,
          p.has_bias ? dbias.mutable_data_ptr<acc_t>() : nullptr);
    };
    if (acc == at::kDouble) {
      run(double(0));
    } else {
      run(float(0));
    }
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(anatokernels, m) {
  m.def(
      "selective_scan3d_fwd_cpu(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, Tensor geometry, bool softplus, int chunk, Tensor(a!) out, Tensor(b!) last, "
      "Tensor(c!) checkpoints) -> ()",
      &selective_scan3d_fwd_cpu);
  m.def(
      "selective_scan3d_bwd_cpu(Tensor dout, Tensor dlast, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, "
      "Tensor? D, Tensor? z, Tensor? delta_bias, Tensor checkpoints, Tensor geometry, bool softplus, int chunk, "
      "Tensor(a!) du, Tensor(b!) ddelta, Tensor(c!) dA, Tensor(d!) dB, Tensor(e!) dC, Tensor(f!) dD, "
      "Tensor(g!) dz, Tensor(h!) dbias) -> ()",
      &selective_scan3d_bwd_cpu);
}

}  // namespace anatokernels
