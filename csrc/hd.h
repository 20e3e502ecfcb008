// Host+device portability macros shared by every header that both the CPU
// kernels (g++) and the CUDA kernels (nvcc) include.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PYBAYES_HD __host__ __device__ __forceinline__
#else
#define PYBAYES_HD inline __attribute__((always_inline))
#endif
