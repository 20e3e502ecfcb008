// Philox stream ops: the raw block function (for known-answer tests) and the
// fills that expose a stream as uint32 words or N(0,1) floats. The fused
// sampler kernels draw from the same streams element by element.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "cpu_noise.h"

namespace pybayes {
namespace ops {
namespace {

at::Tensor philox4x32_cpu(const at::Tensor& counters, const at::Tensor& key) {
  TORCH_CHECK(counters.scalar_type() == at::kLong && counters.dim() == 2 && counters.size(1) == 4,
              "counters must be an int64 tensor of shape (n, 4), got ", counters.scalar_type(), " ",
              counters.sizes());
  TORCH_CHECK(key.scalar_type() == at::kLong && key.numel() == 2,
              "key must be an int64 tensor of 2 words, got ", key.scalar_type(), " ", key.sizes());
  auto c = counters.contiguous();
  auto k = key.contiguous();
  TORCH_CHECK(c.ge(0).all().item<bool>() && c.le(0xFFFFFFFFll).all().item<bool>(),
              "counters words must be in [0, 2**32)");
  TORCH_CHECK(k.ge(0).all().item<bool>() && k.le(0xFFFFFFFFll).all().item<bool>(),
              "key words must be in [0, 2**32)");
  auto out = at::empty_like(c);
  const int64_t* cp = c.data_ptr<int64_t>();
  const int64_t* kp = k.data_ptr<int64_t>();
  int64_t* op = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < c.size(0); ++i) {
    const Philox4 r = philox4x32<10>(cp[4 * i], cp[4 * i + 1], cp[4 * i + 2], cp[4 * i + 3],
                                     kp[0], kp[1]);
    for (int w = 0; w < 4; ++w) op[4 * i + w] = r.x[w];
  }
  return out;
}

// Threads split the index range at chunk boundaries; values depend only on the
// element index, so the result is the same for any thread count.
template <typename Fill>
void parallel_chunks(int64_t n, Fill fill) {
  const int64_t chunks = (n + kNoiseChunk - 1) / kNoiseChunk;
  at::parallel_for(0, chunks, 64, [&](int64_t c0, int64_t c1) {
    fill(c0 * kNoiseChunk, std::min(n, c1 * kNoiseChunk));
  });
}

void philox_fill_uint32_cpu(at::Tensor& out, int64_t seed, int64_t offset, int64_t stream,
                            int64_t step) {
  check_stream_args(offset, stream, step);
  check_out(out, at::kLong, "out");
  const PhiloxStream s = PhiloxStream::make(static_cast<uint64_t>(seed), stream, step);
  int64_t* p = out.data_ptr<int64_t>();
  parallel_chunks(out.numel(), [&](int64_t b, int64_t e) {
    uint32_t tmp[kNoiseChunk];
    for (int64_t i = b; i < e; i += kNoiseChunk) {
      const int64_t m = std::min<int64_t>(kNoiseChunk, e - i);
      uint32_range(s, offset + i, offset + i + m, tmp);
      for (int64_t k = 0; k < m; ++k) p[i + k] = tmp[k];
    }
  });
}

void philox_fill_normal_cpu(at::Tensor& out, int64_t seed, int64_t offset, int64_t stream,
                            int64_t step) {
  check_stream_args(offset, stream, step);
  check_out(out, at::kFloat, "out");
  const PhiloxStream s = PhiloxStream::make(static_cast<uint64_t>(seed), stream, step);
  float* p = out.data_ptr<float>();
  parallel_chunks(out.numel(), [&](int64_t b, int64_t e) { normal_range(s, offset + b, offset + e, p + b); });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pybayes, m) {
  m.def("philox4x32(Tensor counters, Tensor key) -> Tensor");
  m.def("philox_fill_uint32_(Tensor(a!) out, int seed, int offset, int stream, int step) -> ()");
  m.def("philox_fill_normal_(Tensor(a!) out, int seed, int offset, int stream, int step) -> ()");
}

TORCH_LIBRARY_IMPL(pybayes, CPU, m) {
  m.impl("philox4x32", &philox4x32_cpu);
  m.impl("philox_fill_uint32_", &philox_fill_uint32_cpu);
  m.impl("philox_fill_normal_", &philox_fill_normal_cpu);
}

}  // namespace ops
}  // namespace pybayes
