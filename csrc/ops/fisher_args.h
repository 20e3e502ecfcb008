// Validation of the Fisher ops' arguments, shared by the CPU kernels and the
// CUDA glue. Every tensor of both lists is checked before anything is written,
// so a call that raises modifies nothing.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/accumulate.h>

#include <cmath>

#include "checks.h"

namespace pybayes {
namespace ops {

inline bool fisher_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// per_sample: grads[i] has a leading batch dimension and grads[i][0] has as
// many elements as fisher[i]; otherwise grads[i] has fisher[i]'s numel.
inline void check_fisher_lists(const char* op, at::TensorList fisher, at::TensorList grads,
                               bool per_sample) {
  const size_t n = fisher.size();
  TORCH_CHECK(grads.size() == n, op, ": grads has ", grads.size(), " tensors, fisher has ", n);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& f = fisher[i];
    const at::Tensor& g = grads[i];
    TORCH_CHECK(f.layout() == at::kStrided, op, ": fisher[", i, "] must be a dense tensor");
    TORCH_CHECK(g.layout() == at::kStrided, op, ": grads[", i, "] must be a dense tensor");
    TORCH_CHECK(fisher_supported_dtype(f.scalar_type()), op, ": fisher[", i,
                "] must be float32, float64, float16 or bfloat16, got ", f.scalar_type());
    TORCH_CHECK(g.scalar_type() == f.scalar_type(), op, ": grads[", i, "] is ", g.scalar_type(),
                " but fisher[", i, "] is ", f.scalar_type(), "; cast one of them");
    TORCH_CHECK(f.device() == fisher[0].device(), op, ": fisher[", i, "] is on ", f.device(),
                " but fisher[0] is on ", fisher[0].device(), "; one call takes one device");
    TORCH_CHECK(g.device() == f.device(), op, ": grads[", i, "] is on ", g.device(),
                " but fisher[", i, "] is on ", f.device());
    TORCH_CHECK(f.is_contiguous(), op, ": fisher[", i, "] must be contiguous");
    TORCH_CHECK(g.is_contiguous(), op, ": grads[", i, "] must be contiguous (call .contiguous())");
    if (per_sample) {
      TORCH_CHECK(g.dim() >= 1, op, ": grads[", i,
                  "] must have a leading batch dimension (per-sample gradients), got a 0-dim tensor");
      const int64_t row = c10::multiply_integers(g.sizes().slice(1));
      TORCH_CHECK(row == f.numel(), op, ": grads[", i, "] has shape ", g.sizes(),
                  "; its per-sample shape ", g.sizes().slice(1), " has ", row,
                  " elements but fisher[", i, "] has ", f.numel(), " (shape ", f.sizes(), ")");
    } else {
      TORCH_CHECK(g.numel() == f.numel(), op, ": grads[", i, "] has shape ", g.sizes(), " (",
                  g.numel(), " elements) but fisher[", i, "] has shape ", f.sizes(), " (", f.numel(),
                  " elements)");
    }
  }
  // grads are only read (one may be passed twice); fisher is written
  check_no_overlap(op, {fisher, grads}, {"fisher", "grads"}, {true, false});
}

inline void check_fisher_scalars(const char* op, double decay, double scale) {
  TORCH_CHECK(std::isfinite(decay), op, ": decay must be finite, got ", decay);
  TORCH_CHECK(std::isfinite(scale), op, ": scale must be finite, got ", scale);
}

}  // namespace ops
}  // namespace pybayes
