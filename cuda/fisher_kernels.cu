// Diagonal-Fisher accumulation kernels over lists of tensors (one launch per
// (device, dtype) group via multi_tensor.cuh). Per-element math from
// csrc/fisher_math.h, shared with the CPU kernels and pSGLD; float accumulation
// for float32/float16/bfloat16, double for float64.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "fisher_launch.h"
#include "fisher_math.h"
#include "convert.cuh"
#include "multi_tensor.cuh"

namespace pybayes {
namespace cuda {
namespace {

template <typename T>
struct EmaFunctor {
  using acc_t = typename Acc<T>::type;
  acc_t decay, scale;

  __device__ __forceinline__ bool skip() const { return false; }

  __device__ __forceinline__ void operator()(const TensorListMeta<2>& m, int t, int64_t begin,
                                             int64_t end) const {
    T* __restrict__ f = static_cast<T*>(m.ptr[0][t]);
    const T* __restrict__ g = static_cast<const T*>(m.ptr[1][t]);
    const bool vec = aligned4<T>(f) && aligned4<T>(g);  // begin is a multiple of kChunk (of 4)
    for (int64_t i = begin + 4 * static_cast<int64_t>(threadIdx.x); i < end; i += 4 * kThreads) {
      if (vec && i + 4 <= end) {
        Vec4<T> fv = *reinterpret_cast<const Vec4<T>*>(f + i);
        const Vec4<T> gv = *reinterpret_cast<const Vec4<T>*>(g + i);
#pragma unroll
        for (int k = 0; k < 4; ++k)
          fv.v[k] = store_as<T>(::pybayes::fisher_ema(load_as<acc_t>(fv.v[k]), load_as<acc_t>(gv.v[k]), decay, scale));
        *reinterpret_cast<Vec4<T>*>(f + i) = fv;
      } else {
        for (int k = 0; k < 4 && i + k < end; ++k)
          f[i + k] = store_as<T>(::pybayes::fisher_ema(load_as<acc_t>(f[i + k]), load_as<acc_t>(g[i + k]), decay, scale));
      }
    }
  }
};

// Elements [begin, end) of one tensor: each thread owns 4 consecutive
// elements at a time and walks the batch rows; consecutive threads read
// consecutive addresses of a row (coalesced, 4-wide vector loads when the row
// stride keeps the alignment).
template <typename T>
struct PerSampleFunctor {
  using acc_t = typename Acc<T>::type;
  acc_t scale;
  int64_t batch;

  __device__ __forceinline__ bool skip() const { return false; }

  __device__ __forceinline__ void operator()(const TensorListMeta<2>& m, int t, int64_t begin,
                                             int64_t end) const {
    T* __restrict__ f = static_cast<T*>(m.ptr[0][t]);
    const T* __restrict__ g = static_cast<const T*>(m.ptr[1][t]);
    const int64_t n = m.numel[t];
    const bool vec = aligned4<T>(f) && aligned4<T>(g) && (n % 4 == 0);
    for (int64_t i = begin + 4 * static_cast<int64_t>(threadIdx.x); i < end; i += 4 * kThreads) {
      acc_t s[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
      if (vec && i + 4 <= end) {
        for (int64_t b = 0; b < batch; ++b) {
          const Vec4<T> gv = *reinterpret_cast<const Vec4<T>*>(g + b * n + i);
#pragma unroll
          for (int k = 0; k < 4; ++k) s[k] = fisher_sumsq_step(s[k], load_as<acc_t>(gv.v[k]));
        }
        Vec4<T> fv = *reinterpret_cast<const Vec4<T>*>(f + i);
#pragma unroll
        for (int k = 0; k < 4; ++k) fv.v[k] = store_as<T>(fisher_add_scaled(load_as<acc_t>(fv.v[k]), s[k], scale));
        *reinterpret_cast<Vec4<T>*>(f + i) = fv;
      } else {
        const int kn = static_cast<int>(end - i < 4 ? end - i : 4);
        for (int64_t b = 0; b < batch; ++b) {
          const T* row = g + b * n + i;
          for (int k = 0; k < kn; ++k) s[k] = fisher_sumsq_step(s[k], load_as<acc_t>(row[k]));
        }
        for (int k = 0; k < kn; ++k) f[i + k] = store_as<T>(fisher_add_scaled(load_as<acc_t>(f[i + k]), s[k], scale));
      }
    }
  }
};

// Runs f over the tensors in slices of kMaxTensors descriptors (host side).
template <typename Functor>
cudaError_t apply(const FisherTensor* tensors, int count, const Functor& f, cudaStream_t stream) {
  TensorDesc<2> desc[kMaxTensors];
  for (int b = 0; b < count; b += kMaxTensors) {
    const int m = count - b < kMaxTensors ? count - b : kMaxTensors;
    for (int i = 0; i < m; ++i) {
      desc[i].ptr[0] = tensors[b + i].fisher;
      desc[i].ptr[1] = const_cast<void*>(tensors[b + i].grad);
      desc[i].numel = tensors[b + i].numel;
      desc[i].stream_id = 0;
      desc[i].step = 0;
      desc[i].offset = 0;
    }
    const cudaError_t err = multi_tensor_apply<2>(desc, m, f, stream);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template <typename T>
cudaError_t ema_typed(const FisherTensor* tensors, int count, double decay, double scale,
                      cudaStream_t stream) {
  using acc_t = typename Acc<T>::type;
  EmaFunctor<T> fn;
  fn.decay = static_cast<acc_t>(decay);
  fn.scale = static_cast<acc_t>(scale);
  return apply(tensors, count, fn, stream);
}

template <typename T>
cudaError_t per_sample_typed(const FisherTensor* tensors, int count, int64_t batch, double scale,
                             cudaStream_t stream) {
  using acc_t = typename Acc<T>::type;
  PerSampleFunctor<T> fn;
  fn.scale = static_cast<acc_t>(scale);
  fn.batch = batch;
  return apply(tensors, count, fn, stream);
}

}  // namespace

cudaError_t fisher_ema_launch(Dtype dtype, const FisherTensor* tensors, int count,
                              double decay, double scale, cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto t) {
    return ema_typed<decltype(t)>(tensors, count, decay, scale, stream);
  });
}

cudaError_t fisher_per_sample_launch(Dtype dtype, const FisherTensor* tensors, int count,
                                     int64_t batch, double scale, cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto t) {
    return per_sample_typed<decltype(t)>(tensors, count, batch, scale, stream);
  });
}

}  // namespace cuda
}  // namespace pybayes
