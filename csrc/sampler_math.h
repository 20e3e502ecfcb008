// Per-element update rules of the samplers (DESIGN.md §3), shared by the CPU
// kernels and the CUDA kernels. `acc_t` is float for fp16/bf16/fp32 params and
// double for fp64. `z` is the element's N(0,1) draw (ignored when the noise
// coefficient is 0). The order of operations mirrors torch.optim so that at
// temperature 0 the result is torch's SGD / RMSprop update.
#pragma once

#include <math.h>

#include "fisher_math.h"
#include "hd.h"
#include "philox.h"

namespace pybayes {

template <typename acc_t>
struct SamplerCoefs {
  acc_t lr;
  acc_t weight_decay;
  acc_t momentum;  // SGHMC mu; pSGLD alpha
  acc_t eps;       // pSGLD
  acc_t noise;     // SGLD: sqrt(2 lr T / N); SGHMC: sqrt(2 (1-mu) T / (lr N)); pSGLD: 2 lr T / N
  acc_t one_minus_alpha;  // pSGLD: 1 - alpha
  acc_t avg_floor;        // pSGLD: lower bound of sqrt(v) + eps (0 at T = 0), psgld_avg_floor
  bool maximize;
};

// Gradient multiplier: 1/grad_scale (AMP) and the sign of `maximize`,
// folded into one factor (negation is exact, so this is bitwise the same as
// unscaling then negating).
template <typename acc_t>
PYBAYES_HD acc_t grad_multiplier(bool scaled, acc_t inv_scale, bool maximize) {
  const acc_t m = scaled ? inv_scale : acc_t(1);
  return maximize ? -m : m;
}

// Effective gradient: g * multiplier, plus weight decay.
template <typename acc_t>
PYBAYES_HD acc_t effective_grad(acc_t p, acc_t g, acc_t gmul, const SamplerCoefs<acc_t>& c) {
  g = g * gmul;
  if (c.weight_decay != acc_t(0)) g = g + c.weight_decay * p;
  return g;
}

// SGLD: theta -= lr*g + sqrt(2 lr T/N) * xi
template <typename acc_t>
PYBAYES_HD acc_t sgld_element(acc_t p, acc_t g, acc_t z, const SamplerCoefs<acc_t>& c) {
  acc_t step = c.lr * g;
  if (c.noise != acc_t(0)) step = step + c.noise * z;
  return p - step;
}

// SGHMC (momentum form): buf = mu*buf + g + sqrt(2(1-mu)T/(lr N)) xi; theta -= lr*buf
template <typename acc_t>
PYBAYES_HD void sghmc_element(acc_t& p, acc_t& buf, acc_t g, acc_t z,
                              const SamplerCoefs<acc_t>& c) {
  acc_t b = c.momentum * buf + g;
  if (c.noise != acc_t(0)) b = b + c.noise * z;
  buf = b;
  p = p - c.lr * b;
}

PYBAYES_HD float pb_sqrt(float x) { return sqrtf(x); }
PYBAYES_HD double pb_sqrt(double x) { return sqrt(x); }

// pSGLD (RMSprop preconditioner, no Gamma term): the second moment is the
// diagonal-Fisher EMA (fisher_math.h) v = alpha v + (1-alpha) g^2;
// avg = max(sqrt(v) + eps, avg_floor); theta -= lr * g / avg + sqrt(2 lr T / (N avg)) * xi.
// Here c.noise holds 2 lr T / N. avg_floor (= 2 T (1-alpha) / (lr N b^2) when
// T > 0, else 0, with b = noise_bound, 0.5 by default) bounds G = 1/avg so
// that one step's noise never exceeds b lr / sqrt(1-alpha): a start at a zero
// or tiny gradient cannot explode, and where the chain mixes slower than
// 1/8 of the EMA's memory (b = 0.5; v would follow the chain's own state and
// bias its variance) G is constant. At T = 0 the floor is 0: exactly RMSprop.
template <typename acc_t>
PYBAYES_HD void psgld_element(acc_t& p, acc_t& v, acc_t g, acc_t z, const SamplerCoefs<acc_t>& c) {
  const acc_t vn = fisher_ema(v, g, c.momentum, c.one_minus_alpha);
  v = vn;
  const acc_t raw = pb_sqrt(vn) + c.eps;
  const acc_t avg = raw < c.avg_floor ? c.avg_floor : raw;
  acc_t step = c.lr * (g / avg);
  if (c.noise != acc_t(0)) step = step + pb_sqrt(c.noise / avg) * z;
  p = p - step;
}

// ---------------------------------------------------------------------------
// Stochastic rounding of the float results to a 16-bit storage type (DESIGN.md
// §4, extension): x is rounded to one of its two neighbours on the 16-bit grid,
// up (away from zero) with probability equal to its fraction of the gap, so
// E[round(x)] = x. The result is a float that the 16-bit type represents
// exactly (its round-to-nearest conversion is then exact). `r` holds 16
// random bits in its low half. Inf and NaN are passed through unchanged.
//
// The random words come from the parameter's own Philox stream, at element
// index 2^63 + i for element i (block 2^61 + i/4, lane i%4): noise only ever
// uses indices below 2^63, so rounding never reuses a word of the Gaussian
// noise. The low 16 bits of the word round the parameter, the high 16 bits
// the state buffer (momentum or square average).
constexpr uint64_t kRoundingIndex0 = 1ull << 63;

PYBAYES_HD Philox4 rounding_block(const PhiloxStream& s, uint64_t block) {
  return s.block(block + (kRoundingIndex0 >> 2));
}

// bfloat16 keeps the upper 16 bits of a float: adding 16 random bits to the
// lower half carries into the kept part with probability (lower half) / 2^16,
// exactly the fraction of the gap, for every finite float (normal or not; a
// carry out of the largest finite value gives inf, as it would for x >= max).
PYBAYES_HD float round_stochastic_bf16(float x, uint32_t r) {
  const uint32_t b = float_bits(x);
  const uint32_t t = (b + (r & 0xFFFFu)) & 0xFFFF0000u;
  return (b & 0x7F800000u) != 0x7F800000u ? bits_float(t) : x;
}

// float16: for |x| >= 2^-14 (normal half) drop 13 mantissa bits as above,
// exact. Below, the half grid is k * 2^-24: y = |x| * 2^24 is exact, k its
// integer part, and the fraction y - k is compared with 16 random bits
// (exact for |x| >= 2^-17, whose fraction has at most 16 bits; below, the
// probability is resolved to 2^-16 of the gap, a bias under 2^-40).
PYBAYES_HD float round_stochastic_fp16(float x, uint32_t r) {
  const uint32_t b = float_bits(x);
  const uint32_t mag = b & 0x7FFFFFFFu;
  const uint32_t normal = (b + (r & 0x1FFFu)) & 0xFFFFE000u;
  const float y = bits_float(mag) * 16777216.0f;  // |x| * 2^24, < 2^10 on this branch
  const float k = static_cast<float>(static_cast<int32_t>(y < 2048.0f ? y : 0.0f));
  const float up = static_cast<float>(static_cast<int32_t>(r & 0xFFFFu)) < (y - k) * 65536.0f
                       ? 1.0f : 0.0f;
  const uint32_t sub = float_bits((k + up) * 5.9604644775390625e-8f) | (b & 0x80000000u);
  const uint32_t t = mag >= 0x38800000u ? normal : sub;
  return mag < 0x7F800000u ? bits_float(t) : x;
}

}  // namespace pybayes
