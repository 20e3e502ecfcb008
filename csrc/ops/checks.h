// Argument checks shared by the op implementations. Every message names the
// argument and what was expected; checks run before anything is written.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

#include <string>

namespace pybayes {
namespace ops {

inline void check_stream_args(int64_t offset, int64_t stream, int64_t step) {
  TORCH_CHECK(offset >= 0, "offset must be >= 0, got ", offset);
  TORCH_CHECK(stream >= 0 && stream <= 0xFFFFFFFFll, "stream must be in [0, 2**32), got ", stream);
  TORCH_CHECK(step >= 0 && step <= 0xFFFFFFFFll, "step must be in [0, 2**32), got ", step);
}

inline void check_out(const at::Tensor& out, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(out.scalar_type() == dtype, name, " must be ", c10::toString(dtype), ", got ",
              out.scalar_type());
  TORCH_CHECK(out.is_contiguous(), name, " must be contiguous");
}

}  // namespace ops
}  // namespace pybayes
