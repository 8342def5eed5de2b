// Masked 3D patch gather/scatter: shape bookkeeping shared by the CPU and CUDA paths.
// Volume (B, C, D, H, W) with arbitrary strides; patches (B, M, P), P = C*pd*ph*pw in (c, pd, ph, pw)
// order; patch id = (gd*GH + gh)*GW + gw. All offsets are int64.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define ANATO_HOST_DEVICE __host__ __device__
#else
#define ANATO_HOST_DEVICE
#endif

namespace anatokernels {

struct PatchGeometry {
  int64_t batch, num_patches, channels;  // B, M, C
  int64_t grid_h, grid_w;                // GH, GW
  int64_t pd, ph, pw;
  int64_t stride[5];                     // volume strides (elements)

  ANATO_HOST_DEVICE int64_t rows() const { return channels * pd * ph; }  // (c, i, j) rows of pw voxels each
  ANATO_HOST_DEVICE int64_t patch_len() const { return rows() * pw; }
  // Offset of voxel (c, i, j, 0) of patch `id` in sample b.
  ANATO_HOST_DEVICE int64_t row_offset(int64_t b, int64_t id, int64_t row) const {
    const int64_t gw = id % grid_w, gh = (id / grid_w) % grid_h, gd = id / (grid_w * grid_h);
    const int64_t j = row % ph, i = (row / ph) % pd, c = row / (ph * pd);
    return b * stride[0] + c * stride[1] + (gd * pd + i) * stride[2] + (gh * ph + j) * stride[3] +
           gw * pw * stride[4];
  }
};

}  // namespace anatokernels
