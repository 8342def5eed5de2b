// 32-bit, division-free scan-order position math for the CUDA kernels (plain C++, host and device).
//
// A scan step is held as its order digits (c0, c1, c2), slowest first, of the unreversed index
// s = reverse ? L-1-t : t, so native(t) = c0*st0 + c1*st1 + c2*st2. A block divides once to find the
// digits of one start (a chunk's first step, a tile's first native position); every element is then
// reached by a small mixed-radix addition whose carries are quotients of small numbers, computed with an
// fp32 reciprocal and one exact integer correction (SmallDiv), not an integer division. Positions inside
// one volume are below 2^31 (the Python side checks L < 2^31); offsets into tensors stay int64.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define ANATO_DIGITS_HD __host__ __device__ __forceinline__
#else
#define ANATO_DIGITS_HD inline
#endif

namespace anatokernels {

// floor(x / n) and x - n*floor(x / n) for n >= 1, exact while |x / n| < 2^20 (x itself any int32).
struct SmallDiv {
  int32_t n;
  float inv;

  ANATO_DIGITS_HD static SmallDiv of(int32_t n) { return SmallDiv{n, 1.0f / static_cast<float>(n)}; }
  ANATO_DIGITS_HD int32_t divmod(int32_t x, int32_t* rem) const {
    int32_t q = static_cast<int32_t>(floorf(static_cast<float>(x) * inv));
    int32_t r = x - q * n;
    if (r >= n) {
      ++q;
      r -= n;
    } else if (r < 0) {
      --q;
      r += n;
    }
    *rem = r;
    return q;
  }
};

struct Digits {
  int32_t c0, c1, c2;
};

struct OrderDigits {
  int32_t n0, n1, n2, st0, st1, st2, length;
  bool reverse;
  SmallDiv div1, div2;

  // row: the order's 7 int64 (n0, n1, n2, st0, st1, st2, reverse)
  ANATO_DIGITS_HD static OrderDigits load(const int64_t* g) {
    const int32_t n0 = static_cast<int32_t>(g[0]), n1 = static_cast<int32_t>(g[1]), n2 = static_cast<int32_t>(g[2]);
    return OrderDigits{n0, n1, n2, static_cast<int32_t>(g[3]), static_cast<int32_t>(g[4]),
                       static_cast<int32_t>(g[5]), n0 * n1 * n2, g[6] != 0, SmallDiv::of(n1), SmallDiv::of(n2)};
  }
  // Digits of step t, 0 <= t < L: integer divisions, once per block.
  ANATO_DIGITS_HD Digits of_step(int32_t t) const {
    const int32_t s = reverse ? length - 1 - t : t;
    const int32_t q = s / n2;
    return Digits{q / n1, q % n1, s % n2};
  }
  // Digits of step t + delta from those of step t, |delta| small (a chunk): division-free. The result is
  // outside the volume (see valid) when t + delta is outside [0, L).
  ANATO_DIGITS_HD Digits advance(Digits c, int32_t delta) const {
    int32_t r2, r1;
    const int32_t q2 = div2.divmod(c.c2 + (reverse ? -delta : delta), &r2);
    const int32_t q1 = div1.divmod(c.c1 + q2, &r1);
    return Digits{c.c0 + q1, r1, r2};
  }
  // Digits of step t + 1 from those of step t: a counter with carries, no division.
  ANATO_DIGITS_HD Digits next(Digits c) const {
    if (!reverse) {
      if (++c.c2 == n2) {
        c.c2 = 0;
        if (++c.c1 == n1) {
          c.c1 = 0;
          ++c.c0;
        }
      }
    } else if (--c.c2 < 0) {
      c.c2 = n2 - 1;
      if (--c.c1 < 0) {
        c.c1 = n1 - 1;
        --c.c0;
      }
    }
    return c;
  }
  ANATO_DIGITS_HD bool valid(Digits c) const { return c.c0 >= 0 && c.c0 < n0; }
  ANATO_DIGITS_HD int32_t position(Digits c) const { return c.c0 * st0 + c.c1 * st1 + c.c2 * st2; }
  ANATO_DIGITS_HD int32_t step(Digits c) const {
    const int32_t s = (c.c0 * n1 + c.c1) * n2 + c.c2;
    return reverse ? length - 1 - s : s;
  }
};

// Digits of the native positions p0 + j of a tile (j small): p0's split per axis is found once per block
// with integer divisions, each element's with SmallDiv.
struct PositionDigits {
  int32_t rem[3], digit[3];
  SmallDiv stride[3], size[3];

  ANATO_DIGITS_HD static PositionDigits at(const OrderDigits& g, int32_t p0) {
    const int32_t st[3] = {g.st0, g.st1, g.st2}, n[3] = {g.n0, g.n1, g.n2};
    PositionDigits out;
    for (int i = 0; i < 3; ++i) {
      const int32_t a = p0 / st[i];
      out.rem[i] = p0 - a * st[i];
      out.digit[i] = a % n[i];
      out.stride[i] = SmallDiv::of(st[i]);
      out.size[i] = SmallDiv::of(n[i]);
    }
    return out;
  }
  ANATO_DIGITS_HD int32_t axis(int i, int32_t j) const {
    int32_t unused, d;
    const int32_t q = stride[i].divmod(rem[i] + j, &unused);
    size[i].divmod(digit[i] + q, &d);
    return d;
  }
  ANATO_DIGITS_HD Digits of(int32_t j) const { return Digits{axis(0, j), axis(1, j), axis(2, j)}; }
};

}  // namespace anatokernels
