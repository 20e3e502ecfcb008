#include "cpu_noise.h"

#include <string.h>

// The chunk functions are cloned per instruction set (picked at load time by
// the dynamic linker). Without FMA contraction (-ffp-contract=off) every
// clone computes the same IEEE results, so the ISA never changes the bits.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define PYBAYES_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PYBAYES_CLONES
#endif

namespace pybayes {
namespace {
constexpr int kBlocks = kNoiseChunk / 4;

// Structure-of-arrays Philox so the 10 rounds vectorise across blocks.
PYBAYES_HD void philox_soa(const PhiloxStream& s, uint64_t j0, uint32_t* x0, uint32_t* x1,
                           uint32_t* x2, uint32_t* x3) {
  for (int l = 0; l < kBlocks; ++l) {
    const Philox4 r = s.block(j0 + static_cast<uint64_t>(l));
    x0[l] = r.x[0];
    x1[l] = r.x[1];
    x2[l] = r.x[2];
    x3[l] = r.x[3];
  }
}
}  // namespace

PYBAYES_CLONES void normal_chunk(const PhiloxStream& s, uint64_t c, float* out) {
  alignas(64) uint32_t x0[kBlocks], x1[kBlocks], x2[kBlocks], x3[kBlocks];
  philox_soa(s, c * kBlocks, x0, x1, x2, x3);
  alignas(64) float z0[kBlocks], z1[kBlocks], z2[kBlocks], z3[kBlocks];
  for (int l = 0; l < kBlocks; ++l) {
    box_muller(x0[l], x1[l], z0[l], z1[l]);
    box_muller(x2[l], x3[l], z2[l], z3[l]);
  }
  for (int l = 0; l < kBlocks; ++l) {
    out[4 * l + 0] = z0[l];
    out[4 * l + 1] = z1[l];
    out[4 * l + 2] = z2[l];
    out[4 * l + 3] = z3[l];
  }
}

PYBAYES_CLONES void uint32_chunk(const PhiloxStream& s, uint64_t c, uint32_t* out) {
  alignas(64) uint32_t x0[kBlocks], x1[kBlocks], x2[kBlocks], x3[kBlocks];
  philox_soa(s, c * kBlocks, x0, x1, x2, x3);
  for (int l = 0; l < kBlocks; ++l) {
    out[4 * l + 0] = x0[l];
    out[4 * l + 1] = x1[l];
    out[4 * l + 2] = x2[l];
    out[4 * l + 3] = x3[l];
  }
}

namespace {
template <typename T, void (*Chunk)(const PhiloxStream&, uint64_t, T*)>
void range_impl(const PhiloxStream& s, uint64_t begin, uint64_t end, T* out) {
  alignas(64) T tmp[kNoiseChunk];
  const uint64_t n = static_cast<uint64_t>(kNoiseChunk);
  uint64_t i = begin;
  while (i < end) {
    const uint64_t c = i / n;
    const uint64_t lo = i - c * n;
    const uint64_t hi = (end - c * n < n) ? end - c * n : n;
    if (lo == 0 && hi == n) {
      Chunk(s, c, out + (i - begin));
    } else {
      Chunk(s, c, tmp);
      memcpy(out + (i - begin), tmp + lo, (hi - lo) * sizeof(T));
    }
    i = c * n + hi;
  }
}
}  // namespace

void normal_range(const PhiloxStream& s, uint64_t begin, uint64_t end, float* out) {
  range_impl<float, normal_chunk>(s, begin, end, out);
}

void uint32_range(const PhiloxStream& s, uint64_t begin, uint64_t end, uint32_t* out) {
  range_impl<uint32_t, uint32_chunk>(s, begin, end, out);
}

const char* noise_isa() {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2")) return "avx2";
  return "x86-64";
#else
  return "generic";
#endif
}

}  // namespace pybayes
