// Order-aware causal depthwise conv: scan-order geometry shared by the CPU and CUDA paths (no ATen).
//
// x (B, K, D, L) with arbitrary strides, native raster layout (L = Z*Y*X, x fastest); weight (K, D, W)
// and bias (K, D) contiguous; out, grad and dx (B, K, D, L) contiguous. For order k, scan step t visits
// native position pi_k(t), computed arithmetically from 7 ints per order (n0, n1, n2, st0, st1, st2, rev):
//   s = rev ? L-1-t : t;   pi_k(t) = (s / (n1*n2))*st0 + ((s / n2) % n1)*st1 + (s % n2)*st2
// and the conv is, with x before step 0 taken as 0,
//   out[b,k,d,pi_k(t)] = act(bias[k,d] + sum_m weight[k,d,m] * x[b,k,d,pi_k(t-(W-1)+m)]).
// All offsets are int64.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define ANATO_HD __host__ __device__ __forceinline__
#else
#define ANATO_HD inline
#endif

namespace anatokernels {

constexpr int kGeometryInts = 7;  // per order: n0, n1, n2, st0, st1, st2, reverse
constexpr int kMaxConvWidth = 4;

struct ScanGeometry {
  int64_t n0, n1, n2, st0, st1, st2, length;
  bool reverse;

  ANATO_HD static ScanGeometry load(const int64_t* g) {
    return ScanGeometry{g[0], g[1], g[2], g[3], g[4], g[5], g[0] * g[1] * g[2], g[6] != 0};
  }
  // Native position of scan step t, 0 <= t < L.
  ANATO_HD int64_t native(int64_t t) const {
    const int64_t s = reverse ? length - 1 - t : t;
    return (s / (n1 * n2)) * st0 + ((s / n2) % n1) * st1 + (s % n2) * st2;
  }
  // Scan step at which native position p is visited (inverse of native).
  ANATO_HD int64_t step(int64_t p) const {
    const int64_t s = ((p / st0) % n0) * (n1 * n2) + ((p / st1) % n1) * n2 + (p / st2) % n2;
    return reverse ? length - 1 - s : s;
  }
};

struct OrderConvShape {
  int64_t batch, orders, channels, length, width;  // B, K, D, L, W
  int64_t x_stride[4];                              // strides of x (b, k, d, l), in elements
};

}  // namespace anatokernels
