// ATen-side argument checks for the order_conv1d entry points (CPU and CUDA bindings).
#pragma once
#include <optional>

#include "common.h"
#include "order_conv/order_conv.h"

namespace anatokernels {

// x (B, K, D, L) any strides; weight (K, D, W) contiguous, 2 <= W <= 4; bias (K, D) contiguous or none;
// geometry (K, 7) int64 contiguous; every (B, K, D, L) buffer in `dense` contiguous with x's dtype.
inline OrderConvShape order_conv_shape(const at::Tensor& x, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias, const at::Tensor& geometry,
                                       std::initializer_list<const at::Tensor*> dense, c10::DeviceType device) {
  ANATO_CHECK_DEVICE(x, device);
  ANATO_CHECK_DEVICE(weight, device);
  ANATO_CHECK_DEVICE(geometry, device);
  ANATO_CHECK_DIM(x, 4);
  ANATO_CHECK_DIM(weight, 3);
  ANATO_CHECK_DIM(geometry, 2);
  ANATO_CHECK_CONTIGUOUS(weight);
  ANATO_CHECK_CONTIGUOUS(geometry);
  ANATO_CHECK_DTYPE(geometry, at::kLong);
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "weight must have x's dtype");
  const int64_t K = x.size(1), D = x.size(2), L = x.size(3), W = weight.size(2);
  TORCH_CHECK(weight.size(0) == K && weight.size(1) == D, "weight must be (K, D, W)");
  TORCH_CHECK(W >= 2 && W <= kMaxConvWidth, "conv width W must be in [2, 4], got ", W);
  TORCH_CHECK(geometry.size(0) == K && geometry.size(1) == kGeometryInts, "geometry must be (K, 7)");
  if (bias.has_value()) {
    ANATO_CHECK_DEVICE(*bias, device);
    ANATO_CHECK_CONTIGUOUS(*bias);
    TORCH_CHECK(bias->scalar_type() == x.scalar_type(), "bias must have x's dtype");
    TORCH_CHECK(bias->dim() == 2 && bias->size(0) == K && bias->size(1) == D, "bias must be (K, D)");
  }
  for (const at::Tensor* t : dense) {
    ANATO_CHECK_DEVICE(*t, device);
    TORCH_CHECK(t->is_contiguous() && t->sizes() == x.sizes() && t->scalar_type() == x.scalar_type(),
                "every (B, K, D, L) buffer must be contiguous with x's shape and dtype");
  }
  OrderConvShape s{};
  s.batch = x.size(0);
  s.orders = K;
  s.channels = D;
  s.length = L;
  s.width = W;
  for (int d = 0; d < 4; ++d) s.x_stride[d] = x.stride(d);
  return s;
}

// dweight (K, D, W) and dbias (K, D): contiguous, float32 (float64 for float64 inputs).
inline void check_weight_grads(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& dweight,
                               const at::Tensor& dbias, c10::DeviceType device) {
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  ANATO_CHECK_DEVICE(dweight, device);
  ANATO_CHECK_DEVICE(dbias, device);
  ANATO_CHECK_DTYPE(dweight, acc);
  ANATO_CHECK_DTYPE(dbias, acc);
  ANATO_CHECK_CONTIGUOUS(dweight);
  ANATO_CHECK_CONTIGUOUS(dbias);
  TORCH_CHECK(dweight.sizes() == weight.sizes(), "dweight must be (K, D, W)");
  TORCH_CHECK(dbias.dim() == 2 && dbias.size(0) == weight.size(0) && dbias.size(1) == weight.size(1),
              "dbias must be (K, D)");
}

}  // namespace anatokernels
