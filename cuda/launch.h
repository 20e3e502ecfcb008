// Torch-free entry points of the CUDA kernels (DESIGN.md §2). The torch glue
// in csrc/ops/cuda/ validates tensors and calls these with raw pointers, sizes
// and the current stream; nothing here includes a torch header, so nvcc can
// compile-check cuda/ on a machine without a CUDA build of torch.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

namespace pybayes {
namespace cuda {

// Elements [offset, offset + n) of the Philox stream (seed, stream, step).
// Uniform words are widened to int64 (torch has no full uint32 support).
cudaError_t philox_fill_uint32(int64_t* out, int64_t n, uint64_t seed, uint64_t offset,
                               uint32_t stream, uint32_t step, cudaStream_t cuda_stream);
cudaError_t philox_fill_normal(float* out, int64_t n, uint64_t seed, uint64_t offset,
                               uint32_t stream, uint32_t step, cudaStream_t cuda_stream);

}  // namespace cuda
}  // namespace pybayes
