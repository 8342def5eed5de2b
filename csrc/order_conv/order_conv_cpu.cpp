// C++/OpenMP order-aware causal depthwise conv, forward and backward. Registered as
//   anatokernels::order_conv1d_fwd_cpu(x, weight, bias, geometry, silu, out)
//   anatokernels::order_conv1d_bwd_cpu(grad, x, weight, bias, geometry, silu, dx, dweight, dbias)
// Each (b, k, d) row is walked in scan order by tiles of whole lines (a line: the n2 steps along the
// order's fastest axis, one native stride apart; a tile: up to 16 lines and 2K steps). A tile is gathered,
// in step order, into a small contiguous buffer after the W-1 steps before it, so the stencil and the
// weight-gradient sums run vectorised on contiguous memory whatever the order. The gather walks whichever
// of (step within a line, next line) is closer in memory, so orders whose fastest axis is not x (e.g.
// "yxz") still read whole cache lines. No permuted copy of a tensor is made. The SiLU and its derivative
// use ATen's vectorised kernels on the whole tensor: an extra pass, but cheaper than a scalar exp per
// element. float/half/bfloat16 accumulate in float, double in double.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "order_conv/order_conv_args.h"

namespace anatokernels {
namespace {

constexpr int64_t kTileSteps = 2048;  // at most this many scan steps per tile (whole lines)...
constexpr int64_t kTileLines = 16;    // ...and at most 16 lines: a cache line of x across lines

// Geometry rows built by Python; checked here because a bad one would read out of bounds.
void check_geometry(const at::Tensor& geometry, int64_t length) {
  const int64_t* g = geometry.const_data_ptr<int64_t>();
  for (int64_t k = 0; k < geometry.size(0); ++k, g += kGeometryInts) {
    TORCH_CHECK(g[0] > 0 && g[1] > 0 && g[2] > 0 && g[3] > 0 && g[4] > 0 && g[5] > 0 &&
                    g[0] * g[1] * g[2] == length &&
                    (g[0] - 1) * g[3] + (g[1] - 1) * g[4] + (g[2] - 1) * g[5] == length - 1,
                "geometry row ", k, " does not describe a scan order of length ", length);
  }
}

// The lines of a scan order in step order: line j holds steps j*n2 .. j*n2+n2-1, at native positions
// first(j) + i*step.
struct LineWalker {
  ScanGeometry g;
  int64_t lines, n2, step, offset;

  explicit LineWalker(const int64_t* geometry)
      : g(ScanGeometry::load(geometry)), lines(g.n0 * g.n1), n2(g.n2), step(g.reverse ? -g.st2 : g.st2),
        offset(g.reverse ? (g.n2 - 1) * g.st2 : 0) {}
  int64_t first(int64_t j) const {
    const int64_t l = g.reverse ? lines - 1 - j : j;
    return (l / g.n1) * g.st0 + (l % g.n1) * g.st1 + offset;
  }
  int64_t tile_lines() const { return std::clamp<int64_t>(kTileSteps / n2, 1, kTileLines); }
  // Lines j0 .. j0+count-1: their first positions, and whether consecutive lines are closer in memory
  // than consecutive steps (then tile loops run over lines innermost).
  bool tile(int64_t j0, int64_t count, int64_t* firsts) const {
    for (int64_t l = 0; l < count; ++l) firsts[l] = first(j0 + l);
    return count > 1 && std::abs(firsts[1] - firsts[0]) < std::abs(step);
  }
};

// dst[l*n + i] = src[(firsts[l] + i*step) * stride] for l < count, i < n: the tile in step order.
template <typename S, typename A>
void gather_tile(const S* src, int64_t stride, const int64_t* firsts, int64_t count, int64_t n, int64_t step,
                 bool lines_inner, A* dst) {
  if (lines_inner) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t l = 0; l < count; ++l) dst[l * n + i] = static_cast<A>(src[(firsts[l] + i * step) * stride]);
  } else {
    for (int64_t l = 0; l < count; ++l)
      for (int64_t i = 0; i < n; ++i) dst[l * n + i] = static_cast<A>(src[(firsts[l] + i * step) * stride]);
  }
}

// dst[firsts[l] + i*step] = src[l*n + i] (dst contiguous rows).
template <typename T, typename A>
void scatter_tile(const A* src, const int64_t* firsts, int64_t count, int64_t n, int64_t step, bool lines_inner,
                  T* dst) {
  if (lines_inner) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t l = 0; l < count; ++l) dst[firsts[l] + i * step] = static_cast<T>(src[l * n + i]);
  } else {
    for (int64_t l = 0; l < count; ++l)
      for (int64_t i = 0; i < n; ++i) dst[firsts[l] + i * step] = static_cast<T>(src[l * n + i]);
  }
}

// Pre-activation into out: out[b,k,d,pi(t)] = bias + sum_m w[m] * x[b,k,d,pi(t-(W-1)+m)]. O is T, or
// the accumulation type for the backward's recomputation.
template <int W, typename T, typename O>
void forward_rows(const T* x, const T* weight, const T* bias, const int64_t* geometry, O* out,
                  const OrderConvShape& s) {
  using A = at::opmath_type<T>;
  const int64_t K = s.orders, D = s.channels, L = s.length;
  at::parallel_for(0, s.batch * K * D, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> xs, ys;
    std::vector<int64_t> firsts;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (K * D), k = (r / D) % K, d = r % D;
      const LineWalker lw(geometry + k * kGeometryInts);
      const int64_t tile_lines = lw.tile_lines();
      xs.assign(tile_lines * lw.n2 + W - 1, A(0));  // [W-1 steps before the tile | the tile]
      ys.resize(tile_lines * lw.n2);
      firsts.resize(tile_lines);
      A w[W];
      for (int m = 0; m < W; ++m) w[m] = static_cast<A>(weight[(k * D + d) * W + m]);
      const A bk = bias ? static_cast<A>(bias[k * D + d]) : A(0);
      const T* xr = x + b * s.x_stride[0] + k * s.x_stride[1] + d * s.x_stride[2];
      for (int64_t j0 = 0; j0 < lw.lines; j0 += tile_lines) {
        const int64_t count = std::min(tile_lines, lw.lines - j0), n = count * lw.n2;
        const bool lines_inner = lw.tile(j0, count, firsts.data());
        gather_tile(xr, s.x_stride[3], firsts.data(), count, lw.n2, lw.step, lines_inner, xs.data() + W - 1);
        const A* xp = xs.data();
        A* yp = ys.data();
#pragma omp simd
        for (int64_t u = 0; u < n; ++u) {
          A acc = bk;
          for (int m = 0; m < W; ++m) acc += w[m] * xp[u + m];
          yp[u] = acc;
        }
        scatter_tile(yp, firsts.data(), count, lw.n2, lw.step, lines_inner, out + r * L);
        std::copy(xs.begin() + n, xs.begin() + n + W - 1, xs.begin());  // the last W-1 steps
      }
    }
  });
}

// dx, dweight, dbias from the pre-activation gradient gpre (B, K, D, L) contiguous, of type G:
//   dx[u] = sum_m w[m] * gpre[u+W-1-m],  dweight[m] = sum_u gpre[u] * x[u-(W-1)+m],  dbias = sum_u gpre[u]
// (u in step order). Parallel over (k, d) so that each thread owns its dweight/dbias entries (sums in a
// fixed order); each tile also gathers gpre at the W-1 steps after it.
template <int W, typename T, typename G, typename A2>
void backward_rows(const G* gpre, const T* x, const T* weight, const int64_t* geometry, T* dx, A2* dweight,
                   A2* dbias, const OrderConvShape& s) {
  using A = at::opmath_type<T>;
  const int64_t K = s.orders, D = s.channels, L = s.length, xl = s.x_stride[3];
  at::parallel_for(0, K * D, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> xs, gs, ds;
    std::vector<int64_t> firsts;
    for (int64_t kd = begin; kd < end; ++kd) {
      const int64_t k = kd / D;
      const LineWalker lw(geometry + k * kGeometryInts);
      const int64_t tile_lines = lw.tile_lines();
      xs.resize(tile_lines * lw.n2 + W - 1);  // [W-1 steps before the tile | the tile]
      gs.resize(tile_lines * lw.n2 + W - 1);  // [the tile | W-1 steps after it]
      ds.resize(tile_lines * lw.n2);
      firsts.resize(tile_lines);
      A w[W];
      for (int m = 0; m < W; ++m) w[m] = static_cast<A>(weight[kd * W + m]);
      double total_dw[W] = {}, total_db = 0;
      for (int64_t b = 0; b < s.batch; ++b) {
        const int64_t row_offset = (b * K * D + kd) * L;
        const T* xr = x + b * s.x_stride[0] + k * s.x_stride[1] + (kd % D) * s.x_stride[2];
        const G* gr = gpre + row_offset;
        std::fill(xs.begin(), xs.begin() + W - 1, A(0));
        for (int64_t j0 = 0; j0 < lw.lines; j0 += tile_lines) {
          const int64_t count = std::min(tile_lines, lw.lines - j0), n = count * lw.n2;
          const bool lines_inner = lw.tile(j0, count, firsts.data());
          gather_tile(xr, xl, firsts.data(), count, lw.n2, lw.step, lines_inner, xs.data() + W - 1);
          gather_tile(gr, 1, firsts.data(), count, lw.n2, lw.step, lines_inner, gs.data());
          for (int a = 0; a < W - 1; ++a) {
            const int64_t t = (j0 + count) * lw.n2 + a;
            gs[n + a] = t < L ? static_cast<A>(gr[lw.g.native(t)]) : A(0);
          }
          const A* xp = xs.data();
          const A* gp = gs.data();
          A* dp = ds.data();
          A dw[W] = {}, db = 0;
#pragma omp simd reduction(+ : db, dw[:W])
          for (int64_t u = 0; u < n; ++u) {
            const A gu = gp[u];
            db += gu;
            A acc = 0;
            for (int m = 0; m < W; ++m) {
              dw[m] += gu * xp[u + m];
              acc += w[m] * gp[u + W - 1 - m];
            }
            dp[u] = acc;
          }
          total_db += db;
          for (int m = 0; m < W; ++m) total_dw[m] += dw[m];
          scatter_tile(dp, firsts.data(), count, lw.n2, lw.step, lines_inner, dx + row_offset);
          std::copy(xs.begin() + n, xs.begin() + n + W - 1, xs.begin());  // the last W-1 steps
        }
      }
      for (int m = 0; m < W; ++m) dweight[kd * W + m] = static_cast<A2>(total_dw[m]);
      dbias[kd] = static_cast<A2>(total_db);
    }
  });
}

template <typename Fn>
void dispatch_width(int64_t width, Fn&& fn) {
  switch (width) {
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    default: TORCH_CHECK(false, "conv width must be in [2, 4], got ", width);
  }
}

template <typename O>
void pre_activation(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                    const at::Tensor& geometry, const OrderConvShape& s, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "order_conv1d_fwd_cpu", [&] {
    using Out = std::conditional_t<std::is_same_v<O, void>, scalar_t, O>;
    dispatch_width(s.width, [&](auto w) {
      forward_rows<decltype(w)::value, scalar_t, Out>(
          x.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
          bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr, geometry.const_data_ptr<int64_t>(),
          out.mutable_data_ptr<Out>(), s);
    });
  });
}

void order_conv1d_fwd_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                          const at::Tensor& geometry, bool silu, at::Tensor& out) {
  const OrderConvShape s = order_conv_shape(x, weight, bias, geometry, {&out}, at::kCPU);
  check_geometry(geometry, s.length);
  if (x.numel() == 0) return;
  if (silu && (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16)) {
    at::Tensor pre = at::empty(x.sizes(), x.options().dtype(at::kFloat));  // SiLU of the float pre-activation
    pre_activation<float>(x, weight, bias, geometry, s, pre);
    out.copy_(at::silu_(pre));
    return;
  }
  pre_activation<void>(x, weight, bias, geometry, s, out);
  if (silu) at::silu_(out);
}

void order_conv1d_bwd_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const at::Tensor& geometry, bool silu,
                          at::Tensor& dx, at::Tensor& dweight, at::Tensor& dbias) {
  const OrderConvShape s = order_conv_shape(x, weight, bias, geometry, {&grad, &dx}, at::kCPU);
  check_weight_grads(x, weight, dweight, dbias, at::kCPU);
  check_geometry(geometry, s.length);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "order_conv1d_bwd_cpu", [&] {
    using A = at::opmath_type<scalar_t>;
    using A2 = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    at::Tensor gpre = grad;
    if (silu && x.numel() > 0) {  // gpre = grad * silu'(pre), pre recomputed in the accumulation type
      at::Tensor pre = at::empty(x.sizes(), x.options().dtype(c10::CppTypeToScalarType<A>::value));
      pre_activation<A>(x, weight, bias, geometry, s, pre);
      gpre = at::silu_backward_out(pre, grad.to(pre.scalar_type()), pre);  // in place: one buffer
    }
    dispatch_width(s.width, [&](auto w) {
      const int64_t* geo = geometry.const_data_ptr<int64_t>();
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      const scalar_t* wp = weight.const_data_ptr<scalar_t>();
      scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
      if (gpre.scalar_type() == x.scalar_type()) {
        backward_rows<decltype(w)::value, scalar_t, scalar_t, A2>(gpre.const_data_ptr<scalar_t>(), xp, wp, geo,
                                                                  dxp, dweight.mutable_data_ptr<A2>(),
                                                                  dbias.mutable_data_ptr<A2>(), s);
      } else {
        backward_rows<decltype(w)::value, scalar_t, A, A2>(gpre.const_data_ptr<A>(), xp, wp, geo, dxp,
                                                           dweight.mutable_data_ptr<A2>(),
                                                           dbias.mutable_data_ptr<A2>(), s);
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(anatokernels, m) {
  m.def("order_conv1d_fwd_cpu(Tensor x, Tensor weight, Tensor? bias, Tensor geometry, bool silu, "
        "Tensor(a!) out) -> ()",
        &order_conv1d_fwd_cpu);
  m.def("order_conv1d_bwd_cpu(Tensor grad, Tensor x, Tensor weight, Tensor? bias, Tensor geometry, bool silu, "
        "Tensor(a!) dx, Tensor(b!) dweight, Tensor(c!) dbias) -> ()",
        &order_conv1d_bwd_cpu);
}

}  // namespace anatokernels
