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
// (N <= 4 columns: 8 interleaved partial sums reduced in a fixed order), whatever
// micro-kernel row block the entry falls in, so any split of the rows between
// threads gives identical bits.
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "thermo/thermo.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#endif

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

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
// Explicit-intrinsics micro-kernels (the auto-vectorised loop above does not keep an
// 8 x 16 accumulator block in registers). Same FMA sequence per C entry as micro<>.
template <int MR>
PYBAYES_TARGET("avx512f,avx512vl,avx512dq,avx2,fma")
inline void micro512(int64_t K, const double* A, int64_t lda, const double* Bp, double* C, int64_t ldc,
                     int nc, bool accumulate) {
  __m512d acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) {
    if (accumulate) {
      alignas(64) double t[16] = {0};
      for (int c = 0; c < nc; ++c) t[c] = C[r * ldc + c];
      acc0[r] = _mm512_load_pd(t);
      acc1[r] = _mm512_load_pd(t + 8);
    } else {
      acc0[r] = _mm512_setzero_pd();
      acc1[r] = _mm512_setzero_pd();
    }
  }
  for (int64_t j = 0; j < K; ++j) {
    const __m512d b0 = _mm512_loadu_pd(Bp + j * 16);
    const __m512d b1 = _mm512_loadu_pd(Bp + j * 16 + 8);
    for (int r = 0; r < MR; ++r) {
      const __m512d a = _mm512_set1_pd(A[r * lda + j]);
      acc0[r] = _mm512_fmadd_pd(a, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_pd(a, b1, acc1[r]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    if (nc == 16) {
      _mm512_storeu_pd(C + r * ldc, acc0[r]);
      _mm512_storeu_pd(C + r * ldc + 8, acc1[r]);
    } else {
      alignas(64) double t[16];
      _mm512_store_pd(t, acc0[r]);
      _mm512_store_pd(t + 8, acc1[r]);
      for (int c = 0; c < nc; ++c) C[r * ldc + c] = t[c];
    }
  }
}

template <int MR>
PYBAYES_TARGET("avx2,fma")
inline void micro256(int64_t K, const double* A, int64_t lda, const double* Bp, double* C, int64_t ldc,
                     int nc, bool accumulate) {
  __m256d acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) {
    if (accumulate) {
      alignas(32) double t[8] = {0};
      for (int c = 0; c < nc; ++c) t[c] = C[r * ldc + c];
      acc0[r] = _mm256_load_pd(t);
      acc1[r] = _mm256_load_pd(t + 4);
    } else {
      acc0[r] = _mm256_setzero_pd();
      acc1[r] = _mm256_setzero_pd();
    }
  }
  for (int64_t j = 0; j < K; ++j) {
    const __m256d b0 = _mm256_loadu_pd(Bp + j * 8);
    const __m256d b1 = _mm256_loadu_pd(Bp + j * 8 + 4);
    for (int r = 0; r < MR; ++r) {
      const __m256d a = _mm256_broadcast_sd(A + r * lda + j);
      acc0[r] = _mm256_fmadd_pd(a, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_pd(a, b1, acc1[r]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    alignas(32) double t[8];
    _mm256_store_pd(t, acc0[r]);
    _mm256_store_pd(t + 4, acc1[r]);
    for (int c = 0; c < nc; ++c) C[r * ldc + c] = t[c];
  }
}
#endif

// Default: the portable loop kernel.
struct LoopMicro {
  template <int MR, int NR, bool kFma>
  static PYBAYES_INLINE void run(int64_t K, const double* A, int64_t lda, const double* Bp, double* C,
                                 int64_t ldc, int nc, bool accumulate) {
    micro<MR, NR, kFma>(K, A, lda, Bp, C, ldc, nc, accumulate);
  }
};
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
struct Micro512 {
  template <int MR, int NR, bool kFma>
  static PYBAYES_INLINE void run(int64_t K, const double* A, int64_t lda, const double* Bp, double* C,
                                 int64_t ldc, int nc, bool accumulate) {
    micro512<MR>(K, A, lda, Bp, C, ldc, nc, accumulate);
  }
};
struct Micro256 {
  template <int MR, int NR, bool kFma>
  static PYBAYES_INLINE void run(int64_t K, const double* A, int64_t lda, const double* Bp, double* C,
                                 int64_t ldc, int nc, bool accumulate) {
    micro256<MR>(K, A, lda, Bp, C, ldc, nc, accumulate);
  }
};
#endif

thread_local std::vector<double> tl_panel;

template <int MR, int NR, bool kFma, typename Micro>
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
  if (N <= 4) {  // a few right-hand sides: column by column beats padding NR-wide panels
    for (int64_t c = 0; c < N; ++c) {
      int64_t i = 0;
      for (; i + 4 <= M; i += 4)
        micro_dot<4, kFma>(K, A + i * lda, lda, B + c, ldb, C + i * ldc + c, ldc, accumulate);
      for (; i < M; ++i) micro_dot<1, kFma>(K, A + i * lda, lda, B + c, ldb, C + i * ldc + c, ldc, accumulate);
    }
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
      Micro::template run<MR, NR, kFma>(K, A + i * lda, lda, pack.data() + p * K * NR, C + i * ldc + p * NR,
                                        ldc, nc, accumulate);
    }
  for (; i < M; ++i)
    for (int64_t p = 0; p < panels; ++p) {
      const int nc = static_cast<int>(N - p * NR < NR ? N - p * NR : NR);
      Micro::template run<1, NR, kFma>(K, A + i * lda, lda, pack.data() + p * K * NR, C + i * ldc + p * NR,
                                       ldc, nc, accumulate);
    }
}

#if PYBAYES_X86_CLONES
PYBAYES_TARGET("avx512f,avx512vl,avx512dq,avx2,fma")
void gemm_avx512(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
                 int64_t ldb, double* C, int64_t ldc, bool accumulate) {
  gemm_impl<8, 16, true, Micro512>(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}
PYBAYES_TARGET("avx2,fma")
void gemm_avx2(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
               int64_t ldb, double* C, int64_t ldc, bool accumulate) {
  gemm_impl<4, 8, true, Micro256>(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}
#endif
void gemm_generic(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
                  int64_t ldb, double* C, int64_t ldc, bool accumulate) {
  gemm_impl<4, 4, false, LoopMicro>(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
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
