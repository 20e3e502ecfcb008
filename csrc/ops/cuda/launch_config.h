// Glue-side launch helper: torch dtype -> the kernels' Dtype (the grid is
// sized by the launcher itself, cuda/multi_tensor.cuh).
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

}  // namespace ops
}  // namespace pybayes
