// Fill kernels for the Philox streams: one thread per Philox block (4 words
// or 4 normals), so the output of a thread does not depend on the launch
// configuration.
#include "launch.h"
#include "philox.h"

namespace pybayes {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, bool kNormal>
__global__ void __launch_bounds__(kThreads)
    philox_fill_kernel(T* __restrict__ out, int64_t n, uint64_t offset, PhiloxStream s) {
  const uint64_t first_block = offset / 4;
  const uint64_t blocks = (offset + static_cast<uint64_t>(n) + 3) / 4 - first_block;
  for (uint64_t b = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; b < blocks;
       b += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const uint64_t j = first_block + b;
    const Philox4 r = s.block(j);
    T v[4];
    if constexpr (kNormal) {
      float z[4];
      normal4(r, z);
      for (int k = 0; k < 4; ++k) v[k] = z[k];
    } else {
      for (int k = 0; k < 4; ++k) v[k] = static_cast<T>(r.x[k]);
    }
    for (int k = 0; k < 4; ++k) {
      const uint64_t i = 4 * j + k;  // global element index
      if (i >= offset && i < offset + static_cast<uint64_t>(n)) out[i - offset] = v[k];
    }
  }
}

template <typename T, bool kNormal>
cudaError_t launch_fill(T* out, int64_t n, uint64_t seed, uint64_t offset, uint32_t stream,
                        uint32_t step, cudaStream_t cuda_stream) {
  if (n <= 0) return cudaSuccess;
  const uint64_t blocks = (offset + static_cast<uint64_t>(n) + 3) / 4 - offset / 4;
  const uint64_t grid = (blocks + kThreads - 1) / kThreads;
  const unsigned grid_x = static_cast<unsigned>(grid < 65535ull * 32 ? grid : 65535ull * 32);
  philox_fill_kernel<T, kNormal><<<grid_x, kThreads, 0, cuda_stream>>>(
      out, n, offset, PhiloxStream::make(seed, stream, step));
  return cudaGetLastError();
}

}  // namespace

cudaError_t philox_fill_uint32(int64_t* out, int64_t n, uint64_t seed, uint64_t offset,
                               uint32_t stream, uint32_t step, cudaStream_t cuda_stream) {
  return launch_fill<int64_t, false>(out, n, seed, offset, stream, step, cuda_stream);
}

cudaError_t philox_fill_normal(float* out, int64_t n, uint64_t seed, uint64_t offset,
                               uint32_t stream, uint32_t step, cudaStream_t cuda_stream) {
  return launch_fill<float, true>(out, n, seed, offset, stream, step, cuda_stream);
}

}  // namespace cuda
}  // namespace pybayes
