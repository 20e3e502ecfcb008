// Simulator of the thermodynamic linear-algebra chip (DESIGN.md §5).
//
// d coupled noisy RC cells with voltages x follow the overdamped
// Ornstein–Uhlenbeck SDE
//
//     tau dx = -(A x - b) dt + sqrt(2 tau / beta) dW,
//
// whose equilibrium is N(A^-1 b, A^-1 / beta). Time below is measured in
// units of tau (s = t / tau), so the simulated equation is
//
//     dx = -(A x - b) ds + sqrt(2 / beta) dW(s).
//
// k right-hand sides (columns of B, d x k) are simulated at once: the state is
// the d x k matrix X and each Euler step is the product A X.
//
// Randomness (DESIGN.md §4): every normal is a pure function of
// (seed, step index, cell, column) drawn from the shared Philox streams, so a
// run gives the same bits for any thread count.
//
// torch-free: used by the pybind11 module pybayes._thermo and the ctests.
#pragma once

#include <stdint.h>

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace pybayes {
namespace thermo {

enum class Integrator { kEuler = 0, kExact = 1 };

struct Params {
  double beta = 1.0;      // inverse noise temperature
  Integrator integrator = Integrator::kEuler;
  double dt = 0.1;        // ADC sample interval, units of tau
  int substeps = 10;      // Euler–Maruyama steps per ADC sample (exact: ignored)
  int dac_bits = 0;       // k-bit programming of A and b (0: ideal)
  int adc_bits = 0;       // k-bit ADC (0: ideal); needs adc_range > 0
  double adc_range = 0.0; // ADC full scale: readings clipped to [-R, R] (<= 0: no clipping)
  double mismatch = 0.0;  // relative std of the fixed per-component mismatch
  uint64_t chip_seed = 0; // which physical chip: seeds the mismatch pattern
  uint64_t seed = 0;      // thermal noise
  int threads = 0;        // 0: all available cores (used only when the problem is big enough);
                          // never more than available_cores()
};

// CPU cores this process may run on (its affinity mask; >= 1).
int available_cores();

// How a run (Simulator::advance) is watched. With `poll` set, the calling
// thread does no simulation: it starts the workers and calls poll() every
// poll_interval_ms until they finish; poll() returning true stops the run
// (advance then throws Interrupted). Python uses it to check for Ctrl-C.
struct RunHooks {
  std::function<bool()> poll;
  int poll_interval_ms = 50;
};

// Thrown by advance() when RunHooks::poll asked to stop. The simulator is then
// in an undefined intermediate state and refuses further runs.
class Interrupted : public std::runtime_error {
 public:
  Interrupted() : std::runtime_error("thermo: run interrupted") {}
};

// Test hooks (process-wide, for the bad-input tests only): make the creation
// of the `fail_at`-th worker thread of every later run fail as if the system
// were out of threads (-1: off); pretend the process has `cores` cores (0: real).
void set_test_hooks(int fail_thread_spawn_at, int cores);

// Stream ids of the noise (DESIGN.md §4). The high 32 bits of the step index
// go into the stream id so runs longer than 2^32 steps never repeat noise.
constexpr uint32_t kStreamEuler = 0x54450000u;     // "TE": Euler increments
constexpr uint32_t kStreamExact = 0x54580000u;     // "TX": exact-transition normals
constexpr uint32_t kStreamMismatch = 0x544D0000u;  // "TM": chip mismatch (seed = chip_seed)

// Mid-tread quantiser with step full_scale * 2^(1-bits): |q(v) - v| <= full_scale * 2^-bits
// for |v| <= full_scale.
double quantize(double v, double full_scale, int bits);

// The matrix and vector the chip actually realises: DAC quantisation of A
// (full scale max|A|) and of each column of B (full scale its max |entry|),
// then the symmetric relative mismatch A_ij (1 + m E_ij), E_ij = E_ji ~ N(0,1),
// b_i (1 + m e_i), drawn from the chip_seed stream.
void effective_program(int d, int k, const double* A, const double* B, const Params& p,
                       double* A_eff, double* B_eff);

// Symmetric eigendecomposition (Householder tridiagonalisation + implicit QL,
// after EISPACK tred2/tql2). A is d x d row-major, symmetric. On return
// evals ascending, evecs row-major d x d with eigenvector j in column j.
void eigh(int d, const double* A, double* evals, double* evecs);

// C (M x N) = [C +] A (M x K) * B (K x N), all row-major with leading dimensions.
// Cache-blocked and vectorised (AVX-512 / AVX2+FMA / generic clones picked at
// run time). Each entry is accumulated over K in ascending order in the same
// way wherever its row falls, so splitting the rows between threads never
// changes a bit.
void gemm(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
          int64_t ldb, double* C, int64_t ldc, bool accumulate);
const char* gemm_isa();

struct AdvanceStats {
  int64_t samples = 0;
  int64_t readings = 0;  // samples * d * k ADC conversions
  int64_t clipped = 0;   // readings outside [-adc_range, adc_range]
};

class Simulator {
 public:
  // A: d x d row-major (symmetric for the exact integrator), B: d x k row-major.
  // Throws std::invalid_argument on bad parameters, or (exact integrator)
  // when the effective A is not positive definite.
  Simulator(int d, int k, const double* A, const double* B, const Params& p);

  int d() const { return d_; }
  int k() const { return k_; }
  const Params& params() const { return p_; }
  const std::vector<double>& A_eff() const { return A_eff_; }
  const std::vector<double>& B_eff() const { return B_eff_; }
  // Exact integrator only: eigenvalues of the effective A (ascending).
  const std::vector<double>& evals() const { return evals_; }
  // Number of ADC intervals simulated so far (the noise counter).
  int64_t samples_done() const { return samples_done_; }
  int threads_for_run() const;

  // Sets the state (d x k row-major).
  void set_state(const double* x0);
  void get_state(double* x) const;

  // Runs n ADC intervals. Each sample's ADC readings r (d x k) are
  //   * added to sum (d x k) when sum != nullptr,
  //   * added as sum over columns of r_c r_c^T to sxx (d x d) when sxx != nullptr,
  //   * written to traj[s] (n x d x k) when traj != nullptr.
  // If a worker thread cannot be started, nothing is simulated, the threads
  // already started are stopped and joined, and std::runtime_error is thrown
  // (the simulator stays usable). hooks: see RunHooks.
  AdvanceStats advance(int64_t n, double* sum, double* sxx, double* traj, const RunHooks* hooks = nullptr);

 private:
  void run_thread(int tid, int nth, int64_t n, double* sum, double* sxx, double* traj,
                  int64_t* clipped, void* barrier, const void* abort);

  int d_, k_;
  Params p_;
  std::vector<double> A_eff_, B_eff_;
  // Euler: X_[0], X_[1] double buffer. Exact: Y (eigen coordinates) double buffer.
  std::vector<double> buf_[2];
  int cur_ = 0;
  std::vector<double> X_;  // exact: current x = V y (for get_state)
  // exact integrator
  std::vector<double> evals_, V_, decay_, noise_, M_;
  // covariance accumulation buffers (see advance)
  std::vector<double> cov_P_, cov_Q_;
  int64_t samples_done_ = 0;
  bool broken_ = false;  // an interrupted or failed run left the state half-updated
};

}  // namespace thermo
}  // namespace pybayes
