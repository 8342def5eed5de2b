// CUDA multi-order selective scan, forward and backward (plain CUDA, no ATen).
//
// One block of 128 threads scans one (b, k, d) row over the whole sequence, chunk by chunk; a chunk is
// 128 x 4 steps, thread i holding steps 4i..4i+3 of it. For each state n the block runs a scan over
// (a, b) pairs, h_t = a_t·h_{t-1} + b_t: each thread composes its 4 pairs, a warp-shuffle scan and a
// scan over the 4 warp totals give each thread the composition of the steps before it, and the carry
// from the previous chunk (kept per n in shared memory) enters through that composition. Step t of
// order k reads and writes native position π_k(t), no permuted copy: 32-bit order digits (order_digits.h),
// divided once per block, then advanced by a chunk, a thread offset and a step per item, division-free.
//
// The forward writes the state before each chunk (the checkpoints). The backward walks the chunks in
// reverse: it recomputes the states of a chunk from its checkpoint, then runs the reverse scan
// dh_t = a_{t+1}·dh_{t+1} + g_t·C_t with the state gradient carried from the next chunk. dB and dC
// (summed over the channels of a group) use atomics; dA, dD and dbias are reduced in the block and
// written per sample (the caller sums over the batch). All offsets are int64; accumulation in acc_t.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "order_digits.h"
#include "selective_scan/selective_scan_cuda.h"

namespace anatokernels {
namespace {

constexpr int kThreads = 128;
constexpr int kItems = 4;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;
static_assert(kThreads * kItems == kScanCudaChunk, "chunk = threads x items");

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(float v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16(v);
  } else {
    return static_cast<T>(v);
  }
}

template <typename T>
__device__ __forceinline__ T from_acc(double v) {
  return static_cast<T>(v);
}

__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
__device__ __forceinline__ double softplus(double x) { return x > 20.0 ? x : log1p(exp(x)); }
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float exp_acc(float x) { return expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }

// x -> a·x + b. compose(first, second) applies first, then second.
template <typename acc_t>
struct Affine {
  acc_t a, b;
};

template <typename acc_t>
__device__ __forceinline__ Affine<acc_t> compose(Affine<acc_t> first, Affine<acc_t> second) {
  return {first.a * second.a, second.a * first.b + second.b};
}

template <typename acc_t>
__device__ __forceinline__ Affine<acc_t> shfl_up(Affine<acc_t> v, int offset) {
  return {__shfl_up_sync(kFullMask, v.a, offset), __shfl_up_sync(kFullMask, v.b, offset)};
}

template <typename acc_t>
__device__ __forceinline__ Affine<acc_t> shfl_down(Affine<acc_t> v, int offset) {
  return {__shfl_down_sync(kFullMask, v.a, offset), __shfl_down_sync(kFullMask, v.b, offset)};
}

// The composition of the aggregates of all threads before this one (thread order), identity for thread 0.
template <typename acc_t>
__device__ Affine<acc_t> block_exclusive_scan(Affine<acc_t> aggregate, Affine<acc_t>* warp_totals) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  Affine<acc_t> inclusive = aggregate;
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    const Affine<acc_t> up = shfl_up(inclusive, offset);
    if (lane >= offset) inclusive = compose(up, inclusive);
  }
  if (lane == 31) warp_totals[warp] = inclusive;
  const Affine<acc_t> before_lane = shfl_up(inclusive, 1);
  __syncthreads();
  Affine<acc_t> prefix{acc_t(1), acc_t(0)};
  for (int w = 0; w < warp; ++w) prefix = compose(prefix, warp_totals[w]);
  __syncthreads();  // warp_totals is reused by the next scan
  return lane == 0 ? prefix : compose(prefix, before_lane);
}

// The composition of the aggregates of all threads after this one, the last thread's applied first.
template <typename acc_t>
__device__ Affine<acc_t> block_exclusive_reverse_scan(Affine<acc_t> aggregate, Affine<acc_t>* warp_totals) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  Affine<acc_t> inclusive = aggregate;
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    const Affine<acc_t> down = shfl_down(inclusive, offset);
    if (lane + offset < 32) inclusive = compose(down, inclusive);
  }
  if (lane == 0) warp_totals[warp] = inclusive;
  const Affine<acc_t> after_lane = shfl_down(inclusive, 1);
  __syncthreads();
  Affine<acc_t> suffix{acc_t(1), acc_t(0)};
  for (int w = kWarps - 1; w > warp; --w) suffix = compose(suffix, warp_totals[w]);
  __syncthreads();
  return lane == 31 ? suffix : compose(suffix, after_lane);
}

template <typename acc_t>
__device__ acc_t block_sum(acc_t v, acc_t* scratch) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  acc_t total = 0;
  for (int w = 0; w < kWarps; ++w) total += scratch[w];
  __syncthreads();
  return total;
}

// The row (b, k, d) of this block and the per-row pointers shared by forward and backward.
template <typename T, typename acc_t>
struct Row {
  int64_t b, k, d, index, group;
  OrderDigits order;
  const T* u;
  const T* delta;
  const T* B;
  const T* C;
  const T* z;
  const acc_t* A;
  acc_t bias, skip;

  __device__ Row(const ScanShape& s, const ScanInputs<T, acc_t>& in, int64_t row)
      : b(int32_t(row) / int32_t(s.orders * s.dim)), k(int32_t(row) / int32_t(s.dim) % int32_t(s.orders)),
        d(int32_t(row) % int32_t(s.dim)), index(row),
        group(int32_t(d) / (int32_t(s.dim) / int32_t(s.groups))),
        order(OrderDigits::load(in.geometry + 7 * k)),
        u(in.u + b * in.u_stride[0] + k * in.u_stride[1] + d * in.u_stride[2]),
        delta(in.delta + b * in.delta_stride[0] + k * in.delta_stride[1] + d * in.delta_stride[2]),
        B(in.B + b * in.B_stride[0] + k * in.B_stride[1] + group * in.B_stride[2]),
        C(in.C + b * in.C_stride[0] + k * in.C_stride[1] + group * in.C_stride[2]),
        z(in.z != nullptr ? in.z + b * in.z_stride[0] + d * in.z_stride[1] : nullptr),
        A(in.A + (k * s.dim + d) * s.n_state),
        bias(in.bias != nullptr ? in.bias[k * s.dim + d] : acc_t(0)),
        skip(in.D != nullptr ? in.D[k * s.dim + d] : acc_t(0)) {}
};

// δ after bias (x) and softplus (returned) at native position pos.
template <typename T, typename acc_t>
__device__ __forceinline__ acc_t load_delta(const Row<T, acc_t>& row, const ScanInputs<T, acc_t>& in, int64_t pos,
                                            bool use_softplus, acc_t* x) {
  *x = to_acc(row.delta[pos * in.delta_stride[3]]) + row.bias;
  return use_softplus ? softplus(*x) : *x;
}

template <typename T, typename acc_t>
__global__ void __launch_bounds__(kThreads) forward_kernel(ScanForwardArgs<T, acc_t> args) {
  const ScanShape s = args.shape;
  const ScanInputs<T, acc_t>& in = args.in;
  const Row<T, acc_t> row(s, in, blockIdx.x);
  __shared__ Affine<acc_t> warp_totals[kWarps];
  extern __shared__ unsigned char shared_raw[];
  acc_t* state = reinterpret_cast<acc_t*>(shared_raw);  // (N,): the state before the current chunk
  for (int64_t n = threadIdx.x; n < s.n_state; n += kThreads) state[n] = 0;
  __syncthreads();
  const int64_t N = s.n_state, L = s.length;
  Digits chunk_start = row.order.of_step(0);
  for (int64_t c = 0; c < s.n_chunks; ++c) {
    for (int64_t n = threadIdx.x; n < N; n += kThreads) {
      args.checkpoints[(row.index * s.n_chunks + c) * N + n] = state[n];
    }
    int64_t pos[kItems];
    bool valid[kItems];
    acc_t u[kItems], dt[kItems], y[kItems];
    Digits item = row.order.advance(chunk_start, threadIdx.x * kItems);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      if (i > 0) item = row.order.next(item);
      valid[i] = row.order.valid(item);
      pos[i] = valid[i] ? row.order.position(item) : 0;
      acc_t x;
      u[i] = valid[i] ? to_acc(row.u[pos[i] * in.u_stride[3]]) : acc_t(0);
      dt[i] = valid[i] ? load_delta(row, in, pos[i], s.softplus, &x) : acc_t(0);  // δ = 0: a = 1, b = 0
      y[i] = 0;
    }
    for (int64_t n = 0; n < N; ++n) {
      const acc_t A_n = row.A[n];
      const T* B_n = row.B + n * in.B_stride[3];
      const T* C_n = row.C + n * in.C_stride[3];
      Affine<acc_t> step[kItems];
      Affine<acc_t> aggregate{acc_t(1), acc_t(0)};
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const acc_t Bv = valid[i] ? to_acc(B_n[pos[i] * in.B_stride[4]]) : acc_t(0);
        step[i] = {exp_acc(dt[i] * A_n), dt[i] * u[i] * Bv};
        aggregate = compose(aggregate, step[i]);
      }
      const acc_t carry = state[n];  // read before the scan's barrier; the last thread rewrites it after
      const Affine<acc_t> before = block_exclusive_scan(aggregate, warp_totals);
      acc_t h = before.a * carry + before.b;
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        h = step[i].a * h + step[i].b;
        if (valid[i]) y[i] += to_acc(C_n[pos[i] * in.C_stride[4]]) * h;
      }
      if (threadIdx.x == kThreads - 1) state[n] = h;  // padding steps keep h: the state after the chunk
    }
    acc_t* out = args.out + (row.b * s.dim + row.d) * L;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      if (!valid[i]) continue;
      acc_t v = y[i] + row.skip * u[i];
      if (row.z != nullptr) {
        const acc_t zv = to_acc(row.z[pos[i] * in.z_stride[2]]);
        v *= zv * sigmoid(zv);
      }
      if (s.orders > 1) {
        atomicAdd(out + pos[i], v);
      } else {
        out[pos[i]] = v;
      }
    }
    __syncthreads();  // state[] of this chunk is read by the next one
    chunk_start = row.order.advance(chunk_start, kScanCudaChunk);
  }
  for (int64_t n = threadIdx.x; n < s.n_state; n += kThreads) args.last[row.index * s.n_state + n] = state[n];
}

template <typename T, typename acc_t>
__global__ void __launch_bounds__(kThreads) backward_kernel(ScanBackwardArgs<T, acc_t> args) {
  const ScanShape s = args.shape;
  const ScanInputs<T, acc_t>& in = args.in;
  const Row<T, acc_t> row(s, in, blockIdx.x);
  __shared__ Affine<acc_t> warp_totals[kWarps];
  __shared__ acc_t reduce_scratch[kWarps];
  extern __shared__ unsigned char shared_raw[];
  const int64_t N = s.n_state, L = s.length;
  acc_t* dh_carry = reinterpret_cast<acc_t*>(shared_raw);  // (N,): dL/dh at the first step after the chunk
  acc_t* dA_sum = dh_carry + N;                              // (N,)
  for (int64_t n = threadIdx.x; n < N; n += kThreads) {
    dh_carry[n] = args.dlast[row.index * N + n];
    dA_sum[n] = 0;
  }
  __syncthreads();
  acc_t dD_local = 0, dbias_local = 0;
  const T* dout = args.dout + row.b * args.dout_stride[0] + row.d * args.dout_stride[1];
  const int64_t dbc_row = ((row.b * s.orders + row.k) * s.groups + row.group) * N * L;
  Digits chunk_start = row.order.of_step(static_cast<int32_t>((s.n_chunks - 1) * kScanCudaChunk));
  for (int64_t c = s.n_chunks - 1; c >= 0; --c) {
    int64_t pos[kItems];
    bool valid[kItems];
    acc_t u[kItems], x[kItems], dt[kItems], dt_next[kItems], go[kItems], g[kItems], zv[kItems];
    acc_t du[kItems], ddt[kItems], y[kItems];
    Digits item = row.order.advance(chunk_start, threadIdx.x * kItems);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      if (i > 0) item = row.order.next(item);
      valid[i] = row.order.valid(item);
      pos[i] = valid[i] ? row.order.position(item) : 0;
      u[i] = valid[i] ? to_acc(row.u[pos[i] * in.u_stride[3]]) : acc_t(0);
      x[i] = 0;
      dt[i] = valid[i] ? load_delta(row, in, pos[i], s.softplus, &x[i]) : acc_t(0);
      go[i] = valid[i] ? to_acc(dout[pos[i] * args.dout_stride[2]]) : acc_t(0);
      zv[i] = valid[i] && row.z != nullptr ? to_acc(row.z[pos[i] * in.z_stride[2]]) : acc_t(0);
      g[i] = row.z != nullptr ? go[i] * zv[i] * sigmoid(zv[i]) : go[i];  // dL/dy of this order
      du[i] = ddt[i] = y[i] = 0;
    }
    // δ of the step after each item: the decay a_{t+1} of the reverse recurrence (δ = 0, a = 1, past L)
#pragma unroll
    for (int i = 0; i + 1 < kItems; ++i) dt_next[i] = dt[i + 1];
    {
      const Digits after = row.order.next(item);  // the step after this thread's last item
      acc_t unused;
      dt_next[kItems - 1] = row.order.valid(after) ? load_delta(row, in, row.order.position(after), s.softplus,
                                                                &unused) : acc_t(0);
    }
    for (int64_t n = 0; n < N; ++n) {
      const acc_t A_n = row.A[n];
      const T* B_n = row.B + n * in.B_stride[3];
      const T* C_n = row.C + n * in.C_stride[3];
      acc_t Bv[kItems], Cv[kItems], a[kItems], h[kItems], h_prev[kItems];
      Affine<acc_t> aggregate{acc_t(1), acc_t(0)};
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        Bv[i] = valid[i] ? to_acc(B_n[pos[i] * in.B_stride[4]]) : acc_t(0);
        Cv[i] = valid[i] ? to_acc(C_n[pos[i] * in.C_stride[4]]) : acc_t(0);
        a[i] = exp_acc(dt[i] * A_n);
        aggregate = compose(aggregate, Affine<acc_t>{a[i], dt[i] * u[i] * Bv[i]});
      }
      // recompute the states of this chunk from its checkpoint
      const acc_t h0 = args.checkpoints[(row.index * s.n_chunks + c) * N + n];
      const Affine<acc_t> before = block_exclusive_scan(aggregate, warp_totals);
      acc_t state = before.a * h0 + before.b;
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        h_prev[i] = state;
        state = a[i] * state + dt[i] * u[i] * Bv[i];
        h[i] = state;
        y[i] += Cv[i] * state;
      }
      // dh_t = a_{t+1}·dh_{t+1} + g_t·C_t, walked from the chunk's end
      Affine<acc_t> reverse_aggregate{acc_t(1), acc_t(0)};
#pragma unroll
      for (int i = kItems - 1; i >= 0; --i) {
        reverse_aggregate = compose(reverse_aggregate, Affine<acc_t>{exp_acc(dt_next[i] * A_n), g[i] * Cv[i]});
      }
      const acc_t carry = dh_carry[n];  // read before the scan's barrier; thread 0 rewrites it after
      const Affine<acc_t> after = block_exclusive_reverse_scan(reverse_aggregate, warp_totals);
      acc_t dh = after.a * carry + after.b;
      acc_t dA_local = 0;
#pragma unroll
      for (int i = kItems - 1; i >= 0; --i) {
        dh = exp_acc(dt_next[i] * A_n) * dh + g[i] * Cv[i];
        const acc_t decayed_prev = a[i] * h_prev[i];  // a_t h_{t-1}
        if (valid[i]) {
          atomicAdd(args.dB + dbc_row + n * L + pos[i], dh * dt[i] * u[i]);
          atomicAdd(args.dC + dbc_row + n * L + pos[i], g[i] * h[i]);
        }
        du[i] += dh * dt[i] * Bv[i];
        ddt[i] += dh * (Bv[i] * u[i] + A_n * decayed_prev);
        dA_local += dh * dt[i] * decayed_prev;
      }
      if (threadIdx.x == 0) dh_carry[n] = dh;
      const acc_t dA_chunk = block_sum(dA_local, reduce_scratch);
      if (threadIdx.x == 0) dA_sum[n] += dA_chunk;
    }
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      if (!valid[i]) continue;
      const int64_t at = row.index * L + pos[i];
      args.du[at] = from_acc<T>(du[i] + row.skip * g[i]);
      const acc_t grad_x = s.softplus ? (x[i] > acc_t(20) ? ddt[i] : ddt[i] * sigmoid(x[i])) : ddt[i];
      args.ddelta[at] = from_acc<T>(grad_x);
      dbias_local += grad_x;
      dD_local += g[i] * u[i];
      if (row.z != nullptr) {
        const acc_t sig = sigmoid(zv[i]);
        const acc_t v = go[i] * (y[i] + row.skip * u[i]) * sig * (acc_t(1) + zv[i] * (acc_t(1) - sig));
        acc_t* dz = args.dz + (row.b * s.dim + row.d) * L + pos[i];
        if (s.orders > 1) {
          atomicAdd(dz, v);
        } else {
          *dz = v;
        }
      }
    }
    __syncthreads();  // dh_carry of this chunk is read by the previous one
    chunk_start = row.order.advance(chunk_start, -kScanCudaChunk);
  }
  for (int64_t n = threadIdx.x; n < N; n += kThreads) args.dA_partial[row.index * N + n] = dA_sum[n];
  const acc_t dD_total = block_sum(dD_local, reduce_scratch);
  const acc_t dbias_total = block_sum(dbias_local, reduce_scratch);
  if (threadIdx.x == 0) {
    if (args.dD_partial != nullptr) args.dD_partial[row.index] = dD_total;
    if (args.dbias_partial != nullptr) args.dbias_partial[row.index] = dbias_total;
  }
}

}  // namespace

template <typename T, typename acc_t>
cudaError_t selective_scan3d_fwd_cuda(const ScanForwardArgs<T, acc_t>& args, cudaStream_t stream) {
  const int64_t rows = args.shape.batch * args.shape.orders * args.shape.dim;
  if (rows == 0 || args.shape.length == 0) return cudaSuccess;
  const size_t shared = static_cast<size_t>(args.shape.n_state) * sizeof(acc_t);
  forward_kernel<T, acc_t><<<static_cast<unsigned>(rows), kThreads, shared, stream>>>(args);
  return cudaGetLastError();
}

template <typename T, typename acc_t>
cudaError_t selective_scan3d_bwd_cuda(const ScanBackwardArgs<T, acc_t>& args, cudaStream_t stream) {
  const int64_t rows = args.shape.batch * args.shape.orders * args.shape.dim;
  if (rows == 0 || args.shape.length == 0) return cudaSuccess;
  const size_t shared = 2 * static_cast<size_t>(args.shape.n_state) * sizeof(acc_t);
  backward_kernel<T, acc_t><<<static_cast<unsigned>(rows), kThreads, shared, stream>>>(args);
  return cudaGetLastError();
}

#define ANATO_INSTANTIATE(T, ACC)                                                                          \
  template cudaError_t selective_scan3d_fwd_cuda<T, ACC>(const ScanForwardArgs<T, ACC>&, cudaStream_t);  \
  template cudaError_t selective_scan3d_bwd_cuda<T, ACC>(const ScanBackwardArgs<T, ACC>&, cudaStream_t);
ANATO_INSTANTIATE(float, float)
ANATO_INSTANTIATE(double, double)
ANATO_INSTANTIATE(__half, float)
ANATO_INSTANTIATE(__nv_bfloat16, float)
#undef ANATO_INSTANTIATE

}  // namespace anatokernels
