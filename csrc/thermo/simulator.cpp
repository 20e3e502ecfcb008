// The chip's time evolution: Euler–Maruyama with substeps per ADC sample, or
// the exact OU transition in the eigenbasis of a symmetric A; ADC read-out;
// accumulation of the estimators' sums. Multi-threaded over rows (cells) with
// one barrier per step; noise is indexed by (seed, step, cell, column) only.
//
// A run can be stopped: every barrier and every step polls an abort flag, set
// when a worker fails, when a worker thread cannot be started, or when the
// caller's RunHooks::poll (Ctrl-C) asks for it.
#include <math.h>
#include <sched.h>
#include <cmath>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "cpu_noise.h"
#include "thermo/thermo.h"

namespace pybayes {
namespace thermo {
namespace {

std::atomic<int> g_fail_spawn_at{-1};
std::atomic<int> g_test_cores{0};

// Thrown inside a worker when the run is aborted; never leaves advance().
struct Aborted {};

using AbortFlag = std::atomic<bool>;

inline void check_abort(const AbortFlag* abort) {
  if (abort->load(std::memory_order_relaxed)) throw Aborted{};
}

// Sense-by-generation spin barrier; yields after a short spin so it behaves
// when there are more threads than free cores. Waiting threads leave (throw
// Aborted) once the abort flag is set, so a failed or interrupted thread never
// leaves the others stuck.
class SpinBarrier {
 public:
  SpinBarrier(int n, const AbortFlag* abort) : n_(n), abort_(abort) {}
  void wait() {
    if (n_ <= 1) {
      check_abort(abort_);
      return;
    }
    const int g = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
      check_abort(abort_);
      return;
    }
    for (int spins = 0; gen_.load(std::memory_order_acquire) == g; ++spins) {
      check_abort(abort_);
      if (spins < 2000) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  const int n_;
  const AbortFlag* abort_;
  std::atomic<int> count_{0};
  std::atomic<int> gen_{0};
};

PhiloxStream step_stream(uint64_t seed, uint32_t base, uint64_t step) {
  return PhiloxStream::make(seed, base + static_cast<uint32_t>(step >> 32),
                            static_cast<uint32_t>(step));
}

constexpr int kSampleBuffer = 64;  // ADC samples per covariance update (P P^T)
constexpr int kFlushRows = 128;    // rows of P P^T between abort checks

}  // namespace

int available_cores() {
  const int forced = g_test_cores.load();
  if (forced > 0) return forced;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const int hw = static_cast<int>(std::thread::hardware_concurrency());
  return hw > 0 ? hw : 1;
}

void set_test_hooks(int fail_thread_spawn_at, int cores) {
  g_fail_spawn_at.store(fail_thread_spawn_at);
  g_test_cores.store(cores > 0 ? cores : 0);
}

Simulator::Simulator(int d, int k, const double* A, const double* B, const Params& p)
    : d_(d), k_(k), p_(p) {
  if (d < 1) throw std::invalid_argument("thermo: d must be >= 1");
  if (k < 1) throw std::invalid_argument("thermo: k (number of right-hand sides) must be >= 1");
  if (!(p.beta > 0.0) || !std::isfinite(p.beta)) throw std::invalid_argument("thermo: beta must be > 0");
  if (!(p.dt > 0.0) || !std::isfinite(p.dt)) throw std::invalid_argument("thermo: dt must be > 0");
  if (p.substeps < 1) throw std::invalid_argument("thermo: substeps must be >= 1");
  if (p.dac_bits < 0 || p.dac_bits > 52) throw std::invalid_argument("thermo: dac_bits must be in [0, 52]");
  if (p.adc_bits < 0 || p.adc_bits > 52) throw std::invalid_argument("thermo: adc_bits must be in [0, 52]");
  if (p.adc_bits > 0 && !(p.adc_range > 0.0))
    throw std::invalid_argument("thermo: adc_bits needs adc_range > 0 (the ADC full scale)");
  if (!(p.mismatch >= 0.0) || !std::isfinite(p.mismatch))
    throw std::invalid_argument("thermo: mismatch must be >= 0");
  const size_t dd = static_cast<size_t>(d) * d, dk = static_cast<size_t>(d) * k;
  A_eff_.resize(dd);
  B_eff_.resize(dk);
  effective_program(d, k, A, B, p, A_eff_.data(), B_eff_.data());
  for (size_t i = 0; i < dd; ++i)
    if (!std::isfinite(A_eff_[i])) throw std::invalid_argument("thermo: A has non-finite entries");
  for (size_t i = 0; i < dk; ++i)
    if (!std::isfinite(B_eff_[i])) throw std::invalid_argument("thermo: b has non-finite entries");
  buf_[0].assign(dk, 0.0);
  buf_[1].assign(dk, 0.0);
  X_.assign(dk, 0.0);
  if (p.integrator == Integrator::kExact) {
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < i; ++j) {
        const double a = A_eff_[static_cast<size_t>(i) * d + j], b = A_eff_[static_cast<size_t>(j) * d + i];
        if (a != b) throw std::invalid_argument("thermo: the exact integrator needs a symmetric A");
      }
    evals_.resize(d);
    V_.resize(dd);
    eigh(d, A_eff_.data(), evals_.data(), V_.data());
    if (!(evals_[0] > 0.0))
      throw std::invalid_argument("thermo: A is not positive definite (smallest eigenvalue " +
                                  std::to_string(evals_[0]) + "): the chip would diverge");
    decay_.resize(d);
    noise_.resize(d);
    for (int i = 0; i < d; ++i) {
      const double l = evals_[i];
      decay_[i] = exp(-l * p.dt);
      // Var of the transition: (1 - e^{-2 l dt}) / (beta l); -expm1 keeps it accurate for small l dt
      noise_[i] = sqrt(-expm1(-2.0 * l * p.dt) / (p.beta * l));
    }
    // mean in eigen coordinates: m = diag(1/l) V^T b
    M_.assign(dk, 0.0);
    for (int j = 0; j < d; ++j)
      for (int i = 0; i < d; ++i) {
        const double v = V_[static_cast<size_t>(j) * d + i];
        for (int c = 0; c < k; ++c) M_[static_cast<size_t>(i) * k + c] += v * B_eff_[static_cast<size_t>(j) * k + c];
      }
    for (int i = 0; i < d; ++i)
      for (int c = 0; c < k; ++c) M_[static_cast<size_t>(i) * k + c] /= evals_[i];
  }
}

void Simulator::set_state(const double* x0) {
  const size_t dk = static_cast<size_t>(d_) * k_;
  memcpy(X_.data(), x0, sizeof(double) * dk);
  if (p_.integrator == Integrator::kEuler) {
    memcpy(buf_[cur_].data(), x0, sizeof(double) * dk);
  } else {  // y = V^T x
    std::vector<double>& y = buf_[cur_];
    std::fill(y.begin(), y.end(), 0.0);
    for (int j = 0; j < d_; ++j)
      for (int i = 0; i < d_; ++i) {
        const double v = V_[static_cast<size_t>(j) * d_ + i];
        for (int c = 0; c < k_; ++c) y[static_cast<size_t>(i) * k_ + c] += v * x0[static_cast<size_t>(j) * k_ + c];
      }
  }
}

void Simulator::get_state(double* x) const {
  const size_t dk = static_cast<size_t>(d_) * k_;
  if (p_.integrator == Integrator::kEuler)
    memcpy(x, buf_[cur_].data(), sizeof(double) * dk);
  else
    memcpy(x, X_.data(), sizeof(double) * dk);
}

int Simulator::threads_for_run() const {
  const int cores = available_cores();
  int n = p_.threads > 0 ? p_.threads : cores;
  if (p_.threads <= 0) {
    // auto: a step must be big enough to pay for a barrier (~1 us)
    const double work = static_cast<double>(d_) * d_ * k_;
    if (work < 131072.0) n = 1;
    n = std::min(n, std::max(1, d_ / 32));
  }
  // more threads than cores only makes the barriers slower (threads=128 on 2 cores: 45x)
  return std::max(1, std::min({n, d_, cores}));
}

AdvanceStats Simulator::advance(int64_t n, double* sum, double* sxx, double* traj, const RunHooks* hooks) {
  AdvanceStats st;
  if (broken_)
    throw std::runtime_error("thermo: this simulator was interrupted or failed mid-run; build a new one");
  if (n <= 0) return st;
  const int nth = threads_for_run();
  const bool watched = hooks != nullptr && static_cast<bool>(hooks->poll);
  AbortFlag abort{false};
  SpinBarrier barrier(nth, &abort);
  std::vector<int64_t> clipped(static_cast<size_t>(nth) * 8, 0);  // padded against false sharing
  if (sxx) {
    const size_t need = static_cast<size_t>(d_) * k_ * kSampleBuffer;
    if (cov_P_.size() < need) {
      cov_P_.assign(need, 0.0);
      cov_Q_.assign(need, 0.0);
    }
  }
  // Workers wait at a start gate until every thread exists, so a failure to
  // start one leaves the state untouched. 0: wait, 1: run, 2: give up.
  std::atomic<int> gate{0};
  std::mutex mu;
  std::condition_variable cv;
  int finished = 0;
  std::exception_ptr error;
  auto body = [&](int t) {
    try {
      run_thread(t, nth, n, sum, sxx, traj, clipped.data() + 8 * t, &barrier, &abort);
    } catch (const Aborted&) {
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu);
      if (!error) error = std::current_exception();
      abort.store(true);
    }
  };
  auto worker = [&](int t) {
    int g;
    while ((g = gate.load(std::memory_order_acquire)) == 0) std::this_thread::yield();
    if (g == 1) body(t);
    {
      std::lock_guard<std::mutex> lk(mu);
      ++finished;
    }
    cv.notify_all();
  };
  // watched: the caller only polls, all nth workers are threads; else the caller is worker 0
  const int first = watched ? 0 : 1;
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(nth));
  try {
    for (int t = first; t < nth; ++t) {
      if (g_fail_spawn_at.load() == t - first)
        throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                                "test hook: thread creation refused");
      pool.emplace_back(worker, t);
    }
  } catch (const std::system_error& e) {
    gate.store(2, std::memory_order_release);
    for (auto& th : pool) th.join();
    throw std::runtime_error("thermo: could not start simulator thread " + std::to_string(pool.size() + 1) +
                             " of " + std::to_string(nth - first) + " (" + e.what() +
                             "); nothing was simulated. Use fewer threads (ChipConfig.threads) or free memory");
  }
  gate.store(1, std::memory_order_release);
  bool interrupted = false;
  if (!watched) {
    body(0);
  } else {
    const auto period = std::chrono::milliseconds(std::max(1, hooks->poll_interval_ms));
    std::unique_lock<std::mutex> lk(mu);
    while (finished < nth) {
      if (cv.wait_for(lk, period, [&] { return finished >= nth; })) break;
      lk.unlock();
      bool stop = false;
      try {
        stop = !abort.load() && hooks->poll();
      } catch (...) {
        lk.lock();
        if (!error) error = std::current_exception();
        lk.unlock();
        stop = true;
      }
      if (stop) {
        interrupted = true;
        abort.store(true);
      }
      lk.lock();
    }
  }
  for (auto& th : pool) th.join();
  if (error || interrupted || abort.load()) {
    broken_ = true;  // some threads stopped mid-step
    if (error) std::rethrow_exception(error);
    throw Interrupted();
  }
  if (p_.integrator == Integrator::kEuler) {
    const int64_t steps = n * p_.substeps;
    if (steps % 2) cur_ ^= 1;
  } else if (n % 2) {
    cur_ ^= 1;
  }
  st.samples = n;
  st.readings = n * d_ * k_;
  for (int t = 0; t < nth; ++t) st.clipped += clipped[static_cast<size_t>(t) * 8];
  samples_done_ += n;
  return st;
}

void Simulator::run_thread(int tid, int nth, int64_t n, double* sum, double* sxx, double* traj,
                           int64_t* clipped, void* barrier_ptr, const void* abort_ptr) {
  SpinBarrier& barrier = *static_cast<SpinBarrier*>(barrier_ptr);
  const AbortFlag* abort = static_cast<const AbortFlag*>(abort_ptr);
  const int d = d_, k = k_;
  int rows_per = (d + nth - 1) / nth;
  rows_per = std::min(d, (rows_per + 7) / 8 * 8);
  const int r0 = std::min(d, tid * rows_per), r1 = std::min(d, r0 + rows_per);
  const int64_t e0 = static_cast<int64_t>(r0) * k, e1 = static_cast<int64_t>(r1) * k;
  const int64_t ne = e1 - e0;
  const int64_t dk = static_cast<int64_t>(d) * k;
  std::vector<float> z(static_cast<size_t>(std::max<int64_t>(ne, 1)));
  std::vector<double> y(static_cast<size_t>(std::max<int64_t>(ne, 1)));
  const double R = p_.adc_range;
  const bool clip = R > 0.0;
  const int bits = p_.adc_bits;
  int64_t nclip = 0;
  // covariance buffers shared by the threads: P (d x MB*k) cell-major, Q (MB*k x d) sample-major
  const int64_t ldp = static_cast<int64_t>(kSampleBuffer) * k;
  double* P = nullptr;
  double* Q = nullptr;
  if (sxx) {
    P = cov_P_.data();
    Q = cov_Q_.data();
  }
  int filled = 0;
  int cur = cur_;
  const double* Aeff = A_eff_.data();
  const double* Beff = B_eff_.data();

  auto flush = [&]() {
    if (!sxx || filled == 0) return;
    barrier.wait();  // every thread's readings of the buffered samples are in P and Q
    // in row blocks, so a large d still notices an abort quickly (any row split gives the same bits)
    for (int b0 = r0; b0 < r1; b0 += kFlushRows) {
      check_abort(abort);
      const int b1 = std::min(r1, b0 + kFlushRows);
      gemm(b1 - b0, d, static_cast<int64_t>(filled) * k, P + static_cast<int64_t>(b0) * ldp, ldp, Q, d,
           sxx + static_cast<int64_t>(b0) * d, d, true);
    }
    filled = 0;
    barrier.wait();  // nobody refills P/Q while another thread still reads them
  };

  auto read_sample = [&](const double* x, int64_t s) {
    for (int64_t e = e0; e < e1; ++e) {
      double r = x[e];
      if (clip) {
        if (r > R) {
          r = R;
          ++nclip;
        } else if (r < -R) {
          r = -R;
          ++nclip;
        }
        if (bits > 0) r = quantize(r, R, bits);
      }
      if (sum) sum[e] += r;
      if (traj) traj[s * dk + e] = r;
      if (sxx) {
        const int64_t i = e / k, c = e % k;
        P[i * ldp + static_cast<int64_t>(filled) * k + c] = r;
        Q[(static_cast<int64_t>(filled) * k + c) * d + i] = r;
      }
    }
    if (sxx && ++filled == kSampleBuffer) flush();
  };

  if (p_.integrator == Integrator::kEuler) {
    const double h = p_.dt / p_.substeps;
    const double c = sqrt(2.0 * h / p_.beta);
    for (int64_t s = 0; s < n; ++s) {
      for (int sub = 0; sub < p_.substeps; ++sub) {
        check_abort(abort);
        const uint64_t g = static_cast<uint64_t>(samples_done_ + s) * p_.substeps + sub;
        const double* xc = buf_[cur].data();
        double* xn = buf_[cur ^ 1].data();
        if (ne > 0) {
          gemm(r1 - r0, k, d, Aeff + static_cast<int64_t>(r0) * d, d, xc, k, y.data(), k, false);
          normal_range(step_stream(p_.seed, kStreamEuler, g), e0, e1, z.data());
          for (int64_t e = 0; e < ne; ++e)
            xn[e0 + e] = xc[e0 + e] + h * (Beff[e0 + e] - y[e]) + c * static_cast<double>(z[e]);
        }
        barrier.wait();
        cur ^= 1;
      }
      read_sample(buf_[cur].data(), s);
    }
  } else {
    const double* V = V_.data();
    const double* Mm = M_.data();
    double* X = X_.data();
    for (int64_t s = 0; s < n; ++s) {
      check_abort(abort);
      const uint64_t g = static_cast<uint64_t>(samples_done_ + s);
      const double* yc = buf_[cur].data();
      double* yn = buf_[cur ^ 1].data();
      if (ne > 0) {
        normal_range(step_stream(p_.seed, kStreamExact, g), e0, e1, z.data());
        for (int64_t e = e0; e < e1; ++e) {
          const int64_t i = e / k;
          yn[e] = Mm[e] + decay_[i] * (yc[e] - Mm[e]) + noise_[i] * static_cast<double>(z[e - e0]);
        }
      }
      barrier.wait();
      cur ^= 1;
      if (ne > 0) gemm(r1 - r0, k, d, V + static_cast<int64_t>(r0) * d, d, yn, k, X + e0, k, false);
      read_sample(X, s);
    }
  }
  flush();
  clipped[0] = nclip;
}

}  // namespace thermo
}  // namespace pybayes
