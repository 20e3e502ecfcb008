// Glue-side launch helpers: torch dtype -> the kernels' Dtype, grid bound.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>
#include <c10/util/Exception.h>

#include "tensor_desc.h"

namespace pybayes {
namespace ops {

inline cuda::Dtype to_cuda_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::Dtype::kFloat32;
    case at::kDouble: return cuda::Dtype::kFloat64;
    case at::kHalf: return cuda::Dtype::kFloat16;
    case at::kBFloat16: return cuda::Dtype::kBFloat16;
    default: TORCH_CHECK(false, "no CUDA kernel for dtype ", t);
  }
}

// A few waves of the device's SMs; blocks grid-stride over the chunks.
inline int max_blocks(const c10::Device& device) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device.index()));
  return sms * 8;
}

}  // namespace ops
}  // namespace pybayes
