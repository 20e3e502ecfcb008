// CUDA glue of the fused sampler ops: validation (shared with the CPU path),
// grouping by dtype, one multi-tensor launch per group on the current stream.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <vector>

#include "../sampler_args.h"
#include "launch_config.h"
#include "sampler_launch.h"

namespace pybayes {
namespace ops {
namespace {

using OptTensor = c10::optional<at::Tensor>;

void sampler_step_cuda(char kind, const char* op, at::TensorList params, at::TensorList grads,
                       at::TensorList bufs, at::IntArrayRef ids, at::IntArrayRef steps,
                       const SamplerHyper& h, int64_t seed, const OptTensor& grad_scale,
                       const OptTensor& found_inf, at::OptionalIntArrayRef offsets,
                       bool stochastic_rounding) {
  if (!check_sampler_call(kind, op, params, grads, bufs, ids, steps, h, grad_scale, found_inf,
                          offsets))
    return;

  const c10::cuda::CUDAGuard guard(params[0].device());
  const SamplerCoefs<double> c = make_coefs<double>(h, kind);
  cuda::SamplerLaunch a;
  a.kind = kind;
  a.lr = c.lr;
  a.weight_decay = c.weight_decay;
  a.momentum = c.momentum;
  a.eps = c.eps;
  a.one_minus_alpha = c.one_minus_alpha;
  a.noise = (h.temperature > 0 && h.lr > 0) ? c.noise : 0.0;
  a.avg_floor = c.avg_floor;
  a.maximize = h.maximize;
  a.stochastic_rounding = stochastic_rounding;
  a.seed = static_cast<uint64_t>(seed);
  a.grad_scale = grad_scale.has_value() ? grad_scale->data_ptr<float>() : nullptr;
  a.found_inf = found_inf.has_value() ? found_inf->data_ptr<float>() : nullptr;

  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
    std::vector<cuda::TensorDesc<3>> group;
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].scalar_type() != dtype || params[i].numel() == 0) continue;
      cuda::TensorDesc<3> d;
      d.ptr[0] = params[i].data_ptr();
      d.ptr[1] = const_cast<void*>(grads[i].data_ptr());
      d.ptr[2] = kind == 'l' ? nullptr : bufs[i].data_ptr();
      d.numel = params[i].numel();
      d.stream_id = static_cast<uint32_t>(ids[i]);
      d.step = static_cast<uint32_t>(steps[i]);
      d.offset = offset_of(offsets, i);
      group.push_back(d);
    }
    if (group.empty()) continue;
    C10_CUDA_CHECK(cuda::sampler_step(to_cuda_dtype(dtype), group.data(),
                                      static_cast<int>(group.size()), a,
                                      c10::cuda::getCurrentCUDAStream()));
  }
}

void sgld_cuda(at::TensorList params, at::TensorList grads, at::IntArrayRef ids,
               at::IntArrayRef steps, double lr, double weight_decay, double temperature,
               double num_data, int64_t seed, bool maximize, const OptTensor& grad_scale,
               const OptTensor& found_inf, at::OptionalIntArrayRef offsets, bool stochastic_rounding) {
  const SamplerHyper h{lr, weight_decay, 0.0, 0.0, temperature, num_data, maximize};
  sampler_step_cuda('l', "sgld_", params, grads, {}, ids, steps, h, seed, grad_scale, found_inf, offsets,
                    stochastic_rounding);
}

void sghmc_cuda(at::TensorList params, at::TensorList grads, at::TensorList bufs,
                at::IntArrayRef ids, at::IntArrayRef steps, double lr, double momentum,
                double weight_decay, double temperature, double num_data, int64_t seed,
                bool maximize, const OptTensor& grad_scale, const OptTensor& found_inf,
                at::OptionalIntArrayRef offsets, bool stochastic_rounding) {
  const SamplerHyper h{lr, weight_decay, momentum, 0.0, temperature, num_data, maximize};
  sampler_step_cuda('h', "sghmc_", params, grads, bufs, ids, steps, h, seed, grad_scale, found_inf, offsets,
                    stochastic_rounding);
}

void psgld_cuda(at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
                at::IntArrayRef ids, at::IntArrayRef steps, double lr, double alpha, double eps,
                double weight_decay, double temperature, double num_data, int64_t seed,
                bool maximize, const OptTensor& grad_scale, const OptTensor& found_inf,
                at::OptionalIntArrayRef offsets, bool stochastic_rounding,
                c10::optional<double> noise_bound) {
  const SamplerHyper h{lr, weight_decay, alpha, eps, temperature, num_data, maximize,
                       noise_bound.value_or(std::numeric_limits<double>::infinity())};
  sampler_step_cuda('p', "psgld_", params, grads, square_avgs, ids, steps, h, seed, grad_scale,
                    found_inf, offsets,
                    stochastic_rounding);
}

}  // namespace

TORCH_LIBRARY_IMPL(pybayes, CUDA, m) {
  m.impl("sgld_", &sgld_cuda);
  m.impl("sghmc_", &sghmc_cuda);
  m.impl("psgld_", &psgld_cuda);
}

}  // namespace ops
}  // namespace pybayes
