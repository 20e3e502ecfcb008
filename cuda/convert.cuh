// Loads and stores between a parameter dtype T and its math type (float for
// float16/bfloat16/float32, double for float64), shared by the kernels, and the
// launchers' dispatch from Dtype to the element type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "tensor_desc.h"

namespace pybayes {
namespace cuda {

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

template <typename A, typename T> __device__ __forceinline__ A load_as(T v) { return static_cast<A>(v); }
template <> __device__ __forceinline__ float load_as<float, __half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float load_as<float, __nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T, typename A> __device__ __forceinline__ T store_as(A v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half store_as<__half, float>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 store_as<__nv_bfloat16, float>(float v) { return __float2bfloat16_rn(v); }

// Calls f(T{}) with the element type of `dtype` (host side, in the launchers).
template <typename F>
cudaError_t dispatch_dtype(Dtype dtype, F&& f) {
  switch (dtype) {
    case Dtype::kFloat32: return f(float{});
    case Dtype::kFloat64: return f(double{});
    case Dtype::kFloat16: return f(__half{});
    case Dtype::kBFloat16: return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace pybayes
