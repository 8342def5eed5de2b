// Plain CUDA launchers for order_conv1d (no ATen: nvcc compiles the .cu standalone).
// T is float, double, __half or __nv_bfloat16; accumulation is in OrderConvAcc<T> (float, or double).
#pragma once
#include <cuda_runtime.h>

#include "order_conv/order_conv.h"

namespace anatokernels {

constexpr int kOrderConvThreads = 256;        // native positions per block
constexpr int kOrderConvChannelsPerBlock = 8;  // channels per block (the index math is shared by them)

template <typename T>
struct OrderConvAcc {
  using type = float;
};
template <>
struct OrderConvAcc<double> {
  using type = double;
};

// Number of per-block partial sums per (k, d) written by the backward.
inline int64_t order_conv1d_backward_parts(const OrderConvShape& s) {
  return s.batch * ((s.length + kOrderConvThreads - 1) / kOrderConvThreads);
}

// x (B, K, D, L) strided; weight (K, D, W); bias (K, D) or nullptr; geometry (K, 7) int64 on the device;
// out (B, K, D, L) contiguous.
template <typename T>
cudaError_t order_conv1d_forward_cuda(const T* x, const T* weight, const T* bias, const int64_t* geometry, T* out,
                                      const OrderConvShape& s, bool silu, cudaStream_t stream);

// grad, dx (B, K, D, L) contiguous; partial (K, D, parts, W+1) receives, per block, the sums of
// dweight[k, d, 0..W-1] and dbias[k, d] over its positions (parts = order_conv1d_backward_parts(s)).
template <typename T>
cudaError_t order_conv1d_backward_cuda(const T* grad, const T* x, const T* weight, const T* bias,
                                       const int64_t* geometry, T* dx, typename OrderConvAcc<T>::type* partial,
                                       const OrderConvShape& s, bool silu, cudaStream_t stream);

}  // namespace anatokernels
