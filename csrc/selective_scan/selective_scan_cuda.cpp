// ATen binding of the CUDA selective scan (compiled only in CUDA builds). Same schemas as the CPU ops:
//   anatokernels::selective_scan3d_fwd_cuda(u, delta, A, B, C, D?, z?, delta_bias?, geometry, softplus, chunk,
//                                           out, last, checkpoints)
//   anatokernels::selective_scan3d_bwd_cuda(dout, dlast, u, delta, A, B, C, D?, z?, delta_bias?, checkpoints,
//                                           geometry, softplus, chunk, du, ddelta, dA, dB, dC, dD, dz, dbias)
// chunk must be kScanCudaChunk. Buffers the kernels add into are zeroed here; dA, dD and dbias come
// back from the kernels per sample and are summed over the batch here.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "selective_scan/selective_scan_args.h"
#include "selective_scan/selective_scan_cuda.h"

namespace anatokernels {
namespace {

// Calls fn(T{}, acc_t{}) for the activation dtype. float64 parameters with lower-precision activations
// are rejected: the CUDA kernels accumulate in double only for double activations.
template <typename Fn>
void dispatch_scan_dtype(at::ScalarType activations, at::ScalarType acc, Fn&& fn) {
  TORCH_CHECK((activations == at::kDouble) == (acc == at::kDouble),
              "selective_scan CUDA kernels: float64 parameters need float64 activations, got ", activations);
  switch (activations) {
    case at::kFloat: fn(float{}, float{}); break;
    case at::kDouble: fn(double{}, double{}); break;
    case at::kHalf: fn(__half{}, float{}); break;
    case at::kBFloat16: fn(__nv_bfloat16{}, float{}); break;
    default: TORCH_CHECK(false, "selective scan supports float16/bfloat16/float32/float64, got ", activations);
  }
}

template <typename T>
const T* data(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.const_data_ptr());
}

template <typename T>
T* mutable_data(at::Tensor& t) {
  return reinterpret_cast<T*>(t.mutable_data_ptr());
}

template <typename T, typename acc_t>
ScanInputs<T, acc_t> scan_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C, const c10::optional<at::Tensor>& D,
                                 const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& bias,
                                 const at::Tensor& geometry) {
  ScanInputs<T, acc_t> in{};
  in.u = data<T>(u);
  in.delta = data<T>(delta);
  for (int i = 0; i < 4; ++i) {
    in.u_stride[i] = u.stride(i);
    in.delta_stride[i] = delta.stride(i);
  }
  in.A = data<acc_t>(A);
  in.B = data<T>(B);
  in.C = data<T>(C);
  for (int i = 0; i < 5; ++i) {
    in.B_stride[i] = B.stride(i);
    in.C_stride[i] = C.stride(i);
  }
  in.D = D.has_value() ? data<acc_t>(*D) : nullptr;
  in.z = z.has_value() ? data<T>(*z) : nullptr;
  for (int i = 0; i < 3; ++i) in.z_stride[i] = z.has_value() ? z->stride(i) : 0;
  in.bias = bias.has_value() ? data<acc_t>(*bias) : nullptr;
  in.geometry = geometry.const_data_ptr<int64_t>();
  return in;
}

ScanShape scan_shape(const at::Tensor& u, const at::Tensor& A, const at::Tensor& B, bool softplus, int64_t chunk) {
  return ScanShape{u.size(0), u.size(1), u.size(2), u.size(3), A.size(2), B.size(2),
                   (u.size(3) + chunk - 1) / chunk, softplus};
}

void selective_scan3d_fwd_cuda_op(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                  const at::Tensor& B, const at::Tensor& C, const c10::optional<at::Tensor>& D,
                                  const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& delta_bias,
                                  const at::Tensor& geometry, bool softplus, int64_t chunk, at::Tensor& out,
                                  at::Tensor& last, at::Tensor& checkpoints) {
  check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, geometry, chunk, at::kCUDA);
  TORCH_CHECK(chunk == kScanCudaChunk, "the CUDA selective scan checkpoints every ", kScanCudaChunk, " steps");
  check_scan_forward_buffers(u, A, chunk, out, last, checkpoints);
  const c10::cuda::CUDAGuard guard(u.device());
  if (u.size(1) > 1) out.zero_();  // the orders add into it
  dispatch_scan_dtype(u.scalar_type(), A.scalar_type(), [&](auto t_tag, auto acc_tag) {
    using T = decltype(t_tag);
    using acc_t = decltype(acc_tag);
    ScanForwardArgs<T, acc_t> args{};
    args.shape = scan_shape(u, A, B, softplus, chunk);
    args.in = scan_inputs<T, acc_t>(u, delta, A, B, C, D, z, delta_bias, geometry);
    args.out = mutable_data<acc_t>(out);
    args.last = mutable_data<acc_t>(last);
    args.checkpoints = mutable_data<acc_t>(checkpoints);
    const cudaError_t err = selective_scan3d_fwd_cuda<T, acc_t>(args, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "selective_scan3d_fwd_cuda: ", cudaGetErrorString(err));
  });
}

void selective_scan3d_bwd_cuda_op(const at::Tensor& dout, const at::Tensor& dlast, const at::Tensor& u,
                                  const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                                  const at::Tensor& C, const c10::optional<at::Tensor>& D,
                                  const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& delta_bias,
                                  const at::Tensor& checkpoints, const at::Tensor& geometry, bool softplus,
                                  int64_t chunk, at::Tensor& du, at::Tensor& ddelta, at::Tensor& dA, at::Tensor& dB,
                                  at::Tensor& dC, at::Tensor& dD, at::Tensor& dz, at::Tensor& dbias) {
  check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, geometry, chunk, at::kCUDA);
  TORCH_CHECK(chunk == kScanCudaChunk, "the CUDA selective scan checkpoints every ", kScanCudaChunk, " steps");
  check_scan_backward_buffers(dout, dlast, u, A, B, D.has_value(), z.has_value(), delta_bias.has_value(), checkpoints,
                              chunk, du, ddelta, dA, dB, dC, dD, dz, dbias);
  const c10::cuda::CUDAGuard guard(u.device());
  dB.zero_();
  dC.zero_();
  if (z.has_value() && u.size(1) > 1) dz.zero_();
  const auto per_sample = [&](at::IntArrayRef sizes) { return at::empty(sizes, A.options()); };
  at::Tensor dA_partial = per_sample({u.size(0), u.size(1), u.size(2), A.size(2)});
  at::Tensor dD_partial = D.has_value() ? per_sample({u.size(0), u.size(1), u.size(2)}) : at::Tensor();
  at::Tensor dbias_partial = delta_bias.has_value() ? per_sample({u.size(0), u.size(1), u.size(2)}) : at::Tensor();
  dispatch_scan_dtype(u.scalar_type(), A.scalar_type(), [&](auto t_tag, auto acc_tag) {
    using T = decltype(t_tag);
    using acc_t = decltype(acc_tag);
    ScanBackwardArgs<T, acc_t> args{};
    args.shape = scan_shape(u, A, B, softplus, chunk);
    args.in = scan_inputs<T, acc_t>(u, delta, A, B, C, D, z, delta_bias, geometry);
    args.checkpoints = data<acc_t>(checkpoints);
    args.dout = data<T>(dout);
    for (int i = 0; i < 3; ++i) args.dout_stride[i] = dout.stride(i);
    args.dlast = data<acc_t>(dlast);
    args.du = mutable_data<T>(du);
    args.ddelta = mutable_data<T>(ddelta);
    args.dA_partial = mutable_data<acc_t>(dA_partial);
    args.dB = mutable_data<acc_t>(dB);
    args.dC = mutable_data<acc_t>(dC);
    args.dD_partial = D.has_value() ? mutable_data<acc_t>(dD_partial) : nullptr;
    args.dz = z.has_value() ? mutable_data<acc_t>(dz) : nullptr;
    args.dbias_partial = delta_bias.has_value() ? mutable_data<acc_t>(dbias_partial) : nullptr;
    const cudaError_t err = selective_scan3d_bwd_cuda<T, acc_t>(args, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "selective_scan3d_bwd_cuda: ", cudaGetErrorString(err));
  });
  dA.copy_(dA_partial.sum(0));
  if (D.has_value()) dD.copy_(dD_partial.sum(0));
  if (delta_bias.has_value()) dbias.copy_(dbias_partial.sum(0));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(anatokernels, m) {
  m.def(
      "selective_scan3d_fwd_cuda(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, Tensor geometry, bool softplus, int chunk, Tensor(a!) out, Tensor(b!) last, "
      "Tensor(c!) checkpoints) -> ()",
      &selective_scan3d_fwd_cuda_op);
  m.def(
      "selective_scan3d_bwd_cuda(Tensor dout, Tensor dlast, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, "
      "Tensor? D, Tensor? z, Tensor? delta_bias, Tensor checkpoints, Tensor geometry, bool softplus, int chunk, "
      "Tensor(a!) du, Tensor(b!) ddelta, Tensor(c!) dA, Tensor(d!) dB, Tensor(e!) dC, Tensor(f!) dD, "
      "Tensor(g!) dz, Tensor(h!) dbias) -> ()",
      &selective_scan3d_bwd_cuda_op);
}

}  // namespace anatokernels
