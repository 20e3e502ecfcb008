// Counter-based RNG shared by the CPU kernels and the CUDA kernels
// (DESIGN.md §4): Philox4x32-10 with the Random123 constants, and the
// conversion of its output to uniforms and to standard normals (Box–Muller).
//
// Everything here is integer arithmetic or IEEE-exact float operations
// (add, mul, sqrt, compare) evaluated in a fixed order, and both builds
// compile it without FMA contraction, so the CPU and CUDA kernels produce
// the same bits for the same (key, counter).
#pragma once

#include <math.h>
#include <stdint.h>

#include "hd.h"

namespace pybayes {

struct Philox4 {
  uint32_t x[4];
};

namespace philox_detail {
constexpr uint32_t kM0 = 0xD2511F53u;  // multipliers (Random123)
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;  // Weyl key increments (golden ratio, sqrt(3)-1)
constexpr uint32_t kW1 = 0xBB67AE85u;

PYBAYES_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}
}  // namespace philox_detail

// Philox4x32 with R rounds (R = 10 is the standard, crush-resistant choice).
template <int R = 10>
PYBAYES_HD Philox4 philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                              uint32_t k0, uint32_t k1) {
  using namespace philox_detail;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < R; ++r) {
    if (r > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kM0, c0, hi0, lo0);
    mulhilo(kM1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// A noise stream: key = 64-bit seed, counter = (block lo, block hi, stream, step).
// Element i of the stream lives in block i/4, lane i%4 (DESIGN.md §4:
// noise is a pure function of seed, step, parameter id and element index).
struct PhiloxStream {
  uint32_t k0, k1, stream, step;
  PYBAYES_HD static PhiloxStream make(uint64_t seed, uint32_t stream, uint32_t step) {
    return PhiloxStream{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), stream,
                        step};
  }
  PYBAYES_HD Philox4 block(uint64_t j) const {
    return philox4x32<10>(static_cast<uint32_t>(j), static_cast<uint32_t>(j >> 32), stream, step,
                          k0, k1);
  }
};

// ---------------------------------------------------------------------------
// uint32 -> float conversions and the transcendental functions Box–Muller
// needs, written as branch-free polynomials so that g++ vectorises them and
// nvcc runs the very same operations (libm and CUDA's logf differ in ulps).

// (0, 1]: never 0, so log() is finite; the smallest value is 2^-32, which
// bounds |z| by sqrt(2*32*ln 2) ~= 6.66 (as cuRAND's Box–Muller does).
PYBAYES_HD float uniform_open0(uint32_t x) {
  return static_cast<float>(static_cast<int32_t>(x >> 1)) * 4.656612873077392578125e-10f +
         2.3283064365386962890625e-10f;
}

// [0, 1) on a 2^-24 grid: exact in float.
PYBAYES_HD float uniform_closed0(uint32_t x) {
  return static_cast<float>(static_cast<int32_t>(x >> 8)) * 5.9604644775390625e-8f;
}

PYBAYES_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  union { float f; uint32_t u; } v{f};
  return v.u;
#endif
}
PYBAYES_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  union { uint32_t u; float f; } v{u};
  return v.f;
#endif
}

// Natural log for x in (0, 1] (normal floats only), max error ~1 ulp.
// x = m * 2^e with m in [sqrt(1/2), sqrt(2)); log(1+f) by a minimax
// polynomial in f = m - 1 (Cephes' single-precision coefficients).
PYBAYES_HD float log_unit(float x) {
  const uint32_t bits = float_bits(x);
  int32_t e = static_cast<int32_t>(bits >> 23) - 126;
  float m = bits_float((bits & 0x007FFFFFu) | 0x3F000000u);  // [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1 : e;
  float f = small ? (m + m) - 1.0f : m - 1.0f;
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f + -1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f + -1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f + -1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f + -2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const float fe = static_cast<float>(e);
  float y = p * f * z;
  y = y + fe * -2.12194440e-4f;  // ln2 split in two parts for accuracy
  y = y - 0.5f * z;
  return (f + y) + fe * 0.693359375f;
}

// sin and cos of 2*pi*u for u in [0, 1). The reduction to [-pi/4, pi/4] is
// exact because it happens in units of quarter turns.
PYBAYES_HD void sincos_2pi(float u, float& s, float& c) {
  const float t = u * 4.0f;                                    // quarter turns, exact
  const float q = static_cast<float>(static_cast<int32_t>(t + 0.5f));  // nearest quadrant
  const float x = (t - q) * 1.57079632679489661923f;           // [-pi/4, pi/4]
  const int32_t quad = static_cast<int32_t>(q) & 3;
  const float z = x * x;
  float ps = -1.9515295891e-4f;
  ps = ps * z + 8.3321608736e-3f;
  ps = ps * z + -1.6666654611e-1f;
  const float sn = x + x * z * ps;
  float pc = 2.443315711809948e-5f;
  pc = pc * z + -1.388731625493765e-3f;
  pc = pc * z + 4.166664568298827e-2f;
  const float cs = (1.0f - 0.5f * z) + z * z * pc;
  // rotate by quad quarter turns: (s, c) -> (c, -s) -> (-s, -c) -> (-c, s)
  const bool swap = (quad & 1) != 0;
  const float s0 = swap ? cs : sn;
  const float c0 = swap ? sn : cs;
  s = (quad >= 2) ? -s0 : s0;
  c = (quad == 1 || quad == 2) ? -c0 : c0;
}

// Box–Muller: two uint32 -> two independent N(0, 1) floats.
PYBAYES_HD void box_muller(uint32_t a, uint32_t b, float& z0, float& z1) {
  const float r = sqrtf(-2.0f * log_unit(uniform_open0(a)));
  float s, c;
  sincos_2pi(uniform_closed0(b), s, c);
  z0 = r * c;
  z1 = r * s;
}

// The four normals of one Philox block: lanes (0,1) and (2,3) are the pairs.
PYBAYES_HD void normal4(const Philox4& r, float out[4]) {
  box_muller(r.x[0], r.x[1], out[0], out[1]);
  box_muller(r.x[2], r.x[3], out[2], out[3]);
}

}  // namespace pybayes
