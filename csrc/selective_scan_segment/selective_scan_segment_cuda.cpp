// ATen bindings of the CUDA segment-parallel selective scan (compiled only in CUDA builds):
//   anatokernels::selective_scan3d_segment_fwd_cuda(u, delta, A, B, C, D?, z?, delta_bias?, geometry, softplus,
//                                                   seg, out, last, states, sums, y)
//   anatokernels::selective_scan3d_segment_bwd_cuda(dout, dlast, u, delta, A, B, C, D?, z?, delta_bias?, states,
//                                                   geometry, softplus, seg, du, ddelta, dA, dB, dC, dD, dz,
//                                                   dbias, gstates, sums, y)
// Inputs as check_scan_inputs (selective_scan_args.h), here all contiguous, dout (Bt, Dm, L) too; seg must be
// kSegmentSteps. Buffers in the accumulation dtype (A's): out (Bt, Dm, L), last (Bt, K, Dm, N), states and the
// backward's gstates (Bt, K, Dm, slots, N), sums (Bt, K, Dm, slots), y (Bt, K, Dm, L) for K > 1 (the backward's:
// with z; else any tensor), with slots = 1 + max_k S_k: the caller computes S_k from the geometry (a smaller
// `slots` would drop segments; it is not read back here). Backward: dlast (Bt, K, Dm, N), dA (K, Dm, N), dB, dC
// (Bt, K, G, N, L), dD, dbias (K, Dm) where D / delta_bias are given, dz (Bt, Dm, L) where z is (else any
// tensor: not written); du, ddelta (Bt, K, Dm, L) in u's dtype. dA, dB, dC, dD, dbias are zeroed here (the
// kernels add to them).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <limits>

#include "selective_scan/selective_scan_args.h"
#include "selective_scan_segment/selective_scan_segment_cuda.h"

namespace anatokernels {
namespace {

template <typename Fn>
void dispatch_segment_dtype(at::ScalarType activations, at::ScalarType acc, Fn&& fn) {
  TORCH_CHECK((activations == at::kDouble) == (acc == at::kDouble),
              "selective_scan3d_segment_fwd_cuda: float64 parameters need float64 activations, got ", activations);
  switch (activations) {
    case at::kFloat: fn(float{}, float{}); break;
    case at::kDouble: fn(double{}, double{}); break;
    case at::kHalf: fn(__half{}, float{}); break;
    case at::kBFloat16: fn(__nv_bfloat16{}, float{}); break;
    default: TORCH_CHECK(false, "selective_scan3d_segment_fwd_cuda supports float16/bfloat16/float32/float64, got ",
                         activations);
  }
}

void check_segment_sizes(const at::Tensor& u, const at::Tensor& A, const at::Tensor& B, int64_t seg) {
  const int64_t int_max = std::numeric_limits<int32_t>::max();
  TORCH_CHECK(seg == kSegmentSteps, "the CUDA segment scan walks segments of ", kSegmentSteps, " steps, got ", seg);
  TORCH_CHECK(A.size(2) >= 1 && A.size(2) <= 64, "the CUDA segment scan holds at most 64 states, got N = ",
              A.size(2));
  TORCH_CHECK(u.size(0) <= 65535 && u.size(1) * u.size(2) <= 65535,
              "the CUDA segment scan takes Bt <= 65535 and K·Dm <= 65535 (grid axes), got Bt = ", u.size(0),
              ", K·Dm = ", u.size(1) * u.size(2));
  TORCH_CHECK(A.size(2) * u.size(3) <= int_max && u.size(0) * u.size(1) * u.size(2) * A.size(2) <= int_max,
              "the CUDA segment scan indexes N·L and Bt·K·Dm·N with 32-bit integers; got N·L = ",
              A.size(2) * u.size(3));
  for (const at::Tensor* t : {&u, &B}) TORCH_CHECK(t->is_contiguous(), "u, delta, B, C and z must be contiguous");
}

template <typename T>
const T* data(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.const_data_ptr());
}

template <typename T>
const T* optional_data(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? data<T>(*t) : nullptr;
}

template <typename T>
T* mutable_data(at::Tensor& t) {
  return reinterpret_cast<T*>(t.mutable_data_ptr());
}

// The pointers and sizes of one call (y, last, dout, dlast: set by the caller).
template <typename T, typename Acc>
segment::Args<T, Acc> segment_args(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                   const at::Tensor& B, const at::Tensor& C, const c10::optional<at::Tensor>& D,
                                   const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& delta_bias,
                                   const at::Tensor& geometry, bool softplus, int64_t seg, at::Tensor& states,
                                   at::Tensor& sums) {
  return segment::Args<T, Acc>{
      data<T>(u), data<T>(delta), data<T>(B), data<T>(C), optional_data<T>(z), data<Acc>(A), optional_data<Acc>(D),
      optional_data<Acc>(delta_bias), geometry.const_data_ptr<int64_t>(), mutable_data<Acc>(states),
      mutable_data<Acc>(sums), nullptr, nullptr, static_cast<int32_t>(u.size(0)), static_cast<int32_t>(u.size(1)),
      static_cast<int32_t>(u.size(2)), static_cast<int32_t>(u.size(3)), static_cast<int32_t>(A.size(2)),
      static_cast<int32_t>(B.size(2)), static_cast<int32_t>(seg), static_cast<int32_t>(states.size(3)), softplus};
}

// check_scan_inputs, the segment scan's limits and contiguity.
void check_segment_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                          const at::Tensor& C, const c10::optional<at::Tensor>& D,
                          const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& delta_bias,
                          const at::Tensor& geometry, int64_t seg) {
  check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, geometry, seg, at::kCUDA);
  check_segment_sizes(u, A, B, seg);
  for (const at::Tensor* t : {&delta, &C}) TORCH_CHECK(t->is_contiguous(), "u, delta, B, C and z must be contiguous");
  TORCH_CHECK(!z.has_value() || z->is_contiguous(), "u, delta, B, C and z must be contiguous");
}

void selective_scan3d_segment_fwd_cuda_op(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                          const at::Tensor& B, const at::Tensor& C,
                                          const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                                          const c10::optional<at::Tensor>& delta_bias, const at::Tensor& geometry,
                                          bool softplus, int64_t seg, at::Tensor& out, at::Tensor& last,
                                          at::Tensor& states, at::Tensor& sums, at::Tensor& y) {
  check_segment_inputs(u, delta, A, B, C, D, z, delta_bias, geometry, seg);
  const int64_t bt = u.size(0), k = u.size(1), dm = u.size(2), length = u.size(3), n = A.size(2);
  const auto acc = A.scalar_type();
  TORCH_CHECK(states.dim() == 5 && states.size(3) >= 2, "states must be (Bt, K, Dm, slots, N), slots >= 2");
  const int64_t slots = states.size(3);
  check_scan_buffer(out, {bt, dm, length}, acc, "out");
  check_scan_buffer(last, {bt, k, dm, n}, acc, "last");
  check_scan_buffer(states, {bt, k, dm, slots, n}, acc, "states");
  check_scan_buffer(sums, {bt, k, dm, slots}, acc, "sums");
  if (k > 1) check_scan_buffer(y, {bt, k, dm, length}, acc, "y");
  const c10::cuda::CUDAGuard guard(u.device());
  dispatch_segment_dtype(u.scalar_type(), acc, [&](auto t_tag, auto acc_tag) {
    using T = decltype(t_tag);
    using Acc = decltype(acc_tag);
    segment::Args<T, Acc> a =
        segment_args<T, Acc>(u, delta, A, B, C, D, z, delta_bias, geometry, softplus, seg, states, sums);
    a.y = k > 1 ? mutable_data<Acc>(y) : nullptr;
    a.last = mutable_data<Acc>(last);
    const cudaError_t err =
        selective_scan3d_segment_fwd_cuda<T, Acc>(a, mutable_data<Acc>(out), c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "selective_scan3d_segment_fwd_cuda: ", cudaGetErrorString(err));
  });
}

void selective_scan3d_segment_bwd_cuda_op(const at::Tensor& dout, const at::Tensor& dlast, const at::Tensor& u,
                                          const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                                          const at::Tensor& C, const c10::optional<at::Tensor>& D,
                                          const c10::optional<at::Tensor>& z,
                                          const c10::optional<at::Tensor>& delta_bias, const at::Tensor& states,
                                          const at::Tensor& geometry, bool softplus, int64_t seg, at::Tensor& du,
                                          at::Tensor& ddelta, at::Tensor& dA, at::Tensor& dB, at::Tensor& dC,
                                          at::Tensor& dD, at::Tensor& dz, at::Tensor& dbias, at::Tensor& gstates,
                                          at::Tensor& sums, at::Tensor& y) {
  check_segment_inputs(u, delta, A, B, C, D, z, delta_bias, geometry, seg);
  const int64_t bt = u.size(0), k = u.size(1), dm = u.size(2), length = u.size(3), n = A.size(2);
  const auto acc = A.scalar_type();
  ANATO_CHECK_DEVICE(dout, at::kCUDA);
  check_scan_buffer(dout, {bt, dm, length}, u.scalar_type(), "dout");
  check_scan_buffer(dlast, {bt, k, dm, n}, acc, "dlast");
  TORCH_CHECK(states.dim() == 5 && states.size(3) >= 2, "states must be (Bt, K, Dm, slots, N), slots >= 2");
  const int64_t slots = states.size(3);
  check_scan_buffer(states, {bt, k, dm, slots, n}, acc, "states");
  check_scan_buffer(gstates, {bt, k, dm, slots, n}, acc, "gstates");
  check_scan_buffer(sums, {bt, k, dm, slots}, acc, "sums");
  check_scan_buffer(du, u.sizes(), u.scalar_type(), "du");
  check_scan_buffer(ddelta, u.sizes(), u.scalar_type(), "ddelta");
  check_scan_buffer(dA, A.sizes(), acc, "dA");
  check_scan_buffer(dB, B.sizes(), acc, "dB");
  check_scan_buffer(dC, B.sizes(), acc, "dC");
  if (D.has_value()) check_scan_buffer(dD, {k, dm}, acc, "dD");
  if (delta_bias.has_value()) check_scan_buffer(dbias, {k, dm}, acc, "dbias");
  if (z.has_value()) check_scan_buffer(dz, {bt, dm, length}, acc, "dz");
  if (z.has_value() && k > 1) check_scan_buffer(y, {bt, k, dm, length}, acc, "y");
  const c10::cuda::CUDAGuard guard(u.device());
  for (at::Tensor* t : {&dA, &dB, &dC}) t->zero_();
  if (D.has_value()) dD.zero_();
  if (delta_bias.has_value()) dbias.zero_();
  dispatch_segment_dtype(u.scalar_type(), acc, [&](auto t_tag, auto acc_tag) {
    using T = decltype(t_tag);
    using Acc = decltype(acc_tag);
    segment::Args<T, Acc> a =
        segment_args<T, Acc>(u, delta, A, B, C, D, z, delta_bias, geometry, softplus, seg, gstates, sums);
    a.dout = data<T>(dout);
    a.dlast = data<Acc>(dlast);
    const segment::Grads<T, Acc> q{data<Acc>(states), mutable_data<T>(du), mutable_data<T>(ddelta),
                                   mutable_data<Acc>(dA), mutable_data<Acc>(dB), mutable_data<Acc>(dC),
                                   D.has_value() ? mutable_data<Acc>(dD) : nullptr,
                                   delta_bias.has_value() ? mutable_data<Acc>(dbias) : nullptr,
                                   z.has_value() && k > 1 ? mutable_data<Acc>(y) : nullptr};
    const cudaError_t err = selective_scan3d_segment_bwd_cuda<T, Acc>(
        a, q, z.has_value() ? mutable_data<Acc>(dz) : nullptr, c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "selective_scan3d_segment_bwd_cuda: ", cudaGetErrorString(err));
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(anatokernels, m) {
  m.def(
      "selective_scan3d_segment_fwd_cuda(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, "
      "Tensor? z, Tensor? delta_bias, Tensor geometry, bool softplus, int seg, Tensor(a!) out, Tensor(b!) last, "
      "Tensor(c!) states, Tensor(d!) sums, Tensor(e!) y) -> ()",
      &selective_scan3d_segment_fwd_cuda_op);
  m.def(
      "selective_scan3d_segment_bwd_cuda(Tensor dout, Tensor dlast, Tensor u, Tensor delta, Tensor A, Tensor B, "
      "Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, Tensor states, Tensor geometry, bool softplus, int seg, "
      "Tensor(a!) du, Tensor(b!) ddelta, Tensor(c!) dA, Tensor(d!) dB, Tensor(e!) dC, Tensor(f!) dD, "
      "Tensor(g!) dz, Tensor(h!) dbias, Tensor(i!) gstates, Tensor(j!) sums, Tensor(k!) y) -> ()",
      &selective_scan3d_segment_bwd_cuda_op);
}

}  // namespace anatokernels
