"""The chip simulator's reliability battery (issue 11, items 9-11): a worker thread that
cannot be started, Ctrl-C during a long C++ run, memory beyond what is available, and run
lengths beyond what can be counted. Each case must raise a clear Python exception (never
abort the process, never hang, never allocate first) and leave the process usable.

Cases that change process-wide state (signals, resource limits) run in a subprocess.
"""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from pybayes import _thermo, thermo
from pybayes.thermo import ChipConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(code, timeout=120):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def spd(d, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A = (Q * np.linspace(0.5, 3.0, d)) @ Q.T
    return 0.5 * (A + A.T)


# ---------------------------------------------------------------------------
# item 9: worker threads


@pytest.fixture
def hooks():
    yield _thermo._set_test_hooks
    _thermo._set_test_hooks(-1, 0)


@pytest.mark.parametrize("fail_at", [0, 1, 3])
def test_thread_start_failure_raises_and_leaves_the_simulator_usable(hooks, fail_at):
    d = 96
    A, b = spd(d), np.ones(d)
    cfg = ChipConfig(threads=4, seed=3)
    hooks(-1, 4)  # pretend 4 cores, so 4 workers are started whatever this machine has
    ref = thermo.solve(A, b, time=10.0, config=cfg)
    hooks(fail_at, 4)
    with pytest.raises(RuntimeError, match=rf"could not start simulator thread {fail_at + 1} of 4 .*ChipConfig.threads"):
        thermo.solve(A, b, time=10.0, config=cfg)
    # the raw simulator: the failed run changed nothing, the next run is the clean run's twin
    sim = _thermo.Simulator(A, b[:, None], 1.0, "euler", 0.1, 2, 0, 0, 0.0, 0.0, 0, 7, 4)
    with pytest.raises(RuntimeError, match="could not start"):
        sim.advance(20, True, False, False)
    assert sim.samples_done == 0
    hooks(-1, 4)
    r = sim.advance(20, True, False, False)
    fresh = _thermo.Simulator(A, b[:, None], 1.0, "euler", 0.1, 2, 0, 0, 0.0, 0.0, 0, 7, 4)
    assert np.array_equal(r["sum"], fresh.advance(20, True, False, False)["sum"])
    assert np.array_equal(ref, thermo.solve(A, b, time=10.0, config=cfg))


def test_thread_start_failure_under_a_real_memory_limit():
    """No hook: the address-space limit leaves no room for a thread stack (the issue's
    `threads=512` under a memory limit aborted the process)."""
    r = run_child("""
        import re, resource, numpy as np
        from pybayes import thermo, _thermo
        from pybayes.thermo import ChipConfig
        _thermo._set_test_hooks(-1, 8)  # 8 workers whatever the machine has
        A = np.eye(128) + 0.1; b = np.ones(128)
        ref = thermo.solve(A, b, time=2.0, config=ChipConfig(threads=1))
        vm = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (vm + 4 * 2**20, hard))  # no room for an 8 MB stack
        try:
            thermo.solve(A, b, time=2.0, config=ChipConfig(threads=8))
            print("no error")
        except RuntimeError as e:
            print("RuntimeError:", e)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        x = thermo.solve(A, b, time=2.0, config=ChipConfig(threads=1))
        print("recovered", bool(np.array_equal(x, ref)))
    """)
    assert r.returncode == 0, r.stderr
    assert "RuntimeError: thermo: could not start simulator thread" in r.stdout, r.stdout + r.stderr
    assert "recovered True" in r.stdout


def test_threads_capped_at_available_cores(hooks):
    A, b = spd(128), np.ones(128)
    _, info = thermo.solve(A, b, time=2.0, config=ChipConfig(threads=512), return_info=True)
    assert 1 <= info.threads <= len(os.sched_getaffinity(0)) == _thermo.available_cores()
    hooks(-1, 3)
    _, info = thermo.solve(A, b, time=2.0, config=ChipConfig(threads=512), return_info=True)
    assert info.threads == 3
    _, info = thermo.solve(A, b, time=2.0, config=ChipConfig(threads=2), return_info=True)
    assert info.threads == 2


# ---------------------------------------------------------------------------
# item 10: Ctrl-C


def test_ctrl_c_interrupts_long_runs_within_half_a_second():
    code = """
        import sys, time, traceback, numpy as np
        from pybayes import thermo
        from pybayes.thermo import ChipConfig
        A = np.eye(64) + 0.1 * np.ones((64, 64)) / 64; b = np.ones(64)
        cases = [
            ("burn-in", lambda: thermo.solve(A, b, burn_in=1e8, time=1.0)),
            ("simulate", lambda: thermo.simulate(A, b, n_samples=200000)),
            ("inv", lambda: thermo.inv(A, time=1e8, burn_in=0.0)),
            ("tol", lambda: thermo.solve(A, b, tol=1e-9, time=1e8)),
            ("exact", lambda: thermo.inv(A, time=1e8, burn_in=0.0, config=ChipConfig(integrator="exact"))),
        ]
        for name, f in cases:
            print("ready", name, flush=True)
            try:
                f()
                print("finished", name, flush=True)
            except KeyboardInterrupt as e:
                where = traceback.extract_tb(e.__traceback__)[-1].line
                print("interrupted", time.monotonic(), "advance" in where, flush=True)
        x, info = thermo.solve(A, b, time=200.0, return_info=True)
        print("usable", bool(np.linalg.norm(x - np.linalg.solve(A, b)) < 5 * info.rel_stderr * np.linalg.norm(x)))
    """
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        latencies = {}
        for _ in range(5):
            line = p.stdout.readline()
            assert line.startswith("ready"), line + p.stderr.read()
            name = line.split()[1]
            time.sleep(0.7)  # well inside the C++ run (each would take minutes)
            t0 = time.monotonic()
            os.kill(p.pid, signal.SIGINT)
            out = p.stdout.readline().split()
            assert out and out[0] == "interrupted", (name, out, p.stderr.read())
            latencies[name] = float(out[1]) - t0
            assert out[2] == "True", f"{name}: the interrupt did not land in the C++ run"
        assert p.stdout.readline().strip() == "usable True"
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
    for name, lat in latencies.items():
        assert lat < 0.5, f"{name}: KeyboardInterrupt {lat:.3f} s after SIGINT"


def test_interrupted_simulator_refuses_to_continue():
    r = run_child("""
        import signal, threading, numpy as np
        from pybayes import _thermo
        A = np.eye(8); b = np.ones((8, 1))
        sim = _thermo.Simulator(A, b, 1.0, "euler", 0.1, 1, 0, 0, 0.0, 0.0, 0, 0, 1)
        threading.Timer(0.3, lambda: signal.raise_signal(signal.SIGINT)).start()
        try:
            sim.advance(10**10, True, False, False)
        except KeyboardInterrupt:
            print("interrupted")
        try:
            sim.advance(1, True, False, False)
        except RuntimeError as e:
            print("refused:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert "interrupted" in r.stdout and "refused: thermo: this simulator was interrupted" in r.stdout, r.stdout


# ---------------------------------------------------------------------------
# item 11: memory and run length


def test_huge_problem_refused_before_allocating():
    d = 10**6  # inv would need ~40 TB; the input is a zero-stride view of one number
    A = np.broadcast_to(np.float64(1.0), (d, d))
    t0 = time.perf_counter()
    for fn in (lambda: thermo.inv(A), lambda: thermo.solve(A, np.broadcast_to(np.float64(1.0), (d,))),
               lambda: thermo.inv(A, config=ChipConfig(integrator="exact"))):
        with pytest.raises(MemoryError, match=r"at d=1000000 needs about .* GiB .* available"):
            fn()
    # a trajectory too large for memory
    with pytest.raises(MemoryError, match=r"n_samples=500000000 needs about"):
        thermo.simulate(np.eye(64), np.ones(64), n_samples=5 * 10**8)
    assert time.perf_counter() - t0 < 2.0
    assert thermo.memory_estimate(1000) == 8 * (5 * 1000**2 + 8 * 1000)


def test_inv_peak_memory_is_a_few_copies():
    """Peak resident memory of inv beyond the input, in d x d float64 copies (11-12 before)."""
    r = run_child("""
        import re, numpy as np
        from pybayes import thermo
        from pybayes.thermo import ChipConfig
        def status(k):
            return int(re.search(k + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
        d = 1200
        A = np.eye(d) * 2.0 + 0.5 / d
        thermo.inv(np.eye(4) * 2.0, time=2.0)  # warm-up: imports, thread stacks
        for integ in ("euler", "exact"):
            Ad = A if integ == "euler" else A[:600, :600].copy()
            n = Ad.shape[0]
            open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM)
            base = status("VmRSS")
            X = thermo.inv(Ad, time=8.0, burn_in=0.0, config=ChipConfig(integrator=integ, dt=1.0))
            peak = status("VmHWM") - base
            print(integ, peak / (8 * n * n), thermo.memory_estimate(n, integrator=integ) / (8 * n * n))
            del X
    """, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = dict((ln.split()[0], tuple(map(float, ln.split()[1:]))) for ln in r.stdout.strip().splitlines())
    for integ, (peak, est) in rows.items():
        assert peak <= est, f"{integ}: peak {peak:.2f} copies above the up-front estimate {est:.2f}"
    assert rows["euler"][0] <= 5.0


@pytest.mark.parametrize("kw, match", [
    (dict(burn_in=1e30), r"burn_in=1e\+30 tau is .* beyond ChipConfig.max_samples"),
    (dict(time=1e30), r"time=1e\+30 tau is .* beyond ChipConfig.max_samples"),
    (dict(time=1e30, tol=0.1, burn_in=1e30), "burn_in"),
])
def test_astronomical_windows_are_value_errors(kw, match):
    A, b = spd(4), np.ones(4)
    with pytest.raises(ValueError, match=match):
        thermo.solve(A, b, **kw)
    with pytest.raises(ValueError, match=match):
        thermo.inv(A, **kw)


def test_max_samples_cap():
    A, b = spd(4), np.ones(4)
    cfg = ChipConfig(max_samples=1000, dt=0.1)
    with pytest.raises(ValueError, match=r"time=200 tau is 2e\+03 ADC samples .*max_samples=1e\+03"):
        thermo.solve(A, b, time=200.0, config=cfg)
    with pytest.raises(ValueError, match="n_samples=1001 is beyond ChipConfig.max_samples"):
        thermo.simulate(A, b, n_samples=1001, config=cfg)
    _, info = thermo.solve(A, b, time=99.0, burn_in=99.0, config=cfg, return_info=True)
    assert info.n_samples == 990
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        _, info = thermo.solve(A, b, tol=1e-9, config=cfg, return_info=True)
    assert info.converged is False and info.n_samples <= 1000
    with pytest.raises(ValueError, match="max_samples"):
        ChipConfig(max_samples=0)
