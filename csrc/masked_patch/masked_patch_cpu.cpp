// C++/OpenMP masked 3D patch gather and scatter(-add). Registered as
//   anatokernels::masked_patch_gather_cpu(x, index, out, patch)
//   anatokernels::masked_patch_scatter_cpu(patches, index, out, patch, accumulate)
#include <algorithm>

#include "masked_patch/masked_patch_args.h"

namespace anatokernels {
namespace {

template <typename T>
void gather_kernel(const T* x, const int64_t* index, T* out, const PatchGeometry& g) {
  const int64_t rows = g.rows();
  const int64_t pw = g.pw, sw = g.stride[4];
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t m = 0; m < g.num_patches; ++m) {
      const int64_t id = index[b * g.num_patches + m];
      T* dst = out + (b * g.num_patches + m) * g.patch_len();
      for (int64_t r = 0; r < rows; ++r, dst += pw) {
        const T* src = x + g.row_offset(b, id, r);
        if (sw == 1) {
          std::copy(src, src + pw, dst);
        } else {
          for (int64_t k = 0; k < pw; ++k) dst[k] = src[k * sw];
        }
      }
    }
  }
}

// Parallel over (b, c): threads write disjoint channels, so duplicate ids accumulate without races
// and the sum order is fixed (deterministic).
template <typename T>
void scatter_kernel(const T* patches, const int64_t* index, T* out, const PatchGeometry& g, bool accumulate) {
  const int64_t rows_per_channel = g.pd * g.ph;
  const int64_t pw = g.pw, sw = g.stride[4];
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t c = 0; c < g.channels; ++c) {
      for (int64_t m = 0; m < g.num_patches; ++m) {
        const int64_t id = index[b * g.num_patches + m];
        const T* src = patches + (b * g.num_patches + m) * g.patch_len() + c * rows_per_channel * pw;
        for (int64_t r = c * rows_per_channel; r < (c + 1) * rows_per_channel; ++r, src += pw) {
          T* dst = out + g.row_offset(b, id, r);
          if (accumulate) {
            for (int64_t k = 0; k < pw; ++k) dst[k * sw] += src[k];
          } else {
            for (int64_t k = 0; k < pw; ++k) dst[k * sw] = src[k];
          }
        }
      }
    }
  }
}

void masked_patch_gather_cpu(const at::Tensor& x, const at::Tensor& index, at::Tensor& out, at::IntArrayRef patch) {
  const PatchGeometry g = masked_patch_geometry(x, index, out, patch, at::kCPU);
  TORCH_CHECK(out.scalar_type() == x.scalar_type(), "out must have x's dtype");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "masked_patch_gather_cpu", [&] {
    gather_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(),
                            out.mutable_data_ptr<scalar_t>(), g);
  });
}

void masked_patch_scatter_cpu(const at::Tensor& patches, const at::Tensor& index, at::Tensor& out,
                              at::IntArrayRef patch, bool accumulate) {
  const PatchGeometry g = masked_patch_geometry(out, index, patches, patch, at::kCPU);
  const at::Tensor src = patches.scalar_type() == out.scalar_type() ? patches : patches.to(out.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "masked_patch_scatter_cpu", [&] {
    scatter_kernel<scalar_t>(src.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(),
                             out.mutable_data_ptr<scalar_t>(), g, accumulate);
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(anatokernels, m) {
  m.def("masked_patch_gather_cpu(Tensor x, Tensor index, Tensor(a!) out, int[] patch) -> ()",
        &masked_patch_gather_cpu);
  m.def("masked_patch_scatter_cpu(Tensor patches, Tensor index, Tensor(a!) out, int[] patch, bool accumulate) -> ()",
        &masked_patch_scatter_cpu);
}

}  // namespace anatokernels
