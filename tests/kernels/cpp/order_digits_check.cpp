// Checks csrc/order_digits.h against the plain division formula over every order of odd volumes.
// Built and run by tests/kernels/test_order_digits.py; prints "ok" or the first mismatch.
#include <cstdio>
#include <cstdint>

#include "order_digits.h"

using namespace anatokernels;

static int64_t native(const int64_t* g, int64_t t) {
  const int64_t L = g[0] * g[1] * g[2], s = g[6] ? L - 1 - t : t;
  return (s / (g[1] * g[2])) * g[3] + ((s / g[2]) % g[1]) * g[4] + (s % g[2]) * g[5];
}

int main() {
  const int64_t shapes[][3] = {{3, 4, 5}, {1, 1, 11}, {2, 1, 6}, {7, 1, 1}, {5, 9, 2}, {1, 13, 1}};
  const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
  for (const auto& shape : shapes) {
    const int64_t strides[3] = {shape[1] * shape[2], shape[2], 1}, L = shape[0] * shape[1] * shape[2];
    for (const auto& perm : perms) {
      for (int rev = 0; rev < 2; ++rev) {
        const int64_t g[7] = {shape[perm[0]], shape[perm[1]], shape[perm[2]], strides[perm[0]], strides[perm[1]],
                              strides[perm[2]], rev};
        const OrderDigits o = OrderDigits::load(g);
        Digits walk = o.of_step(0);
        for (int64_t t = 0; t < L; ++t) {
          const Digits d = o.of_step(static_cast<int32_t>(t));
          const int64_t want = native(g, t);
          bool bad = !o.valid(d) || o.position(d) != want || o.step(d) != t || o.position(walk) != want;
          for (int32_t delta = -9; delta <= 9; ++delta) {  // advance, in and out of [0, L)
            const Digits a = o.advance(d, delta);
            const int64_t u = t + delta;
            bad |= o.valid(a) != (u >= 0 && u < L) || (o.valid(a) && o.position(a) != native(g, u));
          }
          const PositionDigits tile = PositionDigits::at(o, static_cast<int32_t>(want / 4 * 4));
          const Digits from_pos = tile.of(static_cast<int32_t>(want % 4));
          bad |= o.step(from_pos) != t;
          if (bad) {
            std::printf("mismatch: shape %lld %lld %lld order %d%d%d rev %d t %lld\n", (long long)shape[0],
                        (long long)shape[1], (long long)shape[2], perm[0], perm[1], perm[2], rev, (long long)t);
            return 1;
          }
          walk = o.next(walk);
        }
      }
    }
  }
  std::printf("ok\n");
  return 0;
}
