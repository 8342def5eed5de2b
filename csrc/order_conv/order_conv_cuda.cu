// CUDA order-aware causal depthwise conv, forward and backward.
// A block covers 256 consecutive native positions of one (b, k) and 8 channels. Each thread maps its
// position to its order digits and its neighbours' native positions once (order_digits.h: one 32-bit
// division per block for the tile's first position, division-free per thread), then reuses them
// for every channel; loads and stores of consecutive positions stay mostly coalesced for every order.
// The backward is fused: dx at step u needs the pre-activation gradient at steps u .. u+W-1, which the
// thread recomputes from x at steps u-(W-1) .. u+W-1. Weight and bias gradients are reduced per block
// (warp shuffles, then shared memory) into a partial buffer; the binding sums it (deterministic).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "order_conv/order_conv_cuda.h"
#include "order_digits.h"

namespace anatokernels {
namespace {

constexpr int kThreads = kOrderConvThreads;
constexpr int kChannels = kOrderConvChannelsPerBlock;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <typename A>
__device__ __forceinline__ A sigmoid(A v) {
  return A(1) / (A(1) + exp(-v));
}

template <int W, typename T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                   const int64_t* __restrict__ geometry, T* __restrict__ out, OrderConvShape s, bool silu) {
  using A = typename OrderConvAcc<T>::type;
  const int32_t orders = static_cast<int32_t>(s.orders), bk32 = blockIdx.z;
  const int64_t bk = bk32, b = bk32 / orders, k = bk32 % orders;
  const int32_t p0 = static_cast<int32_t>(blockIdx.x) * kThreads;
  const int64_t p = p0 + static_cast<int32_t>(threadIdx.x);
  if (p >= s.length) return;
  const OrderDigits g = OrderDigits::load(geometry + k * kGeometryInts);
  const Digits c = PositionDigits::at(g, p0).of(threadIdx.x);
  int64_t off[W];  // x offsets of steps t-(W-1) .. t; -1 before step 0
#pragma unroll
  for (int m = 0; m < W; ++m) {
    const Digits cm = g.advance(c, m - (W - 1));
    off[m] = g.valid(cm) ? static_cast<int64_t>(g.position(cm)) * s.x_stride[3] : -1;
  }
  const int64_t d0 = static_cast<int64_t>(blockIdx.y) * kChannels;
  for (int c = 0; c < kChannels && d0 + c < s.channels; ++c) {
    const int64_t d = d0 + c, kd = k * s.channels + d;
    const T* xr = x + b * s.x_stride[0] + k * s.x_stride[1] + d * s.x_stride[2];
    A acc = bias ? to_acc(bias[kd]) : A(0);
#pragma unroll
    for (int m = 0; m < W; ++m) {
      if (off[m] >= 0) acc += to_acc(weight[kd * W + m]) * to_acc(xr[off[m]]);
    }
    if (silu) acc *= sigmoid(acc);
    store(out + (bk * s.channels + d) * s.length + p, acc);
  }
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

template <int W, typename T>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const T* __restrict__ grad, const T* __restrict__ x, const T* __restrict__ weight,
                    const T* __restrict__ bias, const int64_t* __restrict__ geometry, T* __restrict__ dx,
                    typename OrderConvAcc<T>::type* __restrict__ partial, OrderConvShape s, bool silu) {
  using A = typename OrderConvAcc<T>::type;
  constexpr int kSpan = 2 * W - 1;  // steps t-(W-1) .. t+(W-1)
  constexpr int kSums = W + 1;      // dweight[0..W-1], dbias
  __shared__ A shared[kWarps][kChannels * kSums];
  const int32_t orders = static_cast<int32_t>(s.orders), bk32 = blockIdx.z;
  const int64_t bk = bk32, b = bk32 / orders, k = bk32 % orders;
  const int32_t p0 = static_cast<int32_t>(blockIdx.x) * kThreads;
  const int64_t p = p0 + static_cast<int32_t>(threadIdx.x);
  const bool active = p < s.length;
  const OrderDigits g = OrderDigits::load(geometry + k * kGeometryInts);
  const Digits c = PositionDigits::at(g, p0).of(threadIdx.x);
  int64_t pos[kSpan];  // native positions; -1 outside [0, L) or for inactive threads
#pragma unroll
  for (int o = 0; o < kSpan; ++o) {
    const Digits co = g.advance(c, o - (W - 1));
    pos[o] = active && g.valid(co) ? static_cast<int64_t>(g.position(co)) : -1;
  }
  const int64_t d0 = static_cast<int64_t>(blockIdx.y) * kChannels;
  A sums[kChannels][kSums];
#pragma unroll
  for (int c = 0; c < kChannels; ++c) {
    const int64_t d = d0 + c, kd = k * s.channels + d;
#pragma unroll
    for (int j = 0; j < kSums; ++j) sums[c][j] = A(0);
    if (d >= s.channels) continue;
    const T* xr = x + b * s.x_stride[0] + k * s.x_stride[1] + d * s.x_stride[2];
    const int64_t row = (bk * s.channels + d) * s.length;
    A w[W], xv[kSpan], gpre[W];
#pragma unroll
    for (int m = 0; m < W; ++m) w[m] = to_acc(weight[kd * W + m]);
    const A bias_kd = bias ? to_acc(bias[kd]) : A(0);
#pragma unroll
    for (int o = 0; o < kSpan; ++o) xv[o] = pos[o] >= 0 ? to_acc(xr[pos[o] * s.x_stride[3]]) : A(0);
#pragma unroll
    for (int i = 0; i < W; ++i) {  // pre-activation gradient at step t+i
      const int64_t q = pos[W - 1 + i];
      A gp = q >= 0 ? to_acc(grad[row + q]) : A(0);
      if (silu && q >= 0) {
        A pre = bias_kd;
#pragma unroll
        for (int m = 0; m < W; ++m) pre += w[m] * xv[i + m];
        const A sig = sigmoid(pre);
        gp *= sig * (A(1) + pre * (A(1) - sig));
      }
      gpre[i] = gp;
    }
    if (active) {
      A acc = A(0);
#pragma unroll
      for (int i = 0; i < W; ++i) acc += w[W - 1 - i] * gpre[i];
      store(dx + row + p, acc);
    }
#pragma unroll
    for (int m = 0; m < W; ++m) sums[c][m] = gpre[0] * xv[m];
    sums[c][W] = gpre[0];
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int c = 0; c < kChannels; ++c) {
#pragma unroll
    for (int j = 0; j < kSums; ++j) {
      const A v = warp_sum(sums[c][j]);
      if (lane == 0) shared[warp][c * kSums + j] = v;
    }
  }
  __syncthreads();
  if (threadIdx.x < kChannels * kSums) {
    const int c = threadIdx.x / kSums, j = threadIdx.x % kSums;
    const int64_t d = d0 + c;
    if (d < s.channels) {
      A total = A(0);
#pragma unroll
      for (int w8 = 0; w8 < kWarps; ++w8) total += shared[w8][threadIdx.x];
      const int64_t parts = static_cast<int64_t>(s.batch) * gridDim.x;
      const int64_t part = b * gridDim.x + blockIdx.x;
      partial[((k * s.channels + d) * parts + part) * kSums + j] = total;
    }
  }
}

bool grid_for(const OrderConvShape& s, dim3* grid) {
  const int64_t blocks_l = (s.length + kThreads - 1) / kThreads;
  const int64_t blocks_d = (s.channels + kChannels - 1) / kChannels;
  const int64_t blocks_bk = s.batch * s.orders;
  if (blocks_l > 0x7fffffffLL || blocks_d > 65535 || blocks_bk > 65535) return false;
  *grid = dim3(static_cast<unsigned>(blocks_l), static_cast<unsigned>(blocks_d), static_cast<unsigned>(blocks_bk));
  return true;
}

}  // namespace

template <typename T>
cudaError_t order_conv1d_forward_cuda(const T* x, const T* weight, const T* bias, const int64_t* geometry, T* out,
                                      const OrderConvShape& s, bool silu, cudaStream_t stream) {
  if (s.batch * s.orders * s.channels * s.length == 0) return cudaSuccess;
  dim3 grid;
  if (!grid_for(s, &grid)) return cudaErrorInvalidConfiguration;
  switch (s.width) {
    case 2: forward_kernel<2, T><<<grid, kThreads, 0, stream>>>(x, weight, bias, geometry, out, s, silu); break;
    case 3: forward_kernel<3, T><<<grid, kThreads, 0, stream>>>(x, weight, bias, geometry, out, s, silu); break;
    case 4: forward_kernel<4, T><<<grid, kThreads, 0, stream>>>(x, weight, bias, geometry, out, s, silu); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t order_conv1d_backward_cuda(const T* grad, const T* x, const T* weight, const T* bias,
                                       const int64_t* geometry, T* dx, typename OrderConvAcc<T>::type* partial,
                                       const OrderConvShape& s, bool silu, cudaStream_t stream) {
  if (s.batch * s.orders * s.channels * s.length == 0) return cudaSuccess;
  dim3 grid;
  if (!grid_for(s, &grid)) return cudaErrorInvalidConfiguration;
  switch (s.width) {
    case 2:
      backward_kernel<2, T><<<grid, kThreads, 0, stream>>>(grad, x, weight, bias, geometry, dx, partial, s, silu);
      break;
    case 3:
      backward_kernel<3, T><<<grid, kThreads, 0, stream>>>(grad, x, weight, bias, geometry, dx, partial, s, silu);
      break;
    case 4:
      backward_kernel<4, T><<<grid, kThreads, 0, stream>>>(grad, x, weight, bias, geometry, dx, partial, s, silu);
      break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

#define ANATO_INSTANTIATE(T)                                                                                   \
  template cudaError_t order_conv1d_forward_cuda<T>(const T*, const T*, const T*, const int64_t*, T*,         \
                                                    const OrderConvShape&, bool, cudaStream_t);                \
  template cudaError_t order_conv1d_backward_cuda<T>(const T*, const T*, const T*, const T*, const int64_t*, \
                                                     T*, typename OrderConvAcc<T>::type*,                      \
                                                     const OrderConvShape&, bool, cudaStream_t);
ANATO_INSTANTIATE(float)
ANATO_INSTANTIATE(double)
ANATO_INSTANTIATE(__half)
ANATO_INSTANTIATE(__nv_bfloat16)
#undef ANATO_INSTANTIATE

}  // namespace anatokernels
