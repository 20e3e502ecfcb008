// Argument checks shared by the op implementations. Every message names the
// argument and what was expected; checks run before anything is written.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace pybayes {
namespace ops {

inline void check_stream_args(int64_t offset, int64_t stream, int64_t step) {
  TORCH_CHECK(offset >= 0, "offset must be >= 0, got ", offset);
  TORCH_CHECK(stream >= 0 && stream <= 0xFFFFFFFFll, "stream must be in [0, 2**32), got ", stream);
  TORCH_CHECK(step >= 0 && step <= 0xFFFFFFFFll, "step must be in [0, 2**32), got ", step);
}

inline void check_out(const at::Tensor& out, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(out.scalar_type() == dtype, name, " must be ", c10::toString(dtype), ", got ",
              out.scalar_type());
  TORCH_CHECK(out.is_contiguous(), name, " must be contiguous");
}

// Same element-to-memory map: equal shapes and equal strides on every dim of
// size > 1 (the stride of a size-1 dim is never used).
inline bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  return true;
}

// A tensor an element-wise kernel can stream as numel consecutive elements
// from data_ptr: dense without gaps or self-overlap (contiguous, channels_last
// or any other permutation of its dims).
inline void check_dense(const at::Tensor& t, const char* op, const char* name, size_t i) {
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", name, "[", i, "] must be a dense (strided) tensor, got ",
              t.layout());
  TORCH_CHECK(t.is_non_overlapping_and_dense(), op, ": ", name, "[", i,
              "] must be dense without gaps or self-overlap (contiguous, channels_last or another "
              "permutation of its dims), got shape ", t.sizes(), " with strides ", t.strides());
}

// Memory overlap between the tensors of one call. Each tensor must be dense
// (check_dense), so it occupies exactly [data_ptr, data_ptr + nbytes). Two
// tensors may share memory only if neither is written (`written[i]`).
// Returns the first clashing pair (earlier, later) or {-1, -1}. O(n log n).
inline std::pair<int64_t, int64_t> find_overlap(at::TensorList ts, const std::vector<bool>& written) {
  struct Span {
    int64_t dev;
    uintptr_t begin, end;
    int64_t index;
  };
  std::vector<Span> spans;
  spans.reserve(ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    const at::Tensor& t = ts[i];
    if (!t.defined() || t.numel() == 0 || t.is_meta()) continue;
    const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
    const int64_t dev = static_cast<int64_t>(t.device().type()) * 1024 + t.device().index();
    spans.push_back({dev, begin, begin + static_cast<uintptr_t>(t.numel() * t.element_size()),
                     static_cast<int64_t>(i)});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.dev != b.dev ? a.dev < b.dev : a.begin < b.begin;
  });
  // furthest end among earlier spans of the same device: any of them, and written ones
  int64_t any = -1, wr = -1;
  for (size_t k = 0; k < spans.size(); ++k) {
    const Span& s = spans[k];
    if (k > 0 && spans[k - 1].dev != s.dev) any = wr = -1;
    const bool w = written[s.index];
    if (w && any >= 0 && spans[any].end > s.begin) return {spans[any].index, s.index};
    if (!w && wr >= 0 && spans[wr].end > s.begin) return {spans[wr].index, s.index};
    if (any < 0 || s.end > spans[any].end) any = static_cast<int64_t>(k);
    if (w && (wr < 0 || s.end > spans[wr].end)) wr = static_cast<int64_t>(k);
  }
  return {-1, -1};
}

// The overlap check of an op over named lists: `lists[l]` is called
// `names[l]` and is written iff `written[l]`. Raises naming both tensors.
inline void check_no_overlap(const char* op, const std::vector<at::TensorList>& lists,
                             const std::vector<const char*>& names, const std::vector<bool>& written) {
  std::vector<at::Tensor> all;
  std::vector<bool> w;
  std::vector<std::pair<size_t, size_t>> where;
  for (size_t l = 0; l < lists.size(); ++l)
    for (size_t i = 0; i < lists[l].size(); ++i) {
      all.push_back(lists[l][i]);
      w.push_back(written[l]);
      where.emplace_back(l, i);
    }
  const auto clash = find_overlap(all, w);
  if (clash.first < 0) return;
  const auto a = where[clash.first], b = where[clash.second];
  TORCH_CHECK(false, op, ": ", names[a.first], "[", a.second, "] and ", names[b.first], "[", b.second,
              "] overlap in memory (views of one storage, or one tensor passed twice); an updated "
              "tensor may share memory with no other tensor of the call");
}

}  // namespace ops
}  // namespace pybayes
