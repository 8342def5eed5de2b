// Step-to-native mapping of one scan order over a (Z, Y, X) volume stored in raster order.
// Shared by the CPU (C++) and CUDA kernels; plain C++, no torch headers.
//
// An order lists the axes slowest first with sizes (n0, n1, n2) and native strides (st0, st1, st2);
// a reversed order walks the steps backwards:
//   s = reverse ? L-1-t : t
//   native(t) = (s / (n1*n2))*st0 + ((s / n2) % n1)*st1 + (s % n2)*st2
// The Python side passes one row (n0, n1, n2, st0, st1, st2, reverse) per order (int64).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define ANATO_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define ANATO_HOST_DEVICE inline
#endif

namespace anatokernels {

struct ScanOrder {
  int64_t n1, n2, st0, st1, st2, length;
  bool reverse;

  // row: the order's 7 ints as above; length: L = n0*n1*n2
  ANATO_HOST_DEVICE static ScanOrder from_row(const int64_t* row, int64_t length) {
    return ScanOrder{row[1], row[2], row[3], row[4], row[5], length, row[6] != 0};
  }

  ANATO_HOST_DEVICE int64_t position(int64_t t) const {
    const int64_t s = reverse ? length - 1 - t : t;
    return (s / (n1 * n2)) * st0 + ((s / n2) % n1) * st1 + (s % n2) * st2;
  }
};

}  // namespace anatokernels
