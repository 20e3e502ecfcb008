// Host-side description of one tensor for the multi-tensor launcher. Plain C++
// (no device code): the torch glue in csrc/ops/cuda/ is compiled by the host
// compiler and includes this through the launch headers.
#pragma once

#include <stdint.h>

namespace pybayes {
namespace cuda {

// Parameter dtypes the kernels are instantiated for.
enum class Dtype { kFloat32, kFloat64, kFloat16, kBFloat16 };

// Up to NLISTS pointers to equal-size arrays (param, grad, buffer...), the
// element count, the noise stream (param id, step) and the global index of the
// first element (non-zero for a shard) of one tensor.
template <int NLISTS>
struct TensorDesc {
  void* ptr[NLISTS];
  int64_t numel;
  uint32_t stream_id;
  uint32_t step;
  int64_t offset;
};

}  // namespace cuda
}  // namespace pybayes
