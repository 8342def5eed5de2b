// Plain CUDA launchers for the masked patch ops (no ATen: nvcc compiles the .cu standalone).
// T is float, double, __half or __nv_bfloat16. Accumulating scatter supports float and double only. Both return
// cudaErrorInvalidValue where a size exceeds the kernels' 32-bit index arithmetic (the patch grid GH, GW, the patch
// sizes, C·pd·ph, B·M: each at most 2^31 - 1) or a launch limit (more than 65535 tiles of rows per patch); volume
// and patch offsets are 64-bit.
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
