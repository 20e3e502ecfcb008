// Per-element diagonal-Fisher accumulation, shared by the Fisher ops and the
// pSGLD kernel (whose RMSprop second moment is this EMA with decay = alpha,
// scale = 1 - alpha). Same operation order as torch's
// square_avg.mul_(alpha).addcmul_(g, g, value=1-alpha).
#pragma once

#include "hd.h"

namespace pybayes {

template <typename T>
PYBAYES_HD T fisher_ema(T f, T g, T decay, T scale) {
  return decay * f + (scale * g) * g;
}

}  // namespace pybayes
