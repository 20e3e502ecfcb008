// Torch-free entry points of the diagonal-Fisher kernels (cuda/fisher_kernels.cu).
// Plain C++ (no __global__, no <<<>>>): the glue in csrc/ops/cuda/ that
// includes it is compiled by the host compiler, not nvcc.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "tensor_desc.h"

namespace pybayes {
namespace cuda {

// One (fisher, grads) pair: contiguous, same dtype, on the current device.
// numel is fisher's element count (grads holds numel, or batch x numel).
struct FisherTensor {
  void* fisher;
  const void* grad;
  int64_t numel;
};

// F = decay * F + scale * G^2 over all tensors (one multi-tensor launch per
// kMaxTensors tensors, multi_tensor.cuh).
cudaError_t fisher_ema_launch(Dtype dtype, const FisherTensor* tensors, int count,
                              double decay, double scale, cudaStream_t stream);

// F += scale * sum_b G[b]^2 with G [batch, numel] row-major; every tensor of
// one call has the same batch size. Threads run over elements (coalesced loads
// of each row), each keeping one running sum over b = 0..batch-1 in order, so
// the result equals the CPU kernel's bit for bit.
cudaError_t fisher_per_sample_launch(Dtype dtype, const FisherTensor* tensors, int count,
                                     int64_t batch, double scale, cudaStream_t stream);

}  // namespace cuda
}  // namespace pybayes
