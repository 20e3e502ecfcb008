"""Timing, environment record and result writers shared by the benchmarks.

Methodology (DESIGN.md §6):

* A measurement is the median over ``repeats`` timed repeats after ``warmup``
  untimed calls. On CUDA a repeat is timed with CUDA events recorded on the
  current stream; on CPU with ``time.perf_counter`` around the call. A repeat
  runs the function ``inner`` times back to back (``inner`` is chosen so that a
  repeat lasts at least ``min_repeat_s``; it is 1 for anything slower than
  that) and reports the mean of those calls, so that microsecond-scale calls
  are not dominated by timer resolution.
* Every baseline is timed in the same process, on the same tensors, in the same
  run, interleaved with the pybayes kernels.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


# ---------------------------------------------------------------------------
# timing

def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], object], device: str, repeats: int, warmup: int = 2,
            min_repeat_s: float = 1e-3) -> Dict[str, float]:
    """Median (and min, interquartile range) seconds per call of ``fn``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(max(warmup, 0)):
        fn()
    synchronize(device)
    # calibrate the number of calls per repeat from one timed call
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    one = time.perf_counter() - t0
    inner = 1 if one >= min_repeat_s else min(1000, max(1, math.ceil(min_repeat_s / max(one, 1e-7))))
    samples: List[float] = []
    if device == "cuda":
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3 / inner)
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - t0) / inner)
    samples.sort()
    q = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [samples[0]] * 3
    return {"median_s": statistics.median(samples), "min_s": samples[0],
            "iqr_s": q[2] - q[0], "repeats": repeats, "inner": inner}


# ---------------------------------------------------------------------------
# memory

@contextlib.contextmanager
def _stderr_to_devnull():
    """Silences file descriptor 2 (the profiler's C++ start/stop log lines,
    which would break the progress bar) for the duration of the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


CUDA_MEMORY_METHOD = "torch.cuda.max_memory_allocated during one step minus memory_allocated before"
CPU_MEMORY_METHOD = ("bytes allocated by torch's CPU allocator during one step (torch.profiler "
                     "profile_memory); an upper bound of the extra peak, exact when 0")


def step_memory(fn: Callable[[], object], device: str) -> Dict[str, object]:
    """Extra memory of one call of ``fn`` (already warmed up, so lazily created
    optimizer state is not counted). CUDA: the peak over the call above what
    was allocated before it. CPU: torch does not track a CPU peak, so this is
    the total the CPU allocator handed out during the call, read from the
    profiler's memory events: 0 means the step allocated nothing; otherwise it
    bounds the peak from above (temporaries freed mid-step are counted too)."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return {"extra_mem_bytes": int(torch.cuda.max_memory_allocated() - base),
                "mem_method": "cuda"}
    from torch.profiler import ProfilerActivity, profile

    with _stderr_to_devnull(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # each allocation is attributed to every enclosing op; "self" memory
    # counts it once, in the innermost op that made it
    total = sum(max(int(ev.self_cpu_memory_usage), 0) for ev in prof.events())
    return {"extra_mem_bytes": total, "mem_method": "cpu-alloc"}


# ---------------------------------------------------------------------------
# environment

def _run(cmd: Sequence[str]) -> Optional[str]:
    try:
        out = subprocess.run(list(cmd), cwd=REPO_ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model_and_clock() -> Dict[str, object]:
    info: Dict[str, object] = {"cpu_model": platform.processor() or platform.machine()}
    mhz = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    info["cpu_model"] = value.strip()
                elif key == "cpu MHz":
                    mhz.append(float(value))
    except OSError:
        pass
    if mhz:
        info["cpu_mhz_now"] = round(statistics.mean(mhz), 1)
    try:
        khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text().strip()
        info["cpu_mhz_max"] = int(khz) / 1000
    except (OSError, ValueError):
        info["cpu_mhz_max"] = "not exposed (no cpufreq in this VM)"
    info["cpu_count"] = os.cpu_count()
    return info


def _gpu_info() -> Dict[str, object]:
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    info: Dict[str, object] = {
        "device_name": props.name,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "gpu_sm_count": props.multi_processor_count,
        "gpu_capability": f"{props.major}.{props.minor}",
        "cuda_runtime": torch.version.cuda,
    }
    smi = _run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,clocks.mem,driver_version",
                "--format=csv,noheader", f"--id={torch.cuda.current_device()}"])
    if smi:
        info["gpu_clocks_sm_max_mem_driver"] = smi
    return info


def environment(device: str) -> Dict[str, object]:
    """Everything a reader needs to interpret the numbers of a run."""
    import pybayes
    from pybayes import ops as pops

    commit = _run(["git", "rev-parse", "HEAD"]) or "unknown (not a git checkout)"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    env: Dict[str, object] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": commit,
        "worktree_modified": bool(dirty) if dirty is not None else "unknown",
        "pybayes": pybayes.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "threads": torch.get_num_threads(),
        "pybayes_build": pops.build_info(),
    }
    env.update(_cpu_model_and_clock())
    if device == "cuda":
        env.update(_gpu_info())
    else:
        env["device_name"] = env["cpu_model"]
    env["loadavg_1_5_15"] = loadavg()
    return env


def loadavg():
    """The 1/5/15-minute load averages (other processes running next to the benchmark)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return "not available"


# ---------------------------------------------------------------------------
# output

def results_dir(device: str, out: Optional[str] = None) -> Path:
    path = Path(out) if out else RESULTS_DIR / f"{device}-{_dt.date.today().isoformat()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fmt_seconds(s: Optional[float]) -> str:
    if s is None or not math.isfinite(s):
        return "—"
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_bytes(b: Optional[float]) -> str:
    if b is None:
        return "—"
    b = float(b)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(b) >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{int(b)} B"


def fmt_count(n: int) -> str:
    n = int(n)
    if n and n % 10 ** int(math.log10(n)) == 0:
        return f"1e{int(math.log10(n))}" if str(n).startswith("1") else f"{n:.0e}"
    return f"{n:.3g}" if n >= 1e4 else str(n)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(lines)


def env_markdown(env: Dict[str, object]) -> str:
    keys = ["date", "commit", "worktree_modified", "device", "device_name", "torch", "pybayes",
            "threads", "cpu_model", "cpu_count", "cpu_mhz_now", "cpu_mhz_max", "cuda_runtime",
            "gpu_clocks_sm_max_mem_driver", "loadavg_1_5_15", "loadavg_at_end", "mode"]
    rows = [(k, env[k]) for k in keys if k in env]
    return markdown_table(["", "value"], rows)


def write_json(path: Path, payload: object) -> Path:
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return path


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
