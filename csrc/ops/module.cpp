// The pybayes._C extension: the `pybayes` op library and a small Python
// module that reports what this build contains (`python -m pybayes info`).
#include <torch/extension.h>

#include "cpu_noise.h"
#include "pybayes_build_config.h"

// Every op family declares its schemas in its own TORCH_LIBRARY_FRAGMENT
// (rng_ops.cpp, sampler_ops.cpp, fisher_ops.cpp); this is the library's root.
TORCH_LIBRARY(pybayes, m) {}

namespace {
pybind11::dict build_info() {
  pybind11::dict d;
  d["cuda"] = static_cast<bool>(PYBAYES_BUILD_CUDA);
  d["cuda_archs"] = std::string(PYBAYES_BUILD_CUDA_ARCHS);
  d["note"] = std::string(PYBAYES_BUILD_NOTE);
  d["built_with_torch"] = std::string(PYBAYES_BUILD_TORCH);
  d["cpu_noise_isa"] = std::string(pybayes::noise_isa());
#if defined(_OPENMP)
  d["openmp"] = true;  // this extension's parallel_for really runs in parallel
#else
  d["openmp"] = false;
#endif
  return d;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pybayes compiled ops (registered under torch.ops.pybayes)";
  m.def("build_info", &build_info, "what this build of pybayes._C contains");
}
