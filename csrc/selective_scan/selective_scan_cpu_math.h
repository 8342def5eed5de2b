// Per-row arithmetic of the C++/OpenMP selective scan (included by selective_scan_cpu.cpp only):
// vectorisable exp/softplus, the forward and backward chunk bodies, and their AVX-512/AVX2/generic
// instantiations picked at run time.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

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

}  // namespace
}  // namespace anatokernels
