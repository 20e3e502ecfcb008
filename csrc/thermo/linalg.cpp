// Small dense linear algebra the simulator needs without a LAPACK: the
// symmetric eigendecomposition behind the exact OU transition, the DAC
// quantiser and the chip's effective program (quantisation + mismatch).
#include <math.h>
#include <string.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "cpu_noise.h"
#include "thermo/thermo.h"

namespace pybayes {
namespace thermo {

double quantize(double v, double full_scale, int bits) {
  if (bits <= 0 || !(full_scale > 0.0)) return v;
  const double step = ldexp(full_scale, 1 - bits);
  const double c = std::min(std::max(v, -full_scale), full_scale);
  return step * nearbyint(c / step);
}

void effective_program(int d, int k, const double* A, const double* B, const Params& p,
                       double* A_eff, double* B_eff) {
  const int64_t dd = static_cast<int64_t>(d) * d;
  memcpy(A_eff, A, sizeof(double) * dd);
  memcpy(B_eff, B, sizeof(double) * static_cast<size_t>(d) * k);
  if (p.dac_bits > 0) {
    double fs = 0.0;
    for (int64_t i = 0; i < dd; ++i) fs = std::max(fs, fabs(A[i]));
    for (int64_t i = 0; i < dd; ++i) A_eff[i] = quantize(A[i], fs, p.dac_bits);
    for (int c = 0; c < k; ++c) {
      double fb = 0.0;
      for (int i = 0; i < d; ++i) fb = std::max(fb, fabs(B[static_cast<int64_t>(i) * k + c]));
      for (int i = 0; i < d; ++i) {
        const int64_t e = static_cast<int64_t>(i) * k + c;
        B_eff[e] = quantize(B[e], fb, p.dac_bits);
      }
    }
  }
  if (p.mismatch > 0.0) {
    // E_ij for i <= j is element i*d + j of step 0; e_i element i of step 1.
    std::vector<float> z(static_cast<size_t>(d));
    const PhiloxStream sa = PhiloxStream::make(p.chip_seed, kStreamMismatch, 0);
    for (int i = 0; i < d; ++i) {
      normal_range(sa, static_cast<uint64_t>(i) * d + i, static_cast<uint64_t>(i) * d + d, z.data());
      for (int j = i; j < d; ++j) {
        const double f = 1.0 + p.mismatch * static_cast<double>(z[j - i]);
        A_eff[static_cast<int64_t>(i) * d + j] *= f;
        if (j != i) A_eff[static_cast<int64_t>(j) * d + i] *= f;
      }
    }
    const PhiloxStream sb = PhiloxStream::make(p.chip_seed, kStreamMismatch, 1);
    normal_range(sb, 0, static_cast<uint64_t>(d), z.data());
    for (int i = 0; i < d; ++i)
      for (int c = 0; c < k; ++c)
        B_eff[static_cast<int64_t>(i) * k + c] *= 1.0 + p.mismatch * static_cast<double>(z[i]);
  }
}

// Householder reduction to tridiagonal form (EISPACK tred2, as in JAMA).
// V (n x n row-major) holds A on entry and the orthogonal transformation on exit.
static void tred2(int n, std::vector<double>& V, std::vector<double>& d, std::vector<double>& e) {
  auto v = [&](int i, int j) -> double& { return V[static_cast<size_t>(i) * n + j]; };
  for (int j = 0; j < n; ++j) d[j] = v(n - 1, j);
  for (int i = n - 1; i > 0; --i) {
    double scale = 0.0, h = 0.0;
    for (int k = 0; k < i; ++k) scale += fabs(d[k]);
    if (scale == 0.0) {
      e[i] = d[i - 1];
      for (int j = 0; j < i; ++j) {
        d[j] = v(i - 1, j);
        v(i, j) = 0.0;
        v(j, i) = 0.0;
      }
    } else {
      for (int k = 0; k < i; ++k) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      double f = d[i - 1];
      double g = sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h = h - f * g;
      d[i - 1] = f - g;
      for (int j = 0; j < i; ++j) e[j] = 0.0;
      for (int j = 0; j < i; ++j) {
        f = d[j];
        v(j, i) = f;
        g = e[j] + v(j, j) * f;
        for (int k = j + 1; k <= i - 1; ++k) {
          g += v(k, j) * d[k];
          e[k] += v(k, j) * f;
        }
        e[j] = g;
      }
      f = 0.0;
      for (int j = 0; j < i; ++j) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const double hh = f / (h + h);
      for (int j = 0; j < i; ++j) e[j] -= hh * d[j];
      for (int j = 0; j < i; ++j) {
        f = d[j];
        g = e[j];
        for (int k = j; k <= i - 1; ++k) v(k, j) -= (f * e[k] + g * d[k]);
        d[j] = v(i - 1, j);
        v(i, j) = 0.0;
      }
    }
    d[i] = h;
  }
  for (int i = 0; i < n - 1; ++i) {
    v(n - 1, i) = v(i, i);
    v(i, i) = 1.0;
    const double h = d[i + 1];
    if (h != 0.0) {
      for (int k = 0; k <= i; ++k) d[k] = v(k, i + 1) / h;
      for (int j = 0; j <= i; ++j) {
        double g = 0.0;
        for (int k = 0; k <= i; ++k) g += v(k, i + 1) * v(k, j);
        for (int k = 0; k <= i; ++k) v(k, j) -= g * d[k];
      }
    }
    for (int k = 0; k <= i; ++k) v(k, i + 1) = 0.0;
  }
  for (int j = 0; j < n; ++j) {
    d[j] = v(n - 1, j);
    v(n - 1, j) = 0.0;
  }
  v(n - 1, n - 1) = 1.0;
  e[0] = 0.0;
}

// Implicit QL on the tridiagonal matrix (EISPACK tql2, as in JAMA). The
// rotations act on W = V^T (row i of W = column i of V) so they stream
// through contiguous rows.
static void tql2(int n, std::vector<double>& W, std::vector<double>& d, std::vector<double>& e) {
  auto w = [&](int i) { return W.data() + static_cast<size_t>(i) * n; };
  for (int i = 1; i < n; ++i) e[i - 1] = e[i];
  e[n - 1] = 0.0;
  double f = 0.0, tst1 = 0.0;
  const double eps = ldexp(1.0, -52);
  for (int l = 0; l < n; ++l) {
    tst1 = std::max(tst1, fabs(d[l]) + fabs(e[l]));
    int m = l;
    while (m < n) {
      if (fabs(e[m]) <= eps * tst1) break;
      ++m;
    }
    if (m == n) m = n - 1;
    if (m > l) {
      int iter = 0;
      do {
        if (++iter > 200) throw std::runtime_error("eigh: QL iteration did not converge");
        double g = d[l];
        double p = (d[l + 1] - g) / (2.0 * e[l]);
        double r = hypot(p, 1.0);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const double dl1 = d[l + 1];
        double h = g - d[l];
        for (int i = l + 2; i < n; ++i) d[i] -= h;
        f += h;
        p = d[m];
        double c = 1.0, c2 = 1.0, c3 = 1.0;
        const double el1 = e[l + 1];
        double s = 0.0, s2 = 0.0;
        for (int i = m - 1; i >= l; --i) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          double* wi = w(i);
          double* wi1 = w(i + 1);
          for (int k = 0; k < n; ++k) {
            const double hk = wi1[k];
            wi1[k] = s * wi[k] + c * hk;
            wi[k] = c * wi[k] - s * hk;
          }
        }
        p = -s * s2 * c3 * el1 * e[l] / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (fabs(e[l]) > eps * tst1);
    }
    d[l] = d[l] + f;
    e[l] = 0.0;
  }
}

void eigh(int n, const double* A, double* evals, double* evecs) {
  if (n <= 0) return;
  std::vector<double> V(A, A + static_cast<size_t>(n) * n), d(n), e(n);
  tred2(n, V, d, e);
  std::vector<double> W(static_cast<size_t>(n) * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) W[static_cast<size_t>(j) * n + i] = V[static_cast<size_t>(i) * n + j];
  tql2(n, W, d, e);
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return d[a] < d[b]; });
  for (int j = 0; j < n; ++j) {
    evals[j] = d[order[j]];
    const double* col = W.data() + static_cast<size_t>(order[j]) * n;
    for (int i = 0; i < n; ++i) evecs[static_cast<size_t>(i) * n + j] = col[i];
  }
}

}  // namespace thermo
}  // namespace pybayes
