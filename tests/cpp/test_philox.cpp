// Known-answer and accuracy tests of the shared RNG header (ctest).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

#include "check.h"
#include "cpu_noise.h"
#include "philox.h"

using namespace pybayes;

// Random123's published kat_vectors for philox4x32 with 10 rounds.
static void test_known_answers() {
  struct Kat {
    uint32_t ctr[4], key[2], expect[4];
  } kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    const Philox4 r = philox4x32<10>(k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3], k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i)
      CHECK(r.x[i] == k.expect[i], "kat word %d: got %08x want %08x", i, r.x[i], k.expect[i]);
  }
}

// log_unit and sincos_2pi against libm in double precision.
static void test_transcendentals() {
  double worst_log = 0, worst_trig = 0;
  for (uint32_t i = 0; i < (1u << 20); ++i) {
    const uint32_t x = i * 4099u + 12345u * (i >> 7);
    const float u = uniform_open0(x);
    CHECK(u > 0.0f && u <= 1.0f, "uniform_open0 out of (0,1]: %g", u);
    const double ref = log(static_cast<double>(u));
    const double err = fabs(log_unit(u) - ref) / fmax(fabs(ref), 1e-30);
    if (ref != 0.0 && err > worst_log) worst_log = err;
    const float v = uniform_closed0(x);
    CHECK(v >= 0.0f && v < 1.0f, "uniform_closed0 out of [0,1): %g", v);
    float s, c;
    sincos_2pi(v, s, c);
    const double a = 6.283185307179586 * v;
    worst_trig = fmax(worst_trig, fmax(fabs(s - sin(a)), fabs(c - cos(a))));
  }
  CHECK(worst_log < 3e-7, "log_unit relative error %g", worst_log);
  CHECK(worst_trig < 3e-7, "sincos_2pi absolute error %g", worst_trig);
}

// The vectorised chunk path equals the scalar header path bit for bit, and a
// range at any alignment equals the matching slice of a full range.
static void test_chunks_match_scalar() {
  const PhiloxStream s = PhiloxStream::make(0x0123456789abcdefull, 7, 42);
  const uint64_t n = 3 * kNoiseChunk + 17;
  std::vector<float> full(n);
  normal_range(s, 0, n, full.data());
  for (uint64_t i = 0; i < n; ++i) {
    float z[4];
    normal4(s.block(i / 4), z);
    CHECK(full[i] == z[i % 4], "normal %llu differs", (unsigned long long)i);
  }
  for (uint64_t b : {1ull, 5ull, 255ull, 256ull, 300ull}) {
    std::vector<float> part(n - b);
    normal_range(s, b, n, part.data());
    for (uint64_t i = b; i < n; ++i) CHECK(part[i - b] == full[i], "offset %llu", (unsigned long long)b);
  }
  std::vector<uint32_t> words(n);
  uint32_range(s, 0, n, words.data());
  for (uint64_t i = 0; i < n; ++i) CHECK(words[i] == s.block(i / 4).x[i % 4], "uint32 %llu", (unsigned long long)i);
}

int main() {
  test_known_answers();
  test_transcendentals();
  test_chunks_match_scalar();
  printf("noise ISA: %s\n", noise_isa());
  const int failures = check_failures();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("philox tests passed\n");
  return 0;
}
