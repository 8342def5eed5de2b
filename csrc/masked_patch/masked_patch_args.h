// ATen-side argument checks and geometry for the masked patch entry points (CPU and CUDA bindings).
#pragma once
#include "common.h"
#include "masked_patch/masked_patch.h"

namespace anatokernels {

// volume (B, C, D, H, W) any strides; index (B, M) int64 contiguous; patches (B, M, C*pd*ph*pw) contiguous.
inline PatchGeometry masked_patch_geometry(const at::Tensor& volume, const at::Tensor& index,
                                           const at::Tensor& patches, at::IntArrayRef patch,
                                           c10::DeviceType device) {
  ANATO_CHECK_DEVICE(volume, device);
  ANATO_CHECK_DEVICE(index, device);
  ANATO_CHECK_DEVICE(patches, device);
  ANATO_CHECK_DIM(volume, 5);
  ANATO_CHECK_DIM(index, 2);
  ANATO_CHECK_DIM(patches, 3);
  ANATO_CHECK_DTYPE(index, at::kLong);
  ANATO_CHECK_CONTIGUOUS(index);
  ANATO_CHECK_CONTIGUOUS(patches);
  TORCH_CHECK(patch.size() == 3, "patch must have 3 sizes");
  TORCH_CHECK(volume.size(2) % patch[0] == 0 && volume.size(3) % patch[1] == 0 && volume.size(4) % patch[2] == 0,
              "patch must divide the volume");
  TORCH_CHECK(patches.size(0) == volume.size(0) && patches.size(1) == index.size(1) &&
                  patches.size(2) == volume.size(1) * patch[0] * patch[1] * patch[2],
              "patches must be (B, M, C*pd*ph*pw)");
  PatchGeometry g{};
  g.batch = volume.size(0);
  g.num_patches = index.size(1);
  g.channels = volume.size(1);
  g.pd = patch[0];
  g.ph = patch[1];
  g.pw = patch[2];
  g.grid_h = volume.size(3) / g.ph;
  g.grid_w = volume.size(4) / g.pw;
  for (int d = 0; d < 5; ++d) g.stride[d] = volume.stride(d);
  return g;
}

}  // namespace anatokernels
