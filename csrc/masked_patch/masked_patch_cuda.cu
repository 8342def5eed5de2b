// CUDA masked 3D patch gather / scatter(-add). One block moves a tile of rows (c, i, j) of one (b, m)
// patch; consecutive threads touch consecutive voxels of a row, so reads and writes are coalesced.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "masked_patch/masked_patch_cuda.h"

namespace anatokernels {
namespace {

constexpr int kThreads = 256;
constexpr int kElementsPerBlock = 4096;

template <typename T>
__global__ void gather_kernel(const T* __restrict__ x, const int64_t* __restrict__ index, T* __restrict__ out,
                              PatchGeometry g, int64_t rows_per_block) {
  const int64_t bm = blockIdx.x;
  const int64_t b = bm / g.num_patches;
  const int64_t id = index[bm];
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * rows_per_block;
  const int64_t rows = min(rows_per_block, g.rows() - row0);
  const int64_t n = rows * g.pw;
  T* dst = out + bm * g.patch_len() + row0 * g.pw;
  for (int64_t e = threadIdx.x; e < n; e += blockDim.x) {
    const int64_t r = row0 + e / g.pw, k = e % g.pw;
    dst[e] = x[g.row_offset(b, id, r) + k * g.stride[4]];
  }
}

template <typename T>
__global__ void scatter_kernel(const T* __restrict__ patches, const int64_t* __restrict__ index, T* __restrict__ out,
                               PatchGeometry g, int64_t rows_per_block, bool accumulate) {
  const int64_t bm = blockIdx.x;
  const int64_t b = bm / g.num_patches;
  const int64_t id = index[bm];
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * rows_per_block;
  const int64_t rows = min(rows_per_block, g.rows() - row0);
  const int64_t n = rows * g.pw;
  const T* src = patches + bm * g.patch_len() + row0 * g.pw;
  for (int64_t e = threadIdx.x; e < n; e += blockDim.x) {
    const int64_t r = row0 + e / g.pw, k = e % g.pw;
    T* dst = out + g.row_offset(b, id, r) + k * g.stride[4];
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      if (accumulate) {
        atomicAdd(dst, src[e]);
        continue;
      }
    }
    *dst = src[e];
  }
}

dim3 grid_for(const PatchGeometry& g, int64_t* rows_per_block) {
  *rows_per_block = g.pw >= kElementsPerBlock ? 1 : kElementsPerBlock / g.pw;
  const int64_t tiles = (g.rows() + *rows_per_block - 1) / *rows_per_block;
  return dim3(static_cast<unsigned>(g.batch * g.num_patches), static_cast<unsigned>(tiles));
}

}  // namespace

template <typename T>
cudaError_t masked_patch_gather_cuda(const T* x, const int64_t* index, T* out, const PatchGeometry& g,
                                     cudaStream_t stream) {
  if (g.batch * g.num_patches == 0 || g.patch_len() == 0) return cudaSuccess;
  int64_t rows_per_block = 0;
  const dim3 grid = grid_for(g, &rows_per_block);
  gather_kernel<T><<<grid, kThreads, 0, stream>>>(x, index, out, g, rows_per_block);
  return cudaGetLastError();
}

template <typename T>
cudaError_t masked_patch_scatter_cuda(const T* patches, const int64_t* index, T* out, const PatchGeometry& g,
                                      bool accumulate, cudaStream_t stream) {
  if (accumulate && !(std::is_same_v<T, float> || std::is_same_v<T, double>)) return cudaErrorInvalidValue;
  if (g.batch * g.num_patches == 0 || g.patch_len() == 0) return cudaSuccess;
  int64_t rows_per_block = 0;
  const dim3 grid = grid_for(g, &rows_per_block);
  scatter_kernel<T><<<grid, kThreads, 0, stream>>>(patches, index, out, g, rows_per_block, accumulate);
  return cudaGetLastError();
}

#define ANATO_INSTANTIATE(T)                                                                              \
  template cudaError_t masked_patch_gather_cuda<T>(const T*, const int64_t*, T*, const PatchGeometry&,  \
                                                   cudaStream_t);                                         \
  template cudaError_t masked_patch_scatter_cuda<T>(const T*, const int64_t*, T*, const PatchGeometry&, \
                                                    bool, cudaStream_t);
ANATO_INSTANTIATE(float)
ANATO_INSTANTIATE(double)
ANATO_INSTANTIATE(__half)
ANATO_INSTANTIATE(__nv_bfloat16)
#undef ANATO_INSTANTIATE

}  // namespace anatokernels
