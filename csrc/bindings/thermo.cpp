// pybind11 module pybayes._thermo: the thermodynamic-chip simulator
// (csrc/thermo) for pybayes.thermo. torch-free; arrays are float64 NumPy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "cpu_noise.h"
#include "thermo/thermo.h"

namespace py = pybind11;
using namespace pybayes::thermo;

namespace {

using Arr = py::array_t<double, py::array::c_style | py::array::forcecast>;

Arr matrix(int64_t r, int64_t c) { return Arr({r, c}); }

void need_2d(const Arr& a, const char* name) {
  if (a.ndim() != 2) throw std::invalid_argument(std::string(name) + " must be 2-D");
}

class PySimulator {
 public:
  PySimulator(Arr A, Arr B, double beta, const std::string& integrator, double dt, int substeps,
              int dac_bits, int adc_bits, double adc_range, double mismatch, uint64_t chip_seed,
              uint64_t seed, int threads) {
    need_2d(A, "A");
    need_2d(B, "b");
    const int64_t d = A.shape(0);
    if (A.shape(1) != d) throw std::invalid_argument("A must be square");
    if (B.shape(0) != d) throw std::invalid_argument("b must have as many rows as A");
    Params p;
    p.beta = beta;
    if (integrator == "euler")
      p.integrator = Integrator::kEuler;
    else if (integrator == "exact")
      p.integrator = Integrator::kExact;
    else
      throw std::invalid_argument("integrator must be 'euler' or 'exact'");
    p.dt = dt;
    p.substeps = substeps;
    p.dac_bits = dac_bits;
    p.adc_bits = adc_bits;
    p.adc_range = adc_range;
    p.mismatch = mismatch;
    p.chip_seed = chip_seed;
    p.seed = seed;
    p.threads = threads;
    const double* a = A.data();
    const double* b = B.data();
    const int k = static_cast<int>(B.shape(1));
    py::gil_scoped_release nogil;
    sim_ = std::make_unique<Simulator>(static_cast<int>(d), k, a, b, p);
  }

  // want_sum / want_sxx: True allocates a zeroed array; an existing float64
  // C-contiguous writable array of the right shape is accumulated into instead
  // (so long runs need no new d x d buffer per call).
  py::dict advance(int64_t n, py::object want_sum, py::object want_sxx, bool want_traj) {
    if (n < 0) throw std::invalid_argument("n must be >= 0");
    const int64_t d = sim_->d(), k = sim_->k();
    py::object sum = py::none(), sxx = py::none(), traj = py::none();
    double* ps = target(want_sum, d, k, "sum", &sum);
    double* px = target(want_sxx, d, d, "sxx", &sxx);
    double* pt = nullptr;
    if (want_traj) {
      Arr a({n, d, k});
      pt = a.mutable_data();
      traj = a;
    }
    AdvanceStats st;
    RunHooks hooks;
    // Ctrl-C: every 50 ms take the GIL briefly and let Python run its signal handlers
    hooks.poll = [] {
      py::gil_scoped_acquire gil;
      return PyErr_CheckSignals() != 0;
    };
    try {
      py::gil_scoped_release nogil;
      st = sim_->advance(n, ps, px, pt, &hooks);
    } catch (const Interrupted&) {
      if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
      throw py::error_already_set();
    }
    py::dict out;
    out["sum"] = sum;
    out["sxx"] = sxx;
    out["traj"] = traj;
    out["samples"] = st.samples;
    out["readings"] = st.readings;
    out["clipped"] = st.clipped;
    return out;
  }

  void set_state(Arr x) {
    if (x.ndim() != 2 || x.shape(0) != sim_->d() || x.shape(1) != sim_->k())
      throw std::invalid_argument("x0 must have the shape of b");
    sim_->set_state(x.data());
  }
  Arr get_state() const {
    Arr a = matrix(sim_->d(), sim_->k());
    sim_->get_state(a.mutable_data());
    return a;
  }
  Arr A_eff() const { return copy(sim_->A_eff(), sim_->d(), sim_->d()); }
  Arr B_eff() const { return copy(sim_->B_eff(), sim_->d(), sim_->k()); }
  py::object evals() const {
    if (sim_->evals().empty()) return py::none();
    Arr a(static_cast<int64_t>(sim_->evals().size()));
    std::copy(sim_->evals().begin(), sim_->evals().end(), a.mutable_data());
    return a;
  }
  int d() const { return sim_->d(); }
  int k() const { return sim_->k(); }
  int64_t samples_done() const { return sim_->samples_done(); }
  int threads() const { return sim_->threads_for_run(); }

 private:
  static Arr copy(const std::vector<double>& v, int64_t r, int64_t c) {
    Arr a = matrix(r, c);
    std::copy(v.begin(), v.end(), a.mutable_data());
    return a;
  }
  static double* target(const py::object& want, int64_t r, int64_t c, const char* name, py::object* out) {
    if (want.is_none() || (py::isinstance<py::bool_>(want) && !want.cast<bool>())) return nullptr;
    if (py::isinstance<py::bool_>(want)) {
      Arr a = matrix(r, c);
      std::fill(a.mutable_data(), a.mutable_data() + r * c, 0.0);
      *out = a;
      return a.mutable_data();
    }
    using Exact = py::array_t<double, py::array::c_style>;
    if (!Exact::check_(want)) throw std::invalid_argument(std::string(name) + ": expected a float64 C-contiguous array");
    Exact a = py::reinterpret_borrow<Exact>(want);
    if (a.ndim() != 2 || a.shape(0) != r || a.shape(1) != c || !a.writeable())
      throw std::invalid_argument(std::string(name) + ": expected a writable (" + std::to_string(r) + ", " +
                                  std::to_string(c) + ") array");
    *out = a;
    return a.mutable_data();
  }
  std::unique_ptr<Simulator> sim_;
};

}  // namespace

PYBIND11_MODULE(_thermo, m) {
  m.doc() = "Thermodynamic linear-algebra chip simulator (C++ core of pybayes.thermo)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  py::class_<PySimulator>(m, "Simulator")
      .def(py::init<Arr, Arr, double, const std::string&, double, int, int, int, double, double, uint64_t,
                    uint64_t, int>(),
           py::arg("A"), py::arg("B"), py::arg("beta"), py::arg("integrator"), py::arg("dt"),
           py::arg("substeps"), py::arg("dac_bits"), py::arg("adc_bits"), py::arg("adc_range"),
           py::arg("mismatch"), py::arg("chip_seed"), py::arg("seed"), py::arg("threads"))
      .def("advance", &PySimulator::advance, py::arg("n"), py::arg("want_sum") = true,
           py::arg("want_sxx") = false, py::arg("want_traj") = false,
           "Run n ADC intervals; returns dict(sum, sxx, traj, samples, readings, clipped). want_sum/want_sxx: "
           "bool, or an array to accumulate into. Ctrl-C raises KeyboardInterrupt within ~50 ms (the "
           "simulator is then unusable).")
      .def("set_state", &PySimulator::set_state)
      .def("get_state", &PySimulator::get_state)
      .def_property_readonly("A_eff", &PySimulator::A_eff)
      .def_property_readonly("B_eff", &PySimulator::B_eff)
      .def_property_readonly("evals", &PySimulator::evals)
      .def_property_readonly("d", &PySimulator::d)
      .def_property_readonly("k", &PySimulator::k)
      .def_property_readonly("samples_done", &PySimulator::samples_done)
      .def_property_readonly("threads", &PySimulator::threads);
  m.def(
      "eigh",
      [](Arr A) {
        need_2d(A, "A");
        const int64_t d = A.shape(0);
        if (A.shape(1) != d) throw std::invalid_argument("A must be square");
        Arr w(d);
        Arr V = matrix(d, d);
        {
          const double* a = A.data();
          double *pw = w.mutable_data(), *pv = V.mutable_data();
          py::gil_scoped_release nogil;
          eigh(static_cast<int>(d), a, pw, pv);
        }
        return py::make_tuple(w, V);
      },
      py::arg("A"), "Symmetric eigendecomposition (ascending eigenvalues, eigenvectors in columns)");
  m.def(
      "gemm",
      [](Arr A, Arr B, int repeats) {
        need_2d(A, "A");
        need_2d(B, "B");
        if (A.shape(1) != B.shape(0)) throw std::invalid_argument("gemm: inner dimensions differ");
        const int64_t M = A.shape(0), K = A.shape(1), N = B.shape(1);
        Arr C = matrix(M, N);
        {
          const double *a = A.data(), *b = B.data();
          double* c = C.mutable_data();
          py::gil_scoped_release nogil;
          for (int r = 0; r < std::max(1, repeats); ++r) gemm(M, N, K, a, K, b, N, c, N, false);
        }
        return C;
      },
      py::arg("A"), py::arg("B"), py::arg("repeats") = 1,
      "The simulator's single-threaded blocked product A @ B (float64), for tests and benchmarks");
  m.def("gemm_isa", &gemm_isa, "Instruction set of the matrix-product kernel in use");
  m.def("noise_isa", &pybayes::noise_isa, "Instruction set of the Philox noise generator in use");
  m.def("quantize", &quantize, py::arg("v"), py::arg("full_scale"), py::arg("bits"));
  m.def("hardware_threads", [] { return static_cast<int>(std::thread::hardware_concurrency()); });
  m.def("available_cores", &available_cores, "CPU cores this process may run on (affinity mask)");
  m.def("_set_test_hooks", &set_test_hooks, py::arg("fail_thread_spawn_at") = -1, py::arg("cores") = 0,
        "Tests only: fail the creation of the given worker thread of every run (-1: off); pretend to have "
        "`cores` cores (0: real)");
}
