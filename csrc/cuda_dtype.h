// Runtime dtype -> CUDA element type for the ATen bindings of the plain-CUDA kernels (CUDA builds only).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.h"

namespace anatokernels {

// Calls fn(T{}) with T in {float, double, __half, __nv_bfloat16} matching dtype; `op` names the caller.
template <typename Fn>
void dispatch_cuda_dtype(at::ScalarType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case at::kFloat: fn(float{}); break;
    case at::kDouble: fn(double{}); break;
    case at::kHalf: fn(__half{}); break;
    case at::kBFloat16: fn(__nv_bfloat16{}); break;
    default: TORCH_CHECK(false, op, " supports float16/bfloat16/float32/float64, got ", dtype);
  }
}

}  // namespace anatokernels
