// Torch-free entry points of the fused sampler kernels (cuda/sampler_kernels.cu).
// Plain C++: the glue in csrc/ops/cuda/ includes it with the host compiler.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "tensor_desc.h"

namespace pybayes {
namespace cuda {

struct SamplerLaunch {
  char kind;              // 'l' SGLD, 'h' SGHMC, 'p' pSGLD
  double lr, weight_decay, momentum, eps, one_minus_alpha, noise, avg_floor;  // see sampler_math.h
  bool maximize;
  bool stochastic_rounding;  // float16/bfloat16 results rounded stochastically (sampler_math.h)
  uint64_t seed;
  const float* grad_scale;  // nullptr: gradients are not scaled
  const float* found_inf;   // nullptr or device flag: non-zero -> the kernel changes nothing
};

// tensors[i].ptr = {param, grad, buffer (momentum or square_avg; unused by SGLD)},
// all of dtype `dtype`, contiguous, on the current device.
cudaError_t sampler_step(Dtype dtype, const TensorDesc<3>* tensors, int count,
                         const SamplerLaunch& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace pybayes
