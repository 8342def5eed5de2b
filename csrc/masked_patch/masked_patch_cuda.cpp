// ATen binding of the CUDA masked patch kernels (compiled only in CUDA builds). Registered as
//   anatokernels::masked_patch_gather_cuda(x, index, out, patch)
//   anatokernels::masked_patch_scatter_cuda(patches, index, out, patch, accumulate)
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda_dtype.h"
#include "masked_patch/masked_patch_args.h"
#include "masked_patch/masked_patch_cuda.h"

namespace anatokernels {
namespace {

void masked_patch_gather_cuda_op(const at::Tensor& x, const at::Tensor& index, at::Tensor& out,
                                 at::IntArrayRef patch) {
  const PatchGeometry g = masked_patch_geometry(x, index, out, patch, at::kCUDA);
  TORCH_CHECK(out.scalar_type() == x.scalar_type(), "out must have x's dtype");
  const c10::cuda::CUDAGuard guard(x.device());
  dispatch_cuda_dtype(x.scalar_type(), "masked patch ops", [&](auto tag) {
    using T = decltype(tag);
    const cudaError_t err = masked_patch_gather_cuda<T>(
        reinterpret_cast<const T*>(x.const_data_ptr()), index.const_data_ptr<int64_t>(),
        reinterpret_cast<T*>(out.mutable_data_ptr()), g, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "masked_patch_gather_cuda: ", cudaGetErrorString(err));
  });
}

void masked_patch_scatter_cuda_op(const at::Tensor& patches, const at::Tensor& index, at::Tensor& out,
                                  at::IntArrayRef patch, bool accumulate) {
  const PatchGeometry g = masked_patch_geometry(out, index, patches, patch, at::kCUDA);
  TORCH_CHECK(!accumulate || out.scalar_type() == at::kFloat || out.scalar_type() == at::kDouble,
              "accumulating scatter needs a float32/float64 output");
  const at::Tensor src = patches.scalar_type() == out.scalar_type() ? patches : patches.to(out.scalar_type());
  const c10::cuda::CUDAGuard guard(out.device());
  dispatch_cuda_dtype(out.scalar_type(), "masked patch ops", [&](auto tag) {
    using T = decltype(tag);
    const cudaError_t err = masked_patch_scatter_cuda<T>(
        reinterpret_cast<const T*>(src.const_data_ptr()), index.const_data_ptr<int64_t>(),
        reinterpret_cast<T*>(out.mutable_data_ptr()), g, accumulate, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "masked_patch_scatter_cuda: ", cudaGetErrorString(err));
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(anatokernels, m) {
  m.def("masked_patch_gather_cuda(Tensor x, Tensor index, Tensor(a!) out, int[] patch) -> ()",
        &masked_patch_gather_cuda_op);
  m.def("masked_patch_scatter_cuda(Tensor patches, Tensor index, Tensor(a!) out, int[] patch, bool accumulate) -> ()",
        &masked_patch_scatter_cuda_op);
}

}  // namespace anatokernels
