// Validation of the sampler ops' arguments, shared by the CPU kernels, the
// CUDA glue and the optimizers (pybayes._C.check_sampler_call runs the same
// checks for every param group before the first kernel). Everything is checked
// before any tensor is written, so a call that raises modifies nothing.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/irange.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "checks.h"
#include "sampler_math.h"

namespace pybayes {
namespace ops {

struct SamplerHyper {
  double lr, weight_decay, momentum, eps, temperature, num_data;
  bool maximize;
  // pSGLD: one step's noise <= noise_bound * lr / sqrt(1 - alpha); inf: no bound
  double noise_bound = std::numeric_limits<double>::infinity();
};

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_tensor_lists(const char* op, at::TensorList params, at::TensorList grads,
                               const std::vector<at::TensorList>& buffers,
                               const std::vector<const char*>& buffer_names,
                               at::IntArrayRef ids, at::IntArrayRef steps, bool overlap) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n, op, ": grads has ", grads.size(), " tensors, params has ", n);
  TORCH_CHECK(ids.size() == n, op, ": param_ids has ", ids.size(), " entries, params has ", n);
  TORCH_CHECK(steps.size() == n, op, ": steps has ", steps.size(), " entries, params has ", n);
  for (size_t b = 0; b < buffers.size(); ++b)
    TORCH_CHECK(buffers[b].size() == n, op, ": ", buffer_names[b], " has ", buffers[b].size(),
                " tensors, params has ", n);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& g = grads[i];
    TORCH_CHECK(!p.is_complex(), op, ": params[", i, "] is complex (", p.scalar_type(),
                "); only real floating-point parameters are supported");
    TORCH_CHECK(is_supported_float(p.scalar_type()), op, ": params[", i,
                "] must be float32, float64, float16 or bfloat16, got ", p.scalar_type());
    check_dense(p, op, "params", i);
    TORCH_CHECK(!g.is_sparse(), op, ": grads[", i,
                "] is sparse; sparse gradients are not supported (use a dense embedding)");
    check_dense(g, op, "grads", i);
    TORCH_CHECK(p.device() == params[0].device(), op, ": params[", i, "] is on ", p.device(),
                " but params[0] is on ", params[0].device(), "; one call takes one device");
    TORCH_CHECK(g.device() == p.device(), op, ": grads[", i, "] is on ", g.device(),
                ", its param on ", p.device());
    TORCH_CHECK(g.scalar_type() == p.scalar_type(), op, ": grads[", i, "] is ", g.scalar_type(),
                ", its param is ", p.scalar_type());
    TORCH_CHECK(g.numel() == p.numel() && g.sizes() == p.sizes(), op, ": grads[", i,
                "] has shape ", g.sizes(), ", its param ", p.sizes());
    TORCH_CHECK(same_layout(g, p), op, ": grads[", i, "] has strides ", g.strides(), " but params[", i,
                "] has strides ", p.strides(), "; a gradient must share its parameter's layout");
    for (size_t b = 0; b < buffers.size(); ++b) {
      const at::Tensor& t = buffers[b][i];
      TORCH_CHECK(t.device() == p.device() && t.scalar_type() == p.scalar_type() &&
                      t.sizes() == p.sizes(),
                  op, ": ", buffer_names[b], "[", i, "] must be a ", p.scalar_type(),
                  " tensor of shape ", p.sizes(), " on ", p.device(), ", got ", t.scalar_type(),
                  " ", t.sizes(), " on ", t.device());
      TORCH_CHECK(same_layout(t, p), op, ": ", buffer_names[b], "[", i, "] has strides ", t.strides(),
                  " but params[", i, "] has strides ", p.strides(), "; a buffer must share its "
                  "parameter's layout");
    }
    TORCH_CHECK(ids[i] >= 0 && ids[i] <= 0xFFFFFFFFll, op, ": param_ids[", i,
                "] must be in [0, 2**32), got ", ids[i]);
    TORCH_CHECK(steps[i] >= 0 && steps[i] <= 0xFFFFFFFFll, op, ": steps[", i,
                "] must be in [0, 2**32), got ", steps[i]);
  }
  if (!overlap) return;
  std::vector<at::TensorList> lists{params, grads};
  std::vector<const char*> names{"params", "grads"};
  std::vector<bool> written{true, false};
  for (size_t b = 0; b < buffers.size(); ++b) {
    lists.push_back(buffers[b]);
    names.push_back(buffer_names[b]);
    written.push_back(true);
  }
  check_no_overlap(op, lists, names, written);
}

inline void check_hyper(const char* op, const SamplerHyper& h, bool has_momentum, bool is_psgld) {
  TORCH_CHECK(std::isfinite(h.lr) && h.lr >= 0, op, ": lr must be a finite number >= 0, got ", h.lr);
  TORCH_CHECK(std::isfinite(h.weight_decay) && h.weight_decay >= 0, op,
              ": weight_decay must be a finite number >= 0, got ", h.weight_decay);
  TORCH_CHECK(std::isfinite(h.temperature) && h.temperature >= 0, op,
              ": temperature must be a finite number >= 0, got ", h.temperature);
  TORCH_CHECK(h.temperature == 0 || (std::isfinite(h.num_data) && h.num_data > 0), op,
              ": num_data must be > 0 when temperature > 0, got ", h.num_data);
  if (has_momentum)
    TORCH_CHECK(h.momentum >= 0 && h.momentum < 1, op, ": momentum must be in [0, 1), got ",
                h.momentum);
  if (is_psgld) {
    TORCH_CHECK(h.momentum >= 0 && h.momentum < 1, op, ": alpha must be in [0, 1), got ", h.momentum);
    TORCH_CHECK(h.noise_bound > 0, op, ": noise_bound must be > 0 (or None: no bound), got ",
                h.noise_bound);
    TORCH_CHECK(std::isfinite(h.eps) && h.eps > 0, op, ": eps must be > 0, got ", h.eps);
  }
}

inline void check_amp(const char* op, const at::Device& device,
                      const c10::optional<at::Tensor>& grad_scale,
                      const c10::optional<at::Tensor>& found_inf) {
  for (const auto* t : {&grad_scale, &found_inf}) {
    if (!t->has_value()) continue;
    const char* name = (t == &grad_scale) ? "grad_scale" : "found_inf";
    const at::Tensor& v = t->value();
    TORCH_CHECK(v.numel() == 1 && v.scalar_type() == at::kFloat, op, ": ", name,
                " must be a one-element float32 tensor, got ", v.scalar_type(), " ", v.sizes());
    TORCH_CHECK(v.device() == device, op, ": ", name, " is on ", v.device(), ", params on ", device);
  }
  // The scale divides the gradients: 0, negative or non-finite would flip or
  // destroy the parameters. Read where it costs no device sync (CPU); a CUDA
  // scale comes from GradScaler and is not read back on the host.
  if (grad_scale.has_value() && grad_scale->device().is_cpu()) {
    const float s = grad_scale->item<float>();
    TORCH_CHECK(std::isfinite(s) && s > 0, op, ": grad_scale must be a finite number > 0, got ", s);
  }
}

// Global element index of a tensor's first element (a shard of a larger
// parameter, FSDP2): its noise is that of the elements' global indices.
inline int64_t offset_of(at::OptionalIntArrayRef offsets, size_t i) {
  return offsets.has_value() ? (*offsets)[i] : 0;
}

// All checks of one sampler call (kind 'l' SGLD, 'h' SGHMC, 'p' pSGLD);
// returns false when there is nothing to update.
inline bool check_sampler_call(char kind, const char* op, at::TensorList params,
                               at::TensorList grads, at::TensorList bufs, at::IntArrayRef ids,
                               at::IntArrayRef steps, const SamplerHyper& h,
                               const c10::optional<at::Tensor>& grad_scale,
                               const c10::optional<at::Tensor>& found_inf,
                               at::OptionalIntArrayRef offsets, bool overlap = true) {
  std::vector<at::TensorList> buffers;
  std::vector<const char*> names;
  if (kind != 'l') {
    buffers.push_back(bufs);
    names.push_back(kind == 'h' ? "momentum_buffers" : "square_avgs");
  }
  check_tensor_lists(op, params, grads, buffers, names, ids, steps, overlap);
  check_hyper(op, h, kind == 'h', kind == 'p');
  if (offsets.has_value()) {
    TORCH_CHECK(offsets->size() == params.size(), op, ": offsets has ", offsets->size(),
                " entries, params has ", params.size());
    for (size_t i = 0; i < offsets->size(); ++i)
      TORCH_CHECK((*offsets)[i] >= 0, op, ": offsets[", i, "] must be >= 0, got ", (*offsets)[i]);
  }
  if (params.empty()) return false;
  check_amp(op, params[0].device(), grad_scale, found_inf);
  return true;
}

// pSGLD's lower bound of the preconditioner's denominator (sampler_math.h,
// psgld_element): 2 T (1 - alpha) / (lr N b^2) for noise_bound b at T > 0,
// lr > 0; 0 otherwise (and for b = inf: no bound).
inline double psgld_avg_floor(const SamplerHyper& h, char kind) {
  const double b = h.noise_bound;
  if (kind != 'p' || !(h.temperature > 0) || !(h.lr > 0) || !(b > 0) || std::isinf(b)) return 0.0;
  return 2.0 * h.temperature * (1.0 - h.momentum) / (h.lr * h.num_data * b * b);
}

// Per-element coefficients; `noise` depends on the sampler (sampler_math.h).
template <typename acc_t>
SamplerCoefs<acc_t> make_coefs(const SamplerHyper& h, char kind) {
  SamplerCoefs<acc_t> c{};
  c.lr = static_cast<acc_t>(h.lr);
  c.weight_decay = static_cast<acc_t>(h.weight_decay);
  c.momentum = static_cast<acc_t>(h.momentum);
  c.eps = static_cast<acc_t>(h.eps);
  c.one_minus_alpha = static_cast<acc_t>(1.0 - h.momentum);
  c.maximize = h.maximize;
  double noise = 0.0;
  if (h.temperature > 0) {
    if (kind == 'l') noise = std::sqrt(2.0 * h.lr * h.temperature / h.num_data);
    // SGHMC with lr = 0 does not move: no noise rather than an infinite one.
    if (kind == 'h' && h.lr > 0)
      noise = std::sqrt(2.0 * (1.0 - h.momentum) * h.temperature / (h.lr * h.num_data));
    if (kind == 'p') noise = 2.0 * h.lr * h.temperature / h.num_data;
  }
  c.noise = static_cast<acc_t>(noise);
  c.avg_floor = static_cast<acc_t>(psgld_avg_floor(h, kind));
  return c;
}

}  // namespace ops
}  // namespace pybayes
