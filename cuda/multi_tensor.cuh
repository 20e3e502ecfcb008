// Torch-free multi-tensor launcher: one kernel launch covers a whole list of
// tensors (up to kMaxTensors per launch; more tensors -> more launches).
// Tensors are cut into chunks of kChunk elements; a block walks the chunks in
// a grid-stride loop and finds each chunk's tensor by binary search over the
// chunk prefix sums. The metadata travels by value in the kernel parameters
// (as in PyTorch's and apex's multi_tensor_apply); CUDA >= 12.1 allows 32 KB of
// parameters on sm_70+, and this struct stays well under it.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "tensor_desc.h"

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

// Launch over all tensors (empty ones skipped). max_blocks bounds the grid
// (e.g. a few waves of the SM count).
template <int NLISTS, typename Functor>
cudaError_t multi_tensor_apply(const TensorDesc<NLISTS>* tensors, int count, const Functor& f,
                               int max_blocks, cudaStream_t stream) {
  TensorListMeta<NLISTS> meta;
  meta.n = 0;
  meta.chunk_begin[0] = 0;
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
    const bool last = (i == count - 1);
    if (meta.n == kMaxTensors || last) {
      const int64_t chunks = meta.chunk_begin[meta.n];
      const int grid = static_cast<int>(chunks < max_blocks ? chunks : max_blocks);
      multi_tensor_kernel<NLISTS, Functor><<<grid, kThreads, 0, stream>>>(meta, f);
      const cudaError_t err = cudaGetLastError();
      if (err != cudaSuccess) return err;
      meta.n = 0;
    }
  }
  if (meta.n > 0) {  // trailing empties after the last non-empty tensor
    const int64_t chunks = meta.chunk_begin[meta.n];
    const int grid = static_cast<int>(chunks < max_blocks ? chunks : max_blocks);
    multi_tensor_kernel<NLISTS, Functor><<<grid, kThreads, 0, stream>>>(meta, f);
    return cudaGetLastError();
  }
  return cudaSuccess;
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
