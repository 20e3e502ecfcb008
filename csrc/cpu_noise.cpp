#include "cpu_noise.h"

#include <string.h>

// The chunk functions are cloned per instruction-set level (x86-64-v4 =
// AVX-512 F/BW/DQ/VL, v3 = AVX2; picked at load time by the dynamic linker). Without FMA contraction (-ffp-contract=off) every
// clone computes the same IEEE results, so the ISA never changes the bits.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define PYBAYES_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PYBAYES_CLONES
#endif

namespace pybayes {
namespace {
constexpr int kBlocks = kNoiseChunk / 4;

// Structure-of-arrays Philox: rounds outside, blocks inside, so each round is
// one vectorised pass of 32-bit lanes with widening multiplies. A chunk's
// blocks j0..j0+63 share the high counter word (j0 is a multiple of 64), so
// the low word never carries. Same arithmetic as philox4x32<10> (ctest-checked).
inline void philox_soa(const PhiloxStream& s, uint64_t j0, uint32_t* x0, uint32_t* x1,
                       uint32_t* x2, uint32_t* x3) {
  using namespace philox_detail;
  const uint32_t lo = static_cast<uint32_t>(j0), hi = static_cast<uint32_t>(j0 >> 32);
  for (int l = 0; l < kBlocks; ++l) {
    x0[l] = lo + static_cast<uint32_t>(l);
    x1[l] = hi;
    x2[l] = s.stream;
    x3[l] = s.step;
  }
  uint32_t k0 = s.k0, k1 = s.k1;
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    for (int l = 0; l < kBlocks; ++l) {
      const uint64_t p0 = static_cast<uint64_t>(kM0) * x0[l];
      const uint64_t p1 = static_cast<uint64_t>(kM1) * x2[l];
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ x1[l] ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ x3[l] ^ k1;
      x1[l] = static_cast<uint32_t>(p1);
      x3[l] = static_cast<uint32_t>(p0);
      x0[l] = n0;
      x2[l] = n2;
    }
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
  if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4 (AVX-512)";
  if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3 (AVX2)";
  return "x86-64";
#else
  return "generic";
#endif
}

}  // namespace pybayes
