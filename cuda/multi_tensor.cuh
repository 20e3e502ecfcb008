// Torch-free multi-tensor launcher: one kernel launch covers a whole list of
// tensors (up to kMaxTensors per launch; more tensors -> more launches).
// Tensors are cut into chunks of kChunk elements; a block walks the chunks in
// a grid-stride loop and finds each chunk's tensor by binary search over the
// chunk prefix sums. The metadata travels by value in the kernel parameters
// (as in PyTorch's and apex's multi_tensor_apply); CUDA >= 12.1 allows 32 KB of
// parameters on sm_70+, and this struct (~14 KB for three lists) stays under it.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include <atomic>

#include "tensor_desc.h"

// Older toolkits cap kernel parameters at 4 KB: refuse them here rather than
// fail at launch (setup.py says the same before compiling anything).
#if defined(__CUDACC_VER_MAJOR__) && \
    (__CUDACC_VER_MAJOR__ < 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ < 1))
#error "pybayes' multi-tensor kernels pass ~14 KB of metadata by value: they need CUDA >= 12.1"
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
#error "pybayes' multi-tensor kernels need sm_70 or newer (32 KB kernel parameters): set TORCH_CUDA_ARCH_LIST"
#endif

namespace pybayes {
namespace cuda {

constexpr int kMaxTensors = 256;
constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;  // elements per chunk; a multiple of 4 (one Philox block per thread)

template <int NLISTS>
struct TensorListMeta {
  void* ptr[NLISTS][kMaxTensors];
  int64_t numel[kMaxTensors];
  uint32_t stream_id[kMaxTensors];
  uint32_t step[kMaxTensors];
  int64_t offset[kMaxTensors];
  int64_t chunk_begin[kMaxTensors + 1];  // prefix sums of chunk counts
  int n;
};

// The tensor that owns global chunk c: largest t with chunk_begin[t] <= c.
template <int NLISTS>
__device__ __forceinline__ int find_tensor(const TensorListMeta<NLISTS>& m, int64_t c) {
  int lo = 0, hi = m.n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (m.chunk_begin[mid] <= c) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Functor contract: __device__ void operator()(const TensorListMeta<N>&, int t,
// int64_t begin, int64_t end) processes elements [begin, end) of tensor t.
template <int NLISTS, typename Functor>
__global__ void __launch_bounds__(kThreads)
    multi_tensor_kernel(const __grid_constant__ TensorListMeta<NLISTS> meta, Functor f) {
  if (f.skip()) return;  // e.g. AMP found_inf: nothing changes
  const int64_t total = meta.chunk_begin[meta.n];
  for (int64_t c = blockIdx.x; c < total; c += gridDim.x) {
    const int t = find_tensor(meta, c);
    const int64_t begin = (c - meta.chunk_begin[t]) * kChunk;
    const int64_t end = begin + kChunk < meta.numel[t] ? begin + kChunk : meta.numel[t];
    f(meta, t, begin, end);
  }
}

// Blocks of `kernel` that are resident on the current device at once
// (occupancy per SM x SMs): the grid never exceeds one full wave, so no tail
// wave runs underfilled whatever the kernel's register count. Cached per
// device and kernel: the step runs every iteration and must stay cheap (and
// capturable in a CUDA graph after its first call).
constexpr int kMaxDevices = 64;

template <typename Kernel>
cudaError_t resident_blocks(Kernel kernel, int* blocks) {
  static std::atomic<int> cache[kMaxDevices];  // 0: not yet queried
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  const bool cached = dev < kMaxDevices;
  if (cached && (*blocks = cache[dev].load(std::memory_order_relaxed)) > 0) return cudaSuccess;
  int sms = 0, per_sm = 0;
  err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (err != cudaSuccess) return err;
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0);
  if (err != cudaSuccess) return err;
  *blocks = sms * (per_sm > 0 ? per_sm : 1);
  if (cached) cache[dev].store(*blocks, std::memory_order_relaxed);
  return cudaSuccess;
}

// Launch over all tensors (empty ones skipped), kMaxTensors per launch.
template <int NLISTS, typename Functor>
cudaError_t multi_tensor_apply(const TensorDesc<NLISTS>* tensors, int count, const Functor& f,
                               cudaStream_t stream) {
  int max_blocks = 0;
  cudaError_t err = resident_blocks(multi_tensor_kernel<NLISTS, Functor>, &max_blocks);
  if (err != cudaSuccess) return err;
  TensorListMeta<NLISTS> meta;
  meta.n = 0;
  meta.chunk_begin[0] = 0;
  const auto launch = [&]() {
    const int64_t chunks = meta.chunk_begin[meta.n];
    const int grid = static_cast<int>(chunks < max_blocks ? chunks : max_blocks);
    multi_tensor_kernel<NLISTS, Functor><<<grid, kThreads, 0, stream>>>(meta, f);
    meta.n = 0;
    return cudaGetLastError();
  };
  for (int i = 0; i < count; ++i) {
    const TensorDesc<NLISTS>& d = tensors[i];
    if (d.numel == 0) continue;
    const int k = meta.n;
    for (int l = 0; l < NLISTS; ++l) meta.ptr[l][k] = d.ptr[l];
    meta.numel[k] = d.numel;
    meta.stream_id[k] = d.stream_id;
    meta.step[k] = d.step;
    meta.offset[k] = d.offset;
    meta.chunk_begin[k + 1] = meta.chunk_begin[k] + (d.numel + kChunk - 1) / kChunk;
    meta.n = k + 1;
    if (meta.n == kMaxTensors && (err = launch()) != cudaSuccess) return err;
  }
  return meta.n > 0 ? launch() : cudaSuccess;
}

// Four consecutive elements, for 8/16/32-byte vector loads and stores.
template <typename T>
struct alignas(4 * sizeof(T)) Vec4 {
  T v[4];
};

template <typename T>
__device__ __forceinline__ bool aligned4(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T))) == 0;
}

}  // namespace cuda
}  // namespace pybayes
