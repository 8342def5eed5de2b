// Problem description and row/tile helpers shared by the forward and backward of the C++/OpenMP
// selective scan (included by selective_scan_cpu.cpp only, after selective_scan_cpu_math.h).
#pragma once

#include <vector>

#include <ATen/ATen.h>

#include "selective_scan/scan_geometry.h"
#include "selective_scan/selective_scan_args.h"
#include "selective_scan/selective_scan_cpu_math.h"

namespace anatokernels {
namespace {

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

}  // namespace
}  // namespace anatokernels
