// CUDA glue of the Philox fills: checks, device guard, current stream.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../checks.h"
#include "launch.h"

namespace pybayes {
namespace ops {
namespace {

void philox_fill_uint32_cuda(at::Tensor& out, int64_t seed, int64_t offset, int64_t stream,
                             int64_t step) {
  check_stream_args(offset, stream, step);
  check_out(out, at::kLong, "out");
  const c10::cuda::CUDAGuard guard(out.device());
  C10_CUDA_CHECK(cuda::philox_fill_uint32(out.data_ptr<int64_t>(), out.numel(),
                                          static_cast<uint64_t>(seed), offset, stream, step,
                                          c10::cuda::getCurrentCUDAStream()));
}

void philox_fill_normal_cuda(at::Tensor& out, int64_t seed, int64_t offset, int64_t stream,
                             int64_t step) {
  check_stream_args(offset, stream, step);
  check_out(out, at::kFloat, "out");
  const c10::cuda::CUDAGuard guard(out.device());
  C10_CUDA_CHECK(cuda::philox_fill_normal(out.data_ptr<float>(), out.numel(),
                                          static_cast<uint64_t>(seed), offset, stream, step,
                                          c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(pybayes, CUDA, m) {
  m.impl("philox_fill_uint32_", &philox_fill_uint32_cuda);
  m.impl("philox_fill_normal_", &philox_fill_normal_cuda);
}

}  // namespace ops
}  // namespace pybayes
