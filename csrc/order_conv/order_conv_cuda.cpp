// ATen binding of the CUDA order_conv1d kernels (compiled only in CUDA builds). Registered as
//   anatokernels::order_conv1d_fwd_cuda(x, weight, bias, geometry, silu, out)
//   anatokernels::order_conv1d_bwd_cuda(grad, x, weight, bias, geometry, silu, dx, dweight, dbias)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda_dtype.h"
#include "order_conv/order_conv_args.h"
#include "order_conv/order_conv_cuda.h"

namespace anatokernels {
namespace {

template <typename T>
const T* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? reinterpret_cast<const T*>(t->const_data_ptr()) : nullptr;
}

void order_conv1d_fwd_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           const at::Tensor& geometry, bool silu, at::Tensor& out) {
  const OrderConvShape s = order_conv_shape(x, weight, bias, geometry, {&out}, at::kCUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  dispatch_cuda_dtype(x.scalar_type(), "order_conv1d", [&](auto tag) {
    using T = decltype(tag);
    const cudaError_t err = order_conv1d_forward_cuda<T>(
        reinterpret_cast<const T*>(x.const_data_ptr()), reinterpret_cast<const T*>(weight.const_data_ptr()),
        ptr_or_null<T>(bias), geometry.const_data_ptr<int64_t>(), reinterpret_cast<T*>(out.mutable_data_ptr()), s,
        silu, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "order_conv1d_fwd_cuda: ", cudaGetErrorString(err));
  });
}

void order_conv1d_bwd_cuda(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, const at::Tensor& geometry, bool silu,
                           at::Tensor& dx, at::Tensor& dweight, at::Tensor& dbias) {
  const OrderConvShape s = order_conv_shape(x, weight, bias, geometry, {&grad, &dx}, at::kCUDA);
  check_weight_grads(x, weight, dweight, dbias, at::kCUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor partial = at::empty({s.orders, s.channels, order_conv1d_backward_parts(s), s.width + 1},
                                 dweight.options());
  dispatch_cuda_dtype(x.scalar_type(), "order_conv1d", [&](auto tag) {
    using T = decltype(tag);
    using A = typename OrderConvAcc<T>::type;
    const cudaError_t err = order_conv1d_backward_cuda<T>(
        reinterpret_cast<const T*>(grad.const_data_ptr()), reinterpret_cast<const T*>(x.const_data_ptr()),
        reinterpret_cast<const T*>(weight.const_data_ptr()), ptr_or_null<T>(bias),
        geometry.const_data_ptr<int64_t>(), reinterpret_cast<T*>(dx.mutable_data_ptr()),
        partial.mutable_data_ptr<A>(), s, silu, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "order_conv1d_bwd_cuda: ", cudaGetErrorString(err));
  });
  const at::Tensor sums = partial.sum(2);  // (K, D, W + 1)
  dweight.copy_(sums.narrow(2, 0, s.width));
  dbias.copy_(sums.select(2, s.width));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(anatokernels, m) {
  m.def("order_conv1d_fwd_cuda(Tensor x, Tensor weight, Tensor? bias, Tensor geometry, bool silu, "
        "Tensor(a!) out) -> ()",
        &order_conv1d_fwd_cuda);
  m.def("order_conv1d_bwd_cuda(Tensor grad, Tensor x, Tensor weight, Tensor? bias, Tensor geometry, bool silu, "
        "Tensor(a!) dx, Tensor(b!) dweight, Tensor(c!) dbias) -> ()",
        &order_conv1d_bwd_cuda);
}

}  // namespace anatokernels
