// ATen-side argument checks of the selective-scan entry points (CPU and CUDA bindings share them).
// Layouts: u, delta (Bt, K, Dm, L); B, C (Bt, K, G, N, L); z, dout (Bt, Dm, L), any strides, in the
// activation dtype. A (K, Dm, N), D and delta_bias (K, Dm), geometry (K, 7) int64 and every output
// buffer except du and ddelta are contiguous, in the accumulation dtype (A's: float32 or float64).
#pragma once
#include "common.h"

namespace anatokernels {

inline void check_scan_buffer(const at::Tensor& t, at::IntArrayRef sizes, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(t.sizes() == sizes, name, " has shape ", t.sizes(), ", expected ", sizes);
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

inline void check_scan_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                              const at::Tensor& C, const c10::optional<at::Tensor>& D,
                              const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& bias,
                              const at::Tensor& geometry, int64_t chunk, c10::DeviceType device) {
  for (const at::Tensor* t : {&u, &delta, &A, &B, &C, &geometry}) ANATO_CHECK_DEVICE(*t, device);
  ANATO_CHECK_DIM(u, 4);
  ANATO_CHECK_DIM(A, 3);
  ANATO_CHECK_DIM(B, 5);
  TORCH_CHECK(delta.sizes() == u.sizes(), "delta must have u's shape (Bt, K, Dm, L)");
  TORCH_CHECK(B.sizes() == C.sizes(), "B and C must have the same shape (Bt, K, G, N, L)");
  TORCH_CHECK(A.size(0) == u.size(1) && A.size(1) == u.size(2), "A must be (K, Dm, N)");
  TORCH_CHECK(B.size(0) == u.size(0) && B.size(1) == u.size(1) && B.size(3) == A.size(2) && B.size(4) == u.size(3),
              "B, C must be (Bt, K, G, N, L)");
  TORCH_CHECK(B.size(2) > 0 && u.size(2) % B.size(2) == 0, "the number of groups G must divide Dm");
  TORCH_CHECK(chunk > 0, "chunk must be positive");
  for (const at::Tensor* t : {&delta, &B, &C}) ANATO_CHECK_DTYPE(*t, u.scalar_type());
  TORCH_CHECK(A.scalar_type() == at::kFloat || A.scalar_type() == at::kDouble,
              "A must be float32 or float64 (the accumulation dtype)");
  ANATO_CHECK_CONTIGUOUS(A);
  ANATO_CHECK_DTYPE(geometry, at::kLong);
  ANATO_CHECK_CONTIGUOUS(geometry);
  TORCH_CHECK(geometry.dim() == 2 && geometry.size(0) == u.size(1) && geometry.size(1) == 7,
              "geometry must be (K, 7)");
  for (const c10::optional<at::Tensor>* t : {&D, &bias}) {
    if (t->has_value()) {
      ANATO_CHECK_DEVICE(**t, device);
      check_scan_buffer(**t, {u.size(1), u.size(2)}, A.scalar_type(), "D / delta_bias");
    }
  }
  if (z.has_value()) {
    ANATO_CHECK_DEVICE(*z, device);
    TORCH_CHECK(z->sizes() == at::IntArrayRef({u.size(0), u.size(2), u.size(3)}), "z must be (Bt, Dm, L)");
    ANATO_CHECK_DTYPE(*z, u.scalar_type());
  }
}

inline void check_scan_forward_buffers(const at::Tensor& u, const at::Tensor& A, int64_t chunk, const at::Tensor& out,
                                       const at::Tensor& last, const at::Tensor& checkpoints) {
  const int64_t batch = u.size(0), orders = u.size(1), dim = u.size(2), length = u.size(3), n = A.size(2);
  const at::ScalarType acc = A.scalar_type();
  check_scan_buffer(out, {batch, dim, length}, acc, "out");
  check_scan_buffer(last, {batch, orders, dim, n}, acc, "last");
  check_scan_buffer(checkpoints, {batch, orders, dim, (length + chunk - 1) / chunk, n}, acc, "checkpoints");
}

inline void check_scan_backward_buffers(const at::Tensor& dout, const at::Tensor& dlast, const at::Tensor& u,
                                        const at::Tensor& A, const at::Tensor& B, bool has_d, bool has_z,
                                        bool has_bias, const at::Tensor& checkpoints, int64_t chunk,
                                        const at::Tensor& du, const at::Tensor& ddelta, const at::Tensor& dA,
                                        const at::Tensor& dB, const at::Tensor& dC, const at::Tensor& dD,
                                        const at::Tensor& dz, const at::Tensor& dbias) {
  const int64_t batch = u.size(0), orders = u.size(1), dim = u.size(2), length = u.size(3), n = A.size(2);
  const at::ScalarType acc = A.scalar_type();
  ANATO_CHECK_DEVICE(dout, u.device().type());
  TORCH_CHECK(dout.sizes() == at::IntArrayRef({batch, dim, length}), "dout must be (Bt, Dm, L)");
  ANATO_CHECK_DTYPE(dout, u.scalar_type());
  check_scan_buffer(dlast, {batch, orders, dim, n}, acc, "dlast");
  check_scan_buffer(checkpoints, {batch, orders, dim, (length + chunk - 1) / chunk, n}, acc, "checkpoints");
  check_scan_buffer(du, u.sizes(), u.scalar_type(), "du");
  check_scan_buffer(ddelta, u.sizes(), u.scalar_type(), "ddelta");
  check_scan_buffer(dA, A.sizes(), acc, "dA");
  check_scan_buffer(dB, B.sizes(), acc, "dB");
  check_scan_buffer(dC, B.sizes(), acc, "dC");
  if (has_d) check_scan_buffer(dD, {orders, dim}, acc, "dD");
  if (has_bias) check_scan_buffer(dbias, {orders, dim}, acc, "dbias");
  if (has_z) check_scan_buffer(dz, {batch, dim, length}, acc, "dz");
}

}  // namespace anatokernels
