// Per-element diagonal-Fisher accumulation, shared by the Fisher ops (CPU and
// CUDA) and the pSGLD kernel (whose RMSprop second moment is this EMA with
// decay = alpha, scale = 1 - alpha). Same operation order as torch's
// square_avg.mul_(alpha).addcmul_(g, g, value=1-alpha).
//
// T is the accumulation type: float for float32/float16/bfloat16 storage,
// double for float64.
#pragma once

#include "hd.h"

namespace pybayes {

// fisher_diag_accumulate_: F = decay * F + scale * G^2.
template <typename T>
PYBAYES_HD T fisher_ema(T f, T g, T decay, T scale) {
  return decay * f + (scale * g) * g;
}

// fisher_diag_accumulate_per_sample_: F += scale * sum_b G[b]^2. The sum over
// the batch runs in a fixed order b = 0, 1, ..., B-1 (one running sum per
// element), so the result does not depend on threads, grid or chunking.
template <typename T>
PYBAYES_HD T fisher_sumsq_step(T acc, T g) {
  return acc + g * g;
}

template <typename T>
PYBAYES_HD T fisher_add_scaled(T f, T sumsq, T scale) {
  return f + scale * sumsq;
}

}  // namespace pybayes
