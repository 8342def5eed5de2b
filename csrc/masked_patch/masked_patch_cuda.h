// Plain CUDA launchers for the masked patch ops (no ATen: nvcc compiles the .cu standalone).
// T is float, double, __half or __nv_bfloat16. Accumulating scatter supports float and double only.
#pragma once
#include <cuda_runtime.h>

#include "masked_patch/masked_patch.h"

namespace anatokernels {

template <typename T>
cudaError_t masked_patch_gather_cuda(const T* x, const int64_t* index, T* out, const PatchGeometry& g,
                                     cudaStream_t stream);

template <typename T>
cudaError_t masked_patch_scatter_cuda(const T* patches, const int64_t* index, T* out, const PatchGeometry& g,
                                      bool accumulate, cudaStream_t stream);

}  // namespace anatokernels
