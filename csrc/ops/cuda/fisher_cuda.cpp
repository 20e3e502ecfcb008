// CUDA glue of the diagonal-Fisher ops: validation (shared with the CPU path),
// grouping by dtype (and, for the per-sample op, by batch size), one
// multi-tensor launch per group on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <map>
#include <utility>
#include <vector>

#include "../fisher_args.h"
#include "fisher_launch.h"
#include "launch_config.h"

namespace pybayes {
namespace ops {
namespace {


cuda::FisherTensor fisher_desc(const at::Tensor& f, const at::Tensor& g) {
  cuda::FisherTensor d;
  d.fisher = f.data_ptr();
  d.grad = g.data_ptr();
  d.numel = f.numel();
  return d;
}

void fisher_diag_accumulate_cuda(at::TensorList fisher, at::TensorList grads, double decay,
                                 double scale) {
  const char* op = "fisher_diag_accumulate_";
  check_fisher_lists(op, fisher, grads, /*per_sample=*/false);
  check_fisher_scalars(op, decay, scale);
  if (fisher.empty()) return;
  TORCH_CHECK(fisher[0].is_cuda(), op, ": fisher[0] must be a CUDA tensor, got ", fisher[0].device());
  const c10::cuda::CUDAGuard guard(fisher[0].device());
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
    std::vector<cuda::FisherTensor> group;
    for (size_t i = 0; i < fisher.size(); ++i) {
      if (fisher[i].scalar_type() != dtype || fisher[i].numel() == 0) continue;
      group.push_back(fisher_desc(fisher[i], grads[i]));
    }
    if (group.empty()) continue;
    C10_CUDA_CHECK(cuda::fisher_ema_launch(to_cuda_dtype(dtype), group.data(),
                                           static_cast<int>(group.size()), decay, scale,
                                           c10::cuda::getCurrentCUDAStream()));
  }
}

void fisher_diag_accumulate_per_sample_cuda(at::TensorList fisher, at::TensorList grads,
                                            double scale) {
  const char* op = "fisher_diag_accumulate_per_sample_";
  check_fisher_lists(op, fisher, grads, /*per_sample=*/true);
  check_fisher_scalars(op, 1.0, scale);
  if (fisher.empty()) return;
  TORCH_CHECK(fisher[0].is_cuda(), op, ": fisher[0] must be a CUDA tensor, got ", fisher[0].device());
  const c10::cuda::CUDAGuard guard(fisher[0].device());
  // (dtype, batch) -> tensors; a batch of 0 adds nothing (F += 0).
  std::map<std::pair<int, int64_t>, std::vector<cuda::FisherTensor>> groups;
  for (size_t i = 0; i < fisher.size(); ++i) {
    if (fisher[i].numel() == 0) continue;
    const int64_t batch = grads[i].size(0);
    groups[{static_cast<int>(fisher[i].scalar_type()), batch}].push_back(fisher_desc(fisher[i], grads[i]));
  }
  for (auto& kv : groups) {
    const auto dtype = static_cast<at::ScalarType>(kv.first.first);
    C10_CUDA_CHECK(cuda::fisher_per_sample_launch(to_cuda_dtype(dtype), kv.second.data(),
                                                  static_cast<int>(kv.second.size()), kv.first.second,
                                                  scale, c10::cuda::getCurrentCUDAStream()));
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(pybayes, CUDA, m) {
  m.impl("fisher_diag_accumulate_", &fisher_diag_accumulate_cuda);
  m.impl("fisher_diag_accumulate_per_sample_", &fisher_diag_accumulate_per_sample_cuda);
}

}  // namespace ops
}  // namespace pybayes
