// Stand-in for the header a CUDA build of torch generates (a CPU wheel lacks
// it), so tests/test_cuda_glue.py can syntax-check csrc/ops/cuda/*.cpp here.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
