// Fused SGLD / SGHMC / pSGLD steps: schemas and CPU kernels.
//
// One call updates a whole list of tensors. The work is cut into chunks of
// kNoiseChunk elements aligned on each tensor's element index; every chunk
// draws its normals for (seed, param id, step) and applies the shared
// per-element rule (sampler_math.h). Chunks are spread over threads with
// at::parallel_for, and since a chunk's result depends only on its indices the
// output is bitwise identical for any thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu_noise.h"
#include "sampler_args.h"

namespace pybayes {
namespace ops {
namespace {

using OptTensor = c10::optional<at::Tensor>;

template <typename T>
using acc_type_t = std::conditional_t<std::is_same<T, double>::value, double, float>;

// Reads the AMP tensors once: (skip the whole step?, inverse grad scale).
struct AmpState {
  bool skip = false;
  bool scaled = false;
  double inv_scale = 1.0;
};

AmpState read_amp(const OptTensor& grad_scale, const OptTensor& found_inf) {
  AmpState a;
  if (found_inf.has_value()) a.skip = found_inf->item<float>() != 0.0f;
  if (grad_scale.has_value()) {
    a.scaled = true;
    a.inv_scale = 1.0 / static_cast<double>(grad_scale->item<float>());
  }
  return a;
}

// Runs fn(tensor index, chunk index) over every chunk of every tensor.
template <typename Fn>
void for_each_chunk(at::TensorList params, Fn fn) {
  std::vector<int64_t> begin(params.size() + 1, 0);
  for (size_t i = 0; i < params.size(); ++i)
    begin[i + 1] = begin[i] + (params[i].numel() + kNoiseChunk - 1) / kNoiseChunk;
  at::parallel_for(0, begin.back(), 16, [&](int64_t c0, int64_t c1) {
    size_t t = std::upper_bound(begin.begin(), begin.end(), c0) - begin.begin() - 1;
    for (int64_t c = c0; c < c1; ++c) {
      while (c >= begin[t + 1]) ++t;
      fn(t, c - begin[t]);
    }
  });
}

// One chunk of one tensor: load, update in acc_t, store. `Rule` is the
// sampler's element rule taking (p, buf, g, z) by reference/value.
template <typename T, typename Rule>
void run_chunk(const PhiloxStream& s, bool noisy, int64_t c, int64_t numel, T* p, const T* g,
               T* buf, const AmpState& amp, Rule rule) {
  using acc_t = acc_type_t<T>;
  const int64_t b = c * kNoiseChunk;
  const int64_t e = std::min(numel, b + kNoiseChunk);
  alignas(64) float z[kNoiseChunk];
  if (noisy) normal_chunk(s, static_cast<uint64_t>(c), z);
  const acc_t inv = static_cast<acc_t>(amp.inv_scale);
  for (int64_t i = b; i < e; ++i) {
    acc_t pi = static_cast<acc_t>(p[i]);
    acc_t bi = buf ? static_cast<acc_t>(buf[i]) : acc_t(0);
    const acc_t zi = noisy ? static_cast<acc_t>(z[i - b]) : acc_t(0);
    rule(pi, bi, static_cast<acc_t>(g[i]), zi, inv, amp.scaled);
    p[i] = static_cast<T>(pi);
    if (buf) buf[i] = static_cast<T>(bi);
  }
}

// kind: 'l' SGLD, 'h' SGHMC, 'p' pSGLD.
void sampler_step_cpu(char kind, const char* op, at::TensorList params, at::TensorList grads,
                      at::TensorList bufs, at::IntArrayRef ids, at::IntArrayRef steps,
                      const SamplerHyper& h, int64_t seed, const OptTensor& grad_scale,
                      const OptTensor& found_inf) {
  std::vector<at::TensorList> buffers;
  std::vector<const char*> names;
  if (kind != 'l') {
    buffers.push_back(bufs);
    names.push_back(kind == 'h' ? "momentum_buffers" : "square_avgs");
  }
  check_tensor_lists(op, params, grads, buffers, names, ids, steps);
  check_hyper(op, h, kind == 'h', kind == 'p');
  if (params.empty()) return;
  check_amp(op, params[0].device(), grad_scale, found_inf);
  const AmpState amp = read_amp(grad_scale, found_inf);
  if (amp.skip) return;  // AMP overflow: nothing changes, no randomness used

  const bool noisy = h.temperature > 0 && h.lr > 0;
  for_each_chunk(params, [&](size_t t, int64_t c) {
    const at::Tensor& pt = params[t];
    const PhiloxStream s = PhiloxStream::make(static_cast<uint64_t>(seed),
                                              static_cast<uint32_t>(ids[t]),
                                              static_cast<uint32_t>(steps[t]));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pt.scalar_type(), "sampler_cpu", [&] {
      using acc_t = acc_type_t<scalar_t>;
      const SamplerCoefs<acc_t> k = make_coefs<acc_t>(h, kind);
      scalar_t* p = pt.data_ptr<scalar_t>();
      const scalar_t* g = grads[t].data_ptr<scalar_t>();
      scalar_t* buf = kind == 'l' ? nullptr : bufs[t].data_ptr<scalar_t>();
      auto grad_of = [&](acc_t pi, acc_t gi, acc_t inv, bool scaled) {
        return effective_grad(pi, gi, k, inv, scaled);
      };
      if (kind == 'l') {
        run_chunk(s, noisy, c, pt.numel(), p, g, buf, amp,
                  [&](acc_t& pi, acc_t&, acc_t gi, acc_t zi, acc_t inv, bool scaled) {
                    pi = sgld_element(pi, grad_of(pi, gi, inv, scaled), zi, k);
                  });
      } else if (kind == 'h') {
        run_chunk(s, noisy, c, pt.numel(), p, g, buf, amp,
                  [&](acc_t& pi, acc_t& bi, acc_t gi, acc_t zi, acc_t inv, bool scaled) {
                    sghmc_element(pi, bi, grad_of(pi, gi, inv, scaled), zi, k);
                  });
      } else {
        run_chunk(s, noisy, c, pt.numel(), p, g, buf, amp,
                  [&](acc_t& pi, acc_t& vi, acc_t gi, acc_t zi, acc_t inv, bool scaled) {
                    psgld_element(pi, vi, grad_of(pi, gi, inv, scaled), zi, k);
                  });
      }
    });
  });
}

void sgld_cpu(at::TensorList params, at::TensorList grads, at::IntArrayRef ids,
              at::IntArrayRef steps, double lr, double weight_decay, double temperature,
              double num_data, int64_t seed, bool maximize, const OptTensor& grad_scale,
              const OptTensor& found_inf) {
  const SamplerHyper h{lr, weight_decay, 0.0, 0.0, temperature, num_data, maximize};
  sampler_step_cpu('l', "sgld_", params, grads, {}, ids, steps, h, seed, grad_scale, found_inf);
}

void sghmc_cpu(at::TensorList params, at::TensorList grads, at::TensorList bufs,
               at::IntArrayRef ids, at::IntArrayRef steps, double lr, double momentum,
               double weight_decay, double temperature, double num_data, int64_t seed,
               bool maximize, const OptTensor& grad_scale, const OptTensor& found_inf) {
  const SamplerHyper h{lr, weight_decay, momentum, 0.0, temperature, num_data, maximize};
  sampler_step_cpu('h', "sghmc_", params, grads, bufs, ids, steps, h, seed, grad_scale, found_inf);
}

void psgld_cpu(at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
               at::IntArrayRef ids, at::IntArrayRef steps, double lr, double alpha, double eps,
               double weight_decay, double temperature, double num_data, int64_t seed,
               bool maximize, const OptTensor& grad_scale, const OptTensor& found_inf) {
  const SamplerHyper h{lr, weight_decay, alpha, eps, temperature, num_data, maximize};
  sampler_step_cpu('p', "psgld_", params, grads, square_avgs, ids, steps, h, seed, grad_scale,
                   found_inf);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pybayes, m) {
  m.def(
      "sgld_(Tensor(a!)[] params, Tensor[] grads, int[] param_ids, int[] steps, float lr, "
      "float weight_decay, float temperature, float num_data, int seed, bool maximize, "
      "Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");
  m.def(
      "sghmc_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, "
      "int[] param_ids, int[] steps, float lr, float momentum, float weight_decay, "
      "float temperature, float num_data, int seed, bool maximize, Tensor? grad_scale=None, "
      "Tensor? found_inf=None) -> ()");
  m.def(
      "psgld_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] square_avgs, int[] param_ids, "
      "int[] steps, float lr, float alpha, float eps, float weight_decay, float temperature, "
      "float num_data, int seed, bool maximize, Tensor? grad_scale=None, "
      "Tensor? found_inf=None) -> ()");
}

TORCH_LIBRARY_IMPL(pybayes, CPU, m) {
  m.impl("sgld_", &sgld_cpu);
  m.impl("sghmc_", &sghmc_cpu);
  m.impl("psgld_", &psgld_cpu);
}

// A sparse gradient dispatches to the sparse backends: route them to the same
// functions, whose argument checks reject it with a clear message.
TORCH_LIBRARY_IMPL(pybayes, SparseCPU, m) {
  m.impl("sgld_", &sgld_cpu);
  m.impl("sghmc_", &sghmc_cpu);
  m.impl("psgld_", &psgld_cpu);
}

TORCH_LIBRARY_IMPL(pybayes, SparseCUDA, m) {
  m.impl("sgld_", &sgld_cpu);
  m.impl("sghmc_", &sghmc_cpu);
  m.impl("psgld_", &psgld_cpu);
}

}  // namespace ops
}  // namespace pybayes
