// Cache-blocked double-precision matrix product for the simulator's step
// (A X, d x d by d x k) and its covariance accumulation (P P^T).
//
// Register-blocked micro-kernels (MR rows x NR columns of C held in vector
// registers, B packed into NR-wide zero-padded panels so its loads are
// contiguous), written as plain loops that g++ vectorises, and compiled three
// times: AVX-512 (8 x 16), AVX2+FMA (4 x 8) and generic SSE2 (4 x 4, no FMA).
// The clone is chosen once at run time.
//
// Determinism: every C entry is acc = C0; for j = 0..K-1: acc = fma(A_ij, B_jk, acc)
// (matrix-vector: 8 interleaved partial sums reduced in a fixed order), whatever
// micro-kernel row block the entry falls in, so any split of the rows between
// threads gives identical bits.
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "thermo/thermo.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define PYBAYES_X86_CLONES 1
#define PYBAYES_TARGET(s) __attribute__((target(s)))
#else
#define PYBAYES_X86_CLONES 0
#define PYBAYES_TARGET(s)
#endif
#define PYBAYES_INLINE inline __attribute__((always_inline))

namespace pybayes {
namespace thermo {
namespace {

template <bool kFma>
PYBAYES_INLINE double madd(double a, double b, double c) {
  if (kFma) return __builtin_fma(a, b, c);
  return a * b + c;
}

// C[0:MR, 0:nc] (+)= A[0:MR, 0:K] * Bp (K x NR panel).
template <int MR, int NR, bool kFma>
PYBAYES_INLINE void micro(int64_t K, const double* A, int64_t lda, const double* Bp, double* C,
                          int64_t ldc, int nc, bool accumulate) {
  double acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) acc[r][c] = (accumulate && c < nc) ? C[r * ldc + c] : 0.0;
  for (int64_t j = 0; j < K; ++j) {
    const double* b = Bp + j * NR;
    for (int r = 0; r < MR; ++r) {
      const double a = A[r * lda + j];
      for (int c = 0; c < NR; ++c) acc[r][c] = madd<kFma>(a, b[c], acc[r][c]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < nc; ++c) C[r * ldc + c] = acc[r][c];
}

// y[0:MR] (+)= A[0:MR, :] . x with 8 interleaved partial sums per row.
template <int MR, bool kFma>
PYBAYES_INLINE void micro_dot(int64_t K, const double* A, int64_t lda, const double* x,
                              int64_t incx, double* y, int64_t incy, bool accumulate) {
  constexpr int L = 8;
  double acc[MR][L];
  for (int r = 0; r < MR; ++r)
    for (int l = 0; l < L; ++l) acc[r][l] = 0.0;
  const int64_t K8 = K - K % L;
  for (int64_t j = 0; j < K8; j += L) {
    double xv[L];
    for (int l = 0; l < L; ++l) xv[l] = x[(j + l) * incx];
    for (int r = 0; r < MR; ++r)
      for (int l = 0; l < L; ++l) acc[r][l] = madd<kFma>(A[r * lda + j + l], xv[l], acc[r][l]);
  }
  for (int64_t j = K8; j < K; ++j)
    for (int r = 0; r < MR; ++r)
      acc[r][j - K8] = madd<kFma>(A[r * lda + j], x[j * incx], acc[r][j - K8]);
  for (int r = 0; r < MR; ++r) {
    const double s = ((acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3])) +
                     ((acc[r][4] + acc[r][5]) + (acc[r][6] + acc[r][7]));
    y[r * incy] = accumulate ? y[r * incy] + s : s;
  }
}

thread_local std::vector<double> tl_panel;

template <int MR, int NR, bool kFma>
PYBAYES_INLINE void gemm_impl(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
                              const double* B, int64_t ldb, double* C, int64_t ldc,
                              bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) memset(C + i * ldc, 0, sizeof(double) * N);
    return;
  }
  if (N == 1) {
    int64_t i = 0;
    for (; i + 4 <= M; i += 4) micro_dot<4, kFma>(K, A + i * lda, lda, B, ldb, C + i * ldc, ldc, accumulate);
    for (; i < M; ++i) micro_dot<1, kFma>(K, A + i * lda, lda, B, ldb, C + i * ldc, ldc, accumulate);
    return;
  }
  const int64_t panels = (N + NR - 1) / NR;
  std::vector<double>& pack = tl_panel;
  if (static_cast<int64_t>(pack.size()) < panels * K * NR) pack.resize(panels * K * NR);
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t c0 = p * NR;
    const int nc = static_cast<int>(N - c0 < NR ? N - c0 : NR);
    double* dst = pack.data() + p * K * NR;
    for (int64_t j = 0; j < K; ++j) {
      const double* src = B + j * ldb + c0;
      for (int c = 0; c < NR; ++c) dst[j * NR + c] = c < nc ? src[c] : 0.0;
    }
  }
  // Row blocks outermost so a block of A stays in L1 across the panels.
  int64_t i = 0;
  for (; i + MR <= M; i += MR)
    for (int64_t p = 0; p < panels; ++p) {
      const int nc = static_cast<int>(N - p * NR < NR ? N - p * NR : NR);
      micro<MR, NR, kFma>(K, A + i * lda, lda, pack.data() + p * K * NR, C + i * ldc + p * NR, ldc,
                          nc, accumulate);
    }
  for (; i < M; ++i)
    for (int64_t p = 0; p < panels; ++p) {
      const int nc = static_cast<int>(N - p * NR < NR ? N - p * NR : NR);
      micro<1, NR, kFma>(K, A + i * lda, lda, pack.data() + p * K * NR, C + i * ldc + p * NR, ldc,
                         nc, accumulate);
    }
}

#if PYBAYES_X86_CLONES
PYBAYES_TARGET("avx512f,avx512vl,avx512dq,avx2,fma")
void gemm_avx512(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
                 int64_t ldb, double* C, int64_t ldc, bool accumulate) {
  gemm_impl<8, 16, true>(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}
PYBAYES_TARGET("avx2,fma")
void gemm_avx2(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
               int64_t ldb, double* C, int64_t ldc, bool accumulate) {
  gemm_impl<4, 8, true>(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}
#endif
void gemm_generic(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
                  int64_t ldb, double* C, int64_t ldc, bool accumulate) {
  gemm_impl<4, 4, false>(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

using GemmFn = void (*)(int64_t, int64_t, int64_t, const double*, int64_t, const double*, int64_t,
                        double*, int64_t, bool);

struct Dispatch {
  GemmFn fn = gemm_generic;
  const char* name = "generic";
  Dispatch() {
    const char* force = getenv("PYBAYES_THERMO_ISA");  // testing: generic / avx2 / avx512
#if PYBAYES_X86_CLONES
    __builtin_cpu_init();
    const bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512dq");
    const bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool want_generic = force && strcmp(force, "generic") == 0;
    const bool want_avx2 = force && strcmp(force, "avx2") == 0;
    if (!want_generic && !want_avx2 && has512) {
      fn = gemm_avx512;
      name = "avx512";
    } else if (!want_generic && has2) {
      fn = gemm_avx2;
      name = "avx2+fma";
    }
#else
    (void)force;
#endif
  }
};

const Dispatch& dispatch() {
  static const Dispatch d;
  return d;
}

}  // namespace

void gemm(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
          int64_t ldb, double* C, int64_t ldc, bool accumulate) {
  dispatch().fn(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

const char* gemm_isa() { return dispatch().name; }

}  // namespace thermo
}  // namespace pybayes
