// Fused SGLD / SGHMC / pSGLD steps: schemas and CPU kernels.
//
// One call updates a whole list of tensors. The work is cut into chunks of
// kNoiseChunk elements aligned on each tensor's element index; every chunk
// draws its normals for (seed, param id, step) and applies the shared
// per-element rule (sampler_math.h). Tiles of chunks are spread over threads
// with at::parallel_for, and since a chunk's result depends only on its
// indices the output is bitwise identical for any thread count.
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

// Work unit of the thread pool: a tile of kTileChunks noise chunks of one
// tensor (per-tile setup, dtype dispatch and coefficients, is amortised over
// 4096 elements). fn(tensor index, first chunk, end chunk).
constexpr int64_t kTileChunks = 16;

template <typename Fn>
void for_each_tile(at::TensorList params, Fn fn) {
  std::vector<int64_t> chunks(params.size()), begin(params.size() + 1, 0);
  for (size_t i = 0; i < params.size(); ++i) {
    chunks[i] = (params[i].numel() + kNoiseChunk - 1) / kNoiseChunk;
    begin[i + 1] = begin[i] + (chunks[i] + kTileChunks - 1) / kTileChunks;
  }
  at::parallel_for(0, begin.back(), 1, [&](int64_t t0, int64_t t1) {
    size_t t = std::upper_bound(begin.begin(), begin.end(), t0) - begin.begin() - 1;
    for (int64_t tile = t0; tile < t1; ++tile) {
      while (tile >= begin[t + 1]) ++t;
      const int64_t c0 = (tile - begin[t]) * kTileChunks;
      fn(t, c0, std::min(chunks[t], c0 + kTileChunks));
    }
  });
}

// Stochastic rounding of a float result to the 16-bit storage type T
// (sampler_math.h); only instantiated for float16 and bfloat16.
template <typename T>
constexpr bool is_16bit_v = std::is_same<T, at::Half>::value || std::is_same<T, at::BFloat16>::value;

template <typename T>
float round16(float x, uint32_t r) {
  if constexpr (std::is_same<T, at::BFloat16>::value) return round_stochastic_bf16(x, r);
  else return round_stochastic_fp16(x, r);
}

// One chunk of one tensor: draw its normals (if any) and, with stochastic
// rounding, its rounding words, then one pass of the sampler's element rule
// in acc_t. The flags that are uniform over a call (weight decay, noise) are
// branches the compiler hoists out of the loop.
template <char Kind, typename T, bool SR>
void run_chunk(const PhiloxStream& s, bool noisy, int64_t offset, int64_t c, int64_t numel,
               T* __restrict p,
               const T* __restrict g, T* __restrict buf, acc_type_t<T> gmul,
               const SamplerCoefs<acc_type_t<T>>& k) {
  using acc_t = acc_type_t<T>;
  const int64_t b = c * kNoiseChunk;
  const int64_t n = std::min(numel - b, kNoiseChunk);
  alignas(64) float z[kNoiseChunk];
  if (noisy && offset == 0) {
    normal_chunk(s, static_cast<uint64_t>(c), z);
  } else if (noisy) {  // a shard: the noise of its elements' global indices
    normal_range(s, static_cast<uint64_t>(offset + b), static_cast<uint64_t>(offset + b + n), z);
  } else {
    std::fill(z, z + kNoiseChunk, 0.0f);
  }
  alignas(64) uint32_t r[SR ? kNoiseChunk : 1];
  if constexpr (SR) {
    // element 2^63 + i of the same stream (sampler_math.h, kRoundingIndex0)
    const uint64_t e0 = kRoundingIndex0 + static_cast<uint64_t>(offset + b);
    if (offset == 0)
      uint32_chunk(s, e0 / kNoiseChunk, r);
    else
      uint32_range(s, e0, e0 + static_cast<uint64_t>(n), r);
  }
  p += b;
  g += b;
  if (Kind != 'l') buf += b;
  for (int64_t i = 0; i < n; ++i) {
    acc_t pi = static_cast<acc_t>(p[i]);
    const acc_t gi = effective_grad(pi, static_cast<acc_t>(g[i]), gmul, k);
    const acc_t zi = static_cast<acc_t>(z[i]);
    acc_t bi = Kind != 'l' ? static_cast<acc_t>(buf[i]) : acc_t(0);
    if (Kind == 'l') pi = sgld_element(pi, gi, zi, k);
    if (Kind == 'h') sghmc_element(pi, bi, gi, zi, k);
    if (Kind == 'p') psgld_element(pi, bi, gi, zi, k);
    if constexpr (SR) {
      p[i] = static_cast<T>(round16<T>(pi, r[i]));
      if (Kind != 'l') buf[i] = static_cast<T>(round16<T>(bi, r[i] >> 16));
    } else {
      p[i] = static_cast<T>(pi);
      if (Kind != 'l') buf[i] = static_cast<T>(bi);
    }
  }
}

template <char Kind>
void sampler_step_cpu(const char* op, at::TensorList params, at::TensorList grads,
                      at::TensorList bufs, at::IntArrayRef ids, at::IntArrayRef steps,
                      const SamplerHyper& h, int64_t seed, const OptTensor& grad_scale,
                      const OptTensor& found_inf, at::OptionalIntArrayRef offsets,
                      bool stochastic_rounding) {
  if (!check_sampler_call(Kind, op, params, grads, bufs, ids, steps, h, grad_scale, found_inf,
                          offsets))
    return;
  const AmpState amp = read_amp(grad_scale, found_inf);
  if (amp.skip) return;  // AMP overflow: nothing changes, no randomness used

  const bool noisy = h.temperature > 0 && h.lr > 0;
  for_each_tile(params, [&](size_t t, int64_t c0, int64_t c1) {
    const at::Tensor& pt = params[t];
    const PhiloxStream s = PhiloxStream::make(static_cast<uint64_t>(seed),
                                              static_cast<uint32_t>(ids[t]),
                                              static_cast<uint32_t>(steps[t]));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pt.scalar_type(), "sampler_cpu", [&] {
      using acc_t = acc_type_t<scalar_t>;
      const SamplerCoefs<acc_t> k = make_coefs<acc_t>(h, Kind);
      const acc_t gmul = grad_multiplier(amp.scaled, static_cast<acc_t>(amp.inv_scale), h.maximize);
      scalar_t* p = pt.data_ptr<scalar_t>();
      const scalar_t* g = grads[t].data_ptr<scalar_t>();
      scalar_t* buf = Kind == 'l' ? nullptr : bufs[t].data_ptr<scalar_t>();
      const int64_t offset = offset_of(offsets, t);
      if constexpr (is_16bit_v<scalar_t>) {
        if (stochastic_rounding) {
          for (int64_t c = c0; c < c1; ++c)
            run_chunk<Kind, scalar_t, true>(s, noisy, offset, c, pt.numel(), p, g, buf, gmul, k);
          return;
        }
      }
      for (int64_t c = c0; c < c1; ++c)
        run_chunk<Kind, scalar_t, false>(s, noisy, offset, c, pt.numel(), p, g, buf, gmul, k);
    });
  });
}

void sgld_cpu(at::TensorList params, at::TensorList grads, at::IntArrayRef ids,
              at::IntArrayRef steps, double lr, double weight_decay, double temperature,
              double num_data, int64_t seed, bool maximize, const OptTensor& grad_scale,
              const OptTensor& found_inf, at::OptionalIntArrayRef offsets, bool stochastic_rounding) {
  const SamplerHyper h{lr, weight_decay, 0.0, 0.0, temperature, num_data, maximize};
  sampler_step_cpu<'l'>("sgld_", params, grads, {}, ids, steps, h, seed, grad_scale, found_inf, offsets,
                        stochastic_rounding);
}

void sghmc_cpu(at::TensorList params, at::TensorList grads, at::TensorList bufs,
               at::IntArrayRef ids, at::IntArrayRef steps, double lr, double momentum,
               double weight_decay, double temperature, double num_data, int64_t seed,
               bool maximize, const OptTensor& grad_scale, const OptTensor& found_inf,
               at::OptionalIntArrayRef offsets, bool stochastic_rounding) {
  const SamplerHyper h{lr, weight_decay, momentum, 0.0, temperature, num_data, maximize};
  sampler_step_cpu<'h'>("sghmc_", params, grads, bufs, ids, steps, h, seed, grad_scale, found_inf, offsets,
                        stochastic_rounding);
}

void psgld_cpu(at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
               at::IntArrayRef ids, at::IntArrayRef steps, double lr, double alpha, double eps,
               double weight_decay, double temperature, double num_data, int64_t seed,
               bool maximize, const OptTensor& grad_scale, const OptTensor& found_inf,
               at::OptionalIntArrayRef offsets, bool stochastic_rounding,
               c10::optional<double> noise_bound) {
  const SamplerHyper h{lr, weight_decay, alpha, eps, temperature, num_data, maximize,
                       noise_bound.value_or(std::numeric_limits<double>::infinity())};
  sampler_step_cpu<'p'>("psgld_", params, grads, square_avgs, ids, steps, h, seed, grad_scale,
                        found_inf, offsets, stochastic_rounding);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pybayes, m) {
  m.def(
      "sgld_(Tensor(a!)[] params, Tensor[] grads, int[] param_ids, int[] steps, float lr, "
      "float weight_decay, float temperature, float num_data, int seed, bool maximize, "
      "Tensor? grad_scale=None, Tensor? found_inf=None, int[]? offsets=None, bool stochastic_rounding=False) -> ()");
  m.def(
      "sghmc_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, "
      "int[] param_ids, int[] steps, float lr, float momentum, float weight_decay, "
      "float temperature, float num_data, int seed, bool maximize, Tensor? grad_scale=None, "
      "Tensor? found_inf=None, int[]? offsets=None, bool stochastic_rounding=False) -> ()");
  m.def(
      "psgld_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] square_avgs, int[] param_ids, "
      "int[] steps, float lr, float alpha, float eps, float weight_decay, float temperature, "
      "float num_data, int seed, bool maximize, Tensor? grad_scale=None, "
      "Tensor? found_inf=None, int[]? offsets=None, bool stochastic_rounding=False, "
      "float? noise_bound=0.5) -> ()");
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
