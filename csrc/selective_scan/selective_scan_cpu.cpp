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
#include "selective_scan/selective_scan_cpu_math.h"
#include "selective_scan/selective_scan_cpu_rows.h"

namespace anatokernels {
namespace {

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
