// Per-element update rules of the samplers (DESIGN.md §3), shared by the CPU
// kernels and the CUDA kernels. `acc_t` is float for fp16/bf16/fp32 params and
// double for fp64. `z` is the element's N(0,1) draw (ignored when the noise
// coefficient is 0). The order of operations mirrors torch.optim so that at
// temperature 0 the result is torch's SGD / RMSprop update.
#pragma once

#include <math.h>

#include "fisher_math.h"
#include "hd.h"

namespace pybayes {

template <typename acc_t>
struct SamplerCoefs {
  acc_t lr;
  acc_t weight_decay;
  acc_t momentum;  // SGHMC mu; pSGLD alpha
  acc_t eps;       // pSGLD
  acc_t noise;     // SGLD: sqrt(2 lr T / N); SGHMC: sqrt(2 (1-mu) T / (lr N)); pSGLD: 2 lr T / N
  acc_t one_minus_alpha;  // pSGLD: 1 - alpha
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
// avg = sqrt(v) + eps; theta -= lr * g / avg + sqrt(2 lr T / (N avg)) * xi.
// Here c.noise holds 2 lr T / N.
template <typename acc_t>
PYBAYES_HD void psgld_element(acc_t& p, acc_t& v, acc_t g, acc_t z, const SamplerCoefs<acc_t>& c) {
  const acc_t vn = fisher_ema(v, g, c.momentum, c.one_minus_alpha);
  v = vn;
  const acc_t avg = pb_sqrt(vn) + c.eps;
  acc_t step = c.lr * (g / avg);
  if (c.noise != acc_t(0)) step = step + pb_sqrt(c.noise / avg) * z;
  p = p - step;
}

}  // namespace pybayes
