// ctest for the thermo simulator core (csrc/thermo): eigensolver, blocked
// matrix product, DAC quantiser, mismatch, ADC clipping, thread-count
// independence and the exact integrator's stationary variance.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdexcept>
#include <vector>

#include "check.h"
#include "thermo/thermo.h"

using namespace pybayes::thermo;


static uint64_t lcg_state = 12345;
static double urand() {  // deterministic test data, not the chip's noise
  lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
  return static_cast<double>(lcg_state >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

// SPD test matrix: M M^T / d + shift I
static std::vector<double> spd(int d, double shift) {
  std::vector<double> M(d * d), A(d * d, 0.0);
  for (auto& v : M) v = urand();
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      double s = 0;
      for (int l = 0; l < d; ++l) s += M[i * d + l] * M[j * d + l];
      A[i * d + j] = s / d + (i == j ? shift : 0.0);
    }
  return A;
}

static void test_eigh() {
  for (int d : {1, 2, 5, 33, 100}) {
    std::vector<double> A = spd(d, 0.1);
    A[0] = -3.0;  // make it indefinite: eigh must not care
    std::vector<double> w(d), V(d * d);
    eigh(d, A.data(), w.data(), V.data());
    double err = 0, orth = 0, scale = 0;
    for (double a : A) scale = fmax(scale, fabs(a));
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) {
        double av = 0, vv = 0;
        for (int l = 0; l < d; ++l) {
          av += A[i * d + l] * V[l * d + j];
          vv += V[l * d + i] * V[l * d + j];
        }
        err = fmax(err, fabs(av - w[j] * V[i * d + j]));
        orth = fmax(orth, fabs(vv - (i == j ? 1.0 : 0.0)));
      }
    for (int j = 1; j < d; ++j) CHECK(w[j - 1] <= w[j], "eigh: eigenvalues not ascending (d=%d)", d);
    CHECK(err < 1e-12 * scale * d, "eigh: |AV - VL| = %g (d=%d)", err, d);
    CHECK(orth < 1e-12 * d, "eigh: |V^T V - I| = %g (d=%d)", orth, d);
  }
}

static void test_gemm() {
  const int shapes[][3] = {{1, 1, 1}, {7, 1, 13}, {64, 1, 64}, {9, 3, 17}, {33, 16, 40}, {100, 37, 65}, {17, 130, 5}};
  for (auto& s : shapes) {
    const int M = s[0], N = s[1], K = s[2];
    std::vector<double> A(M * K), B(K * N), C(M * N), C0(M * N);
    for (auto& v : A) v = urand();
    for (auto& v : B) v = urand();
    for (auto& v : C0) v = urand();
    for (int acc = 0; acc < 2; ++acc) {
      C = C0;
      gemm(M, N, K, A.data(), K, B.data(), N, C.data(), N, acc == 1);
      double err = 0;
      for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
          double r = acc ? C0[i * N + j] : 0.0;
          for (int l = 0; l < K; ++l) r += A[i * K + l] * B[l * N + j];
          err = fmax(err, fabs(r - C[i * N + j]));
        }
      CHECK(err < 1e-13 * K, "gemm %dx%dx%d acc=%d: err %g", M, N, K, acc, err);
    }
    // rows computed in any split give identical bits
    std::vector<double> C1(M * N), C2(M * N);
    gemm(M, N, K, A.data(), K, B.data(), N, C1.data(), N, false);
    const int cut = M / 3;
    gemm(cut, N, K, A.data(), K, B.data(), N, C2.data(), N, false);
    gemm(M - cut, N, K, A.data() + cut * K, K, B.data(), N, C2.data() + cut * N, N, false);
    CHECK(memcmp(C1.data(), C2.data(), sizeof(double) * M * N) == 0, "gemm: row split changes bits (%dx%dx%d)", M, N, K);
  }
}

static void test_quantize_and_mismatch() {
  for (int bits : {2, 4, 8, 12}) {
    double worst = 0;
    for (int t = 0; t < 1000; ++t) {
      const double v = urand() * 3.0;
      worst = fmax(worst, fabs(quantize(v, 3.0, bits) - v));
    }
    CHECK(worst <= ldexp(3.0, -bits) * (1 + 1e-15), "quantize %d bits: error %g > 2^-k FS", bits, worst);
  }
  const int d = 12;
  std::vector<double> A = spd(d, 1.0), B(d, 1.0), Ae(d * d), Be(d), Ae2(d * d), Be2(d);
  Params p;
  p.mismatch = 0.05;
  p.chip_seed = 7;
  effective_program(d, 1, A.data(), B.data(), p, Ae.data(), Be.data());
  effective_program(d, 1, A.data(), B.data(), p, Ae2.data(), Be2.data());
  CHECK(memcmp(Ae.data(), Ae2.data(), sizeof(double) * d * d) == 0, "mismatch not reproducible");
  bool sym = true, changed = false;
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      sym = sym && Ae[i * d + j] == Ae[j * d + i];
      changed = changed || Ae[i * d + j] != A[i * d + j];
    }
  CHECK(sym && changed, "mismatch must be symmetric and change A");
  p.chip_seed = 8;
  effective_program(d, 1, A.data(), B.data(), p, Ae2.data(), Be2.data());
  CHECK(memcmp(Ae.data(), Ae2.data(), sizeof(double) * d * d) != 0, "another chip_seed gives the same chip");
}

// Exact integrator on a diagonal A: each cell is an independent OU process with
// stationary variance 1/(beta a_i); check the sample variance within 6 sigma.
static void test_exact_variance_and_threads() {
  const int d = 64;
  std::vector<double> A(d * d, 0.0), B(d, 0.0);
  for (int i = 0; i < d; ++i) A[i * d + i] = 0.5 + i * 0.05;
  Params p;
  p.integrator = Integrator::kExact;
  p.beta = 2.0;
  p.dt = 3.0;  // successive samples nearly independent: lag correlation exp(-a dt)
  p.seed = 11;
  Simulator sim(d, 1, A.data(), B.data(), p);
  const int64_t n = 20000;
  std::vector<double> x0(d, 0.0);
  for (int i = 0; i < d; ++i) x0[i] = 1.0 / sqrt(p.beta * A[i * d + i]) * 0.0;
  sim.set_state(x0.data());
  sim.advance(200, nullptr, nullptr, nullptr);
  std::vector<double> sum(d, 0.0), sxx(d * d, 0.0);
  sim.advance(n, sum.data(), sxx.data(), nullptr);
  double worst = 0;
  for (int i = 0; i < d; ++i) {
    const double a = A[i * d + i], var = 1.0 / (p.beta * a), rho = exp(-a * p.dt);
    const double m = sum[i] / n, v = sxx[i * d + i] / n - m * m;
    // Var of the sample variance of an AR(1) with lag-1 correlation rho
    const double se = var * sqrt(2.0 / n * (1 + rho * rho) / (1 - rho * rho));
    worst = fmax(worst, fabs(v - var) / se);
  }
  CHECK(worst < 6.0, "exact integrator variance off by %.2f sigma", worst);

  // Bitwise identical for 1 and 2 threads, Euler and exact, k = 3.
  for (Integrator integ : {Integrator::kEuler, Integrator::kExact}) {
    const int dd = 70, k = 3;
    std::vector<double> AA = spd(dd, 1.0), BB(dd * k);
    for (auto& v : BB) v = urand();
    std::vector<double> traj[2], s2[2], c2[2];
    for (int t = 0; t < 2; ++t) {
      Params q;
      q.integrator = integ;
      q.dt = 0.2;
      q.substeps = 4;
      q.seed = 5;
      q.threads = t + 1;
      q.adc_bits = 10;
      q.adc_range = 1.0;
      Simulator s(dd, k, AA.data(), BB.data(), q);
      traj[t].assign(50 * dd * k, 0.0);
      s2[t].assign(dd * k, 0.0);
      c2[t].assign(dd * dd, 0.0);
      s.advance(50, s2[t].data(), c2[t].data(), traj[t].data());
      s.advance(71, s2[t].data(), c2[t].data(), nullptr);
    }
    CHECK(traj[0] == traj[1] && s2[0] == s2[1] && c2[0] == c2[1], "1 vs 2 threads differ (integrator %d)",
          static_cast<int>(integ));
  }
}

static void test_clipping_and_errors() {
  const int d = 16;
  std::vector<double> A(d * d, 0.0), B(d, 3.0);
  for (int i = 0; i < d; ++i) A[i * d + i] = 1.0;  // x ~ N(3, 1)
  Params p;
  p.integrator = Integrator::kExact;
  p.dt = 5.0;
  p.adc_range = 3.0;  // half of the readings above the range
  Simulator sim(d, 1, A.data(), B.data(), p);
  std::vector<double> x0(d, 3.0);
  sim.set_state(x0.data());
  const int64_t n = 4000;
  std::vector<double> traj(n * d);
  AdvanceStats st = sim.advance(n, nullptr, nullptr, traj.data());
  int64_t above = 0;
  for (double v : traj) {
    CHECK(v <= 3.0 && v >= -3.0, "reading %g outside the ADC range", v);
    above += v == 3.0;
  }
  CHECK(st.clipped == above && st.readings == n * d, "clipped %lld vs %lld", (long long)st.clipped, (long long)above);
  const double frac = static_cast<double>(st.clipped) / st.readings;
  CHECK(fabs(frac - 0.5) < 6 * sqrt(0.25 / st.readings), "clipped fraction %g, expected 0.5", frac);

  A[0] = -1.0;
  bool threw = false;
  try {
    Simulator bad(d, 1, A.data(), B.data(), p);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "indefinite A accepted by the exact integrator");
  A[0] = 1.0;
  p.dt = -1.0;
  threw = false;
  try {
    Simulator bad(d, 1, A.data(), B.data(), p);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "dt < 0 accepted");
}

// A run stopped by RunHooks::poll throws Interrupted and the simulator refuses
// to continue; a worker thread that cannot start throws, changes nothing, and
// the next run gives the bits of a fresh simulator.
static void test_interrupt_and_thread_failure() {
  const int d = 80;
  std::vector<double> A = spd(d, 1.0), B(d, 1.0);
  Params p;
  p.dt = 0.1;
  p.substeps = 2;
  p.threads = 2;
  set_test_hooks(-1, 2);
  {
    Simulator sim(d, 1, A.data(), B.data(), p);
    int polls = 0;
    RunHooks hooks;
    hooks.poll = [&] { return ++polls >= 3; };
    hooks.poll_interval_ms = 5;
    bool interrupted = false;
    try {
      sim.advance(int64_t(1) << 40, nullptr, nullptr, nullptr, &hooks);
    } catch (const Interrupted&) {
      interrupted = true;
    }
    CHECK(interrupted && polls == 3, "run not interrupted by the poll hook (polls %d)", polls);
    bool refused = false;
    try {
      sim.advance(1, nullptr, nullptr, nullptr);
    } catch (const std::runtime_error&) {
      refused = true;
    }
    CHECK(refused, "an interrupted simulator ran again");
  }
  for (int watched = 0; watched < 2; ++watched) {
    Simulator sim(d, 1, A.data(), B.data(), p), fresh(d, 1, A.data(), B.data(), p);
    RunHooks hooks;
    hooks.poll = [] { return false; };
    const RunHooks* h = watched ? &hooks : nullptr;
    set_test_hooks(0, 2);
    bool threw = false;
    std::vector<double> s1(d, 0.0), s2(d, 0.0);
    try {
      sim.advance(30, s1.data(), nullptr, nullptr, h);
    } catch (const std::runtime_error& e) {
      threw = strstr(e.what(), "could not start simulator thread") != nullptr;
    }
    set_test_hooks(-1, 2);
    CHECK(threw && sim.samples_done() == 0, "thread start failure not reported (watched %d)", watched);
    std::fill(s1.begin(), s1.end(), 0.0);
    sim.advance(30, s1.data(), nullptr, nullptr, h);
    fresh.advance(30, s2.data(), nullptr, nullptr, nullptr);
    CHECK(s1 == s2, "the run after a failed thread start differs from a fresh one (watched %d)", watched);
  }
  set_test_hooks(-1, 0);
}

int main() {
  test_eigh();
  test_gemm();
  test_quantize_and_mismatch();
  test_exact_variance_and_threads();
  test_clipping_and_errors();
  test_interrupt_and_thread_failure();
  const int failures = check_failures();
  if (failures) {
    fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  printf("test_thermo: all passed (gemm isa %s)\n", gemm_isa());
  return 0;
}
