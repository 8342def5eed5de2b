// CUDA masked 3D patch gather / scatter(-add). One block moves a tile of rows (c, i, j) of one (b, m) patch;
// consecutive threads touch consecutive voxels of a row, so reads and writes are coalesced.
// Division-free element loop: a block first writes the volume offset of each of its rows to shared memory (32-bit
// divisions per row, none per element), then each thread walks its elements kThreads apart with a row counter and
// a within-row counter. Only the volume and patch offsets are 64-bit (a volume may exceed 2^31 elements).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>

#include "masked_patch/masked_patch_cuda.h"

namespace anatokernels {
namespace {

constexpr int kThreads = 256;
constexpr int kElementsPerBlock = 4096;

// One call's 32-bit sizes (the launcher checks that they fit): the patch grid's GW, GH, the patch (pd, ph, pw), the
// rows (c, i, j) of a patch, the rows of a tile, and the step of a thread through a tile: kThreads elements are
// step_rows rows and step_k voxels.
struct Tile {
  uint32_t grid_w, grid_h, pd, ph, pw, num_patches, rows, rows_per_block, step_rows, step_k;
};

// n / d and n % d (d >= 1) without the 64-bit division routine: 32-bit division when n < 2^32 (every patch id of a
// sample with fewer than 2^32 patches), else binary long division (the remainder stays below 2d < 2^33).
__device__ uint64_t divide(uint64_t n, uint32_t d, uint32_t* rem) {
  if (n >> 32 == 0) {
    const uint32_t m = static_cast<uint32_t>(n);
    *rem = m % d;
    return m / d;
  }
  uint64_t q = 0, r = 0;
#pragma unroll 1
  for (int bit = 63; bit >= 0; --bit) {
    r = r << 1 | (n >> bit & 1);
    if (r >= d) {
      r -= d;
      q |= uint64_t{1} << bit;
    }
  }
  *rem = static_cast<uint32_t>(r);
  return q;
}

// The block's tile: fills offset[rr] with the volume offset of voxel (c, i, j, 0) of row row0 + rr of patch
// index[bm] (shared memory, then a barrier) and returns the tile's first row and row count.
__device__ void tile_rows(const int64_t* index, const PatchGeometry& g, const Tile& t, int64_t* offset,
                          uint32_t* row0, uint32_t* rows) {
  const uint32_t bm = blockIdx.x, b = bm / t.num_patches;
  uint32_t gw, gh;
  const uint64_t gd = divide(divide(static_cast<uint64_t>(index[bm]), t.grid_w, &gw), t.grid_h, &gh);
  const int64_t base = b * g.stride[0] + static_cast<int64_t>(gd) * t.pd * g.stride[2] +
                       static_cast<int64_t>(gh) * t.ph * g.stride[3] + static_cast<int64_t>(gw) * t.pw * g.stride[4];
  *row0 = blockIdx.y * t.rows_per_block;
  *rows = min(t.rows_per_block, t.rows - *row0);
  for (uint32_t rr = threadIdx.x; rr < *rows; rr += kThreads) {
    const uint32_t r = *row0 + rr, ci = r / t.ph, j = r - ci * t.ph, c = ci / t.pd, i = ci - c * t.pd;
    offset[rr] = base + c * g.stride[1] + i * g.stride[2] + j * g.stride[3];
  }
  __syncthreads();
}

// A thread's walk through a tile of `rows` rows: element threadIdx.x + m·kThreads = rr·pw + k at its step m.
struct Walk {
  uint32_t rr, k;
  __device__ Walk(const Tile& t) : rr(threadIdx.x / t.pw), k(threadIdx.x - rr * t.pw) {}
  __device__ void next(const Tile& t) {
    k += t.step_k;
    rr += t.step_rows;
    if (k >= t.pw) {
      k -= t.pw;
      ++rr;
    }
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) gather_kernel(const T* __restrict__ x, const int64_t* __restrict__ index,
                                                         T* __restrict__ out, PatchGeometry g, Tile t) {
  extern __shared__ int64_t offset[];
  uint32_t row0, rows;
  tile_rows(index, g, t, offset, &row0, &rows);
  T* dst = out + (static_cast<int64_t>(blockIdx.x) * t.rows + row0) * t.pw + threadIdx.x;
  for (Walk w(t); w.rr < rows; w.next(t), dst += kThreads) *dst = x[offset[w.rr] + w.k * g.stride[4]];
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    scatter_kernel(const T* __restrict__ patches, const int64_t* __restrict__ index, T* __restrict__ out,
                   PatchGeometry g, Tile t, bool accumulate) {
  extern __shared__ int64_t offset[];
  uint32_t row0, rows;
  tile_rows(index, g, t, offset, &row0, &rows);
  const T* src = patches + (static_cast<int64_t>(blockIdx.x) * t.rows + row0) * t.pw + threadIdx.x;
  for (Walk w(t); w.rr < rows; w.next(t), src += kThreads) {
    T* dst = out + offset[w.rr] + w.k * g.stride[4];
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      if (accumulate) {
        atomicAdd(dst, *src);
        continue;
      }
    }
    *dst = *src;
  }
}

// The launch of one call: its tile sizes, grid and shared memory (one int64 offset per row of a tile); false when a
// size does not fit the kernels' 32-bit arithmetic or the grid.
bool plan(const PatchGeometry& g, Tile* t, dim3* grid, size_t* smem) {
  const int64_t sizes[] = {g.grid_w, g.grid_h, g.pd, g.ph, g.pw, g.num_patches, g.rows(), g.batch * g.num_patches};
  for (const int64_t s : sizes) {
    if (s > INT_MAX) return false;
  }
  if (g.grid_w < 1 || g.grid_h < 1) return false;  // no patch: every index would be out of range
  const int64_t rows_per_block = g.pw >= kElementsPerBlock ? 1 : kElementsPerBlock / g.pw;
  const int64_t tiles = (g.rows() + rows_per_block - 1) / rows_per_block;
  if (tiles > 65535) return false;
  *t = Tile{static_cast<uint32_t>(g.grid_w), static_cast<uint32_t>(g.grid_h), static_cast<uint32_t>(g.pd),
            static_cast<uint32_t>(g.ph), static_cast<uint32_t>(g.pw), static_cast<uint32_t>(g.num_patches),
            static_cast<uint32_t>(g.rows()), static_cast<uint32_t>(rows_per_block),
            static_cast<uint32_t>(kThreads / g.pw), static_cast<uint32_t>(kThreads % g.pw)};
  *grid = dim3(static_cast<unsigned>(g.batch * g.num_patches), static_cast<unsigned>(tiles));
  *smem = static_cast<size_t>(rows_per_block) * sizeof(int64_t);
  return true;
}

}  // namespace

template <typename T>
cudaError_t masked_patch_gather_cuda(const T* x, const int64_t* index, T* out, const PatchGeometry& g,
                                     cudaStream_t stream) {
  if (g.batch * g.num_patches == 0 || g.patch_len() == 0) return cudaSuccess;
  Tile t;
  dim3 grid;
  size_t smem;
  if (!plan(g, &t, &grid, &smem)) return cudaErrorInvalidValue;
  gather_kernel<T><<<grid, kThreads, smem, stream>>>(x, index, out, g, t);
  return cudaGetLastError();
}

template <typename T>
cudaError_t masked_patch_scatter_cuda(const T* patches, const int64_t* index, T* out, const PatchGeometry& g,
                                      bool accumulate, cudaStream_t stream) {
  if (accumulate && !(std::is_same_v<T, float> || std::is_same_v<T, double>)) return cudaErrorInvalidValue;
  if (g.batch * g.num_patches == 0 || g.patch_len() == 0) return cudaSuccess;
  Tile t;
  dim3 grid;
  size_t smem;
  if (!plan(g, &t, &grid, &smem)) return cudaErrorInvalidValue;
  scatter_kernel<T><<<grid, kThreads, smem, stream>>>(patches, index, out, g, t, accumulate);
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
