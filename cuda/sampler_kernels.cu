// Fused SGLD / SGHMC / pSGLD step over a list of tensors: one launch per
// (device, dtype) group (multi_tensor.cuh), each thread updates four
// consecutive elements with the four normals of one Philox block, loading and
// storing them as one vector when the tensors are aligned. Math in float for
// fp16/bf16/fp32 and in double for fp64, with the per-element rules shared
// with the CPU kernels (sampler_math.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "convert.cuh"
#include "multi_tensor.cuh"
#include "philox.h"
#include "sampler_launch.h"
#include "sampler_math.h"

namespace pybayes {
namespace cuda {
namespace {

// The four values of elements e0..e0+3 from the Philox blocks holding them:
// `cur` holds e0 (at lane `shift` = e0 % 4), `next` the block after it.
// Static indices only: no local-memory copy of cur/next.
template <typename V>
__device__ __forceinline__ void pick4(const V cur[4], const V next[4], int shift, V out[4]) {
  if (shift == 0) {
    out[0] = cur[0]; out[1] = cur[1]; out[2] = cur[2]; out[3] = cur[3];
  } else if (shift == 1) {
    out[0] = cur[1]; out[1] = cur[2]; out[2] = cur[3]; out[3] = next[0];
  } else if (shift == 2) {
    out[0] = cur[2]; out[1] = cur[3]; out[2] = next[0]; out[3] = next[1];
  } else {
    out[0] = cur[3]; out[1] = next[0]; out[2] = next[1]; out[3] = next[2];
  }
}

// Stochastic rounding to the 16-bit storage types (sampler_math.h).
template <typename T> struct Is16 { static constexpr bool value = false; };
template <> struct Is16<__half> { static constexpr bool value = true; };
template <> struct Is16<__nv_bfloat16> { static constexpr bool value = true; };

template <typename T>
__device__ __forceinline__ float round16(float x, uint32_t r) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) return round_stochastic_bf16(x, r);
  else return round_stochastic_fp16(x, r);
}

// Store of a float result: round to nearest, or stochastic rounding with the
// random bits r for the 16-bit types when `sr` is set.
template <typename T, typename A>
__device__ __forceinline__ T store_rounded(A v, bool sr, uint32_t r) {
  if constexpr (Is16<T>::value) {
    if (sr) return store_as<T>(round16<T>(v, r));
  }
  return store_as<T>(v);
}

template <typename T, char Kind>
struct SamplerFunctor {
  using acc_t = typename Acc<T>::type;
  SamplerCoefs<acc_t> c;
  uint64_t seed;
  const float* grad_scale;
  const float* found_inf;
  bool noisy;
  bool sr;  // stochastic rounding (16-bit T only)

  __device__ __forceinline__ bool skip() const { return found_inf != nullptr && *found_inf != 0.0f; }

  __device__ __forceinline__ void update(acc_t& p, acc_t& b, acc_t g, acc_t z, acc_t gmul) const {
    g = effective_grad(p, g, gmul, c);
    if (Kind == 'l') p = sgld_element(p, g, z, c);
    if (Kind == 'h') sghmc_element(p, b, g, z, c);
    if (Kind == 'p') psgld_element(p, b, g, z, c);
  }

  __device__ __forceinline__ void operator()(const TensorListMeta<3>& m, int t, int64_t begin,
                                             int64_t end) const {
    T* __restrict__ p = static_cast<T*>(m.ptr[0][t]);
    const T* __restrict__ g = static_cast<const T*>(m.ptr[1][t]);
    T* __restrict__ buf = static_cast<T*>(m.ptr[2][t]);
    const PhiloxStream s = PhiloxStream::make(seed, m.stream_id[t], m.step[t]);
    const int64_t offset = m.offset[t];
    const bool scaled = grad_scale != nullptr;
    // 1/scale rounded once from double, as the CPU kernel and the reference path do
    const acc_t inv = scaled ? static_cast<acc_t>(1.0 / static_cast<double>(*grad_scale)) : acc_t(1);
    const acc_t gmul = grad_multiplier(scaled, inv, c.maximize);
    const bool vec = aligned4<T>(p) && aligned4<T>(g) && (Kind == 'l' || aligned4<T>(buf));
    const bool do_round = Is16<T>::value && sr;
    for (int64_t i = begin + 4 * static_cast<int64_t>(threadIdx.x); i < end; i += 4 * kThreads) {
      // global index of element i (i is a multiple of 4; the offset of a
      // shard may not be, then the 4 elements straddle two Philox blocks)
      const uint64_t e0 = static_cast<uint64_t>(offset + i);
      const int shift = static_cast<int>(e0 & 3);
      float z[4] = {0.f, 0.f, 0.f, 0.f};
      if (noisy) {
        float cur[4], next[4] = {0.f, 0.f, 0.f, 0.f};
        normal4(s.block(e0 >> 2), cur);
        if (shift != 0) normal4(s.block((e0 >> 2) + 1), next);
        pick4(cur, next, shift, z);
      }
      uint32_t r[4] = {0u, 0u, 0u, 0u};
      if (do_round) {  // words 2^63 + e of the same stream
        const Philox4 cur = rounding_block(s, e0 >> 2);
        const Philox4 next = shift != 0 ? rounding_block(s, (e0 >> 2) + 1) : cur;
        pick4(cur.x, next.x, shift, r);
      }
      if (vec && i + 4 <= end) {
        Vec4<T> pv = *reinterpret_cast<const Vec4<T>*>(p + i);
        const Vec4<T> gv = *reinterpret_cast<const Vec4<T>*>(g + i);
        Vec4<T> bv;
        if (Kind != 'l') bv = *reinterpret_cast<const Vec4<T>*>(buf + i);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          acc_t pk = load_as<acc_t>(pv.v[k]);
          acc_t bk = Kind != 'l' ? load_as<acc_t>(bv.v[k]) : acc_t(0);
          update(pk, bk, load_as<acc_t>(gv.v[k]), static_cast<acc_t>(z[k]), gmul);
          pv.v[k] = store_rounded<T>(pk, do_round, r[k]);
          if (Kind != 'l') bv.v[k] = store_rounded<T>(bk, do_round, r[k] >> 16);
        }
        *reinterpret_cast<Vec4<T>*>(p + i) = pv;
        if (Kind != 'l') *reinterpret_cast<Vec4<T>*>(buf + i) = bv;
      } else {
        for (int k = 0; k < 4 && i + k < end; ++k) {
          acc_t pk = load_as<acc_t>(p[i + k]);
          acc_t bk = Kind != 'l' ? load_as<acc_t>(buf[i + k]) : acc_t(0);
          update(pk, bk, load_as<acc_t>(g[i + k]), static_cast<acc_t>(z[k]), gmul);
          p[i + k] = store_rounded<T>(pk, do_round, r[k]);
          if (Kind != 'l') buf[i + k] = store_rounded<T>(bk, do_round, r[k] >> 16);
        }
      }
    }
  }
};

template <typename T, char Kind>
cudaError_t launch_typed(const TensorDesc<3>* tensors, int count, const SamplerLaunch& a,
                         cudaStream_t stream) {
  using acc_t = typename Acc<T>::type;
  SamplerFunctor<T, Kind> f;
  f.c.lr = static_cast<acc_t>(a.lr);
  f.c.weight_decay = static_cast<acc_t>(a.weight_decay);
  f.c.momentum = static_cast<acc_t>(a.momentum);
  f.c.eps = static_cast<acc_t>(a.eps);
  f.c.one_minus_alpha = static_cast<acc_t>(a.one_minus_alpha);
  f.c.noise = static_cast<acc_t>(a.noise);
  f.c.avg_floor = static_cast<acc_t>(a.avg_floor);
  f.c.maximize = a.maximize;
  f.seed = a.seed;
  f.grad_scale = a.grad_scale;
  f.found_inf = a.found_inf;
  f.noisy = a.noise != 0.0;
  f.sr = a.stochastic_rounding;
  return multi_tensor_apply<3>(tensors, count, f, stream);
}

template <typename T>
cudaError_t launch_kind(const TensorDesc<3>* tensors, int count, const SamplerLaunch& a,
                        cudaStream_t stream) {
  switch (a.kind) {
    case 'l': return launch_typed<T, 'l'>(tensors, count, a, stream);
    case 'h': return launch_typed<T, 'h'>(tensors, count, a, stream);
    case 'p': return launch_typed<T, 'p'>(tensors, count, a, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t sampler_step(Dtype dtype, const TensorDesc<3>* tensors, int count,
                         const SamplerLaunch& args, cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto t) { return launch_kind<decltype(t)>(tensors, count, args, stream); });
}

}  // namespace cuda
}  // namespace pybayes
