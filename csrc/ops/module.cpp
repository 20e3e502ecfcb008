// The pybayes._C extension: the `pybayes` op library and a small Python
// module that reports what this build contains (`python -m pybayes info`).
#include <torch/extension.h>

#include "cpu_noise.h"
#include "pybayes_build_config.h"
#include "sampler_args.h"

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
  // The optimizers run the sampler ops' own checks for every param group
  // before the first kernel (a group that fails leaves every group untouched).
  m.def(
      "check_sampler_call",
      [](const std::string& kind, const std::string& op, const std::vector<at::Tensor>& params,
         const std::vector<at::Tensor>& grads, const std::vector<at::Tensor>& bufs,
         const std::vector<int64_t>& ids, const std::vector<int64_t>& steps, double lr,
         double weight_decay, double momentum, double eps, double temperature, double num_data,
         bool maximize, const c10::optional<at::Tensor>& grad_scale,
         const c10::optional<at::Tensor>& found_inf, const c10::optional<std::vector<int64_t>>& offsets,
         bool overlap) {
        TORCH_CHECK(kind.size() == 1 && std::string("lhp").find(kind[0]) != std::string::npos,
                    "check_sampler_call: kind must be 'l', 'h' or 'p', got '", kind, "'");
        const pybayes::ops::SamplerHyper h{lr, weight_decay, momentum, eps, temperature, num_data, maximize};
        at::OptionalIntArrayRef off = c10::nullopt;
        if (offsets.has_value()) off = at::IntArrayRef(*offsets);
        pybayes::ops::check_sampler_call(kind[0], op.c_str(), params, grads, bufs, ids, steps, h,
                                         grad_scale, found_inf, off, overlap);
      },
      "the argument checks of torch.ops.pybayes.<op> (raises what the op would raise)");
  m.def(
      "find_overlap",
      [](const std::vector<at::Tensor>& tensors, const std::vector<bool>& written) {
        TORCH_CHECK(written.size() == tensors.size(), "find_overlap: one flag per tensor");
        return pybayes::ops::find_overlap(tensors, written);
      },
      "(i, j) of the first two dense tensors sharing memory where one is written, or (-1, -1)");
}
