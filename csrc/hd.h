// Host+device portability macros shared by every header that both the CPU
// kernels (g++) and the CUDA kernels (nvcc) include.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PYBAYES_HD __host__ __device__ __forceinline__
#else
#define PYBAYES_HD inline __attribute__((always_inline))
#endif

// The RNG contract (DESIGN.md §4) needs the same float operations on every
// path: fast-math approximates sqrt/log/division and contracts a*b+c into
// FMAs differently on the host and the device. g++ -ffast-math defines
// __FAST_MATH__, older nvcc --use_fast_math __USE_FAST_MATH__; nvcc 13 defines
// nothing, so setup.py also refuses fast-math in the nvcc flags.
#if defined(__USE_FAST_MATH__) || defined(__FAST_MATH__)
#error "pybayes must not be built with fast-math (--use_fast_math / -ffast-math): the noise would differ between CPU and CUDA"
#endif
