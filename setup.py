"""Build of pybayes' compiled parts (DESIGN.md §2).

* ``pybayes._C``: the torch custom ops. Sources: ``csrc/*.cpp`` (torch-free
  shared code) + ``csrc/ops/*.cpp`` (registration and CPU kernels), plus
  ``cuda/*.cu`` and ``csrc/ops/cuda/*.cpp`` (launch glue) when the installed
  torch has CUDA and a CUDA toolkit is found. ``PYBAYES_FORCE_CPU=1`` forces a
  CPU-only build.
* ``pybayes._thermo``: the pybind11 thermodynamic-chip simulator (torch-free),
  from ``csrc/*.cpp`` + ``csrc/thermo/*.cpp`` + ``csrc/bindings/thermo.cpp``.

Source lists are globs over those folders (CMakeLists.txt globs the same
folders), so there is no second list to keep in sync.

Build against the torch you already have:  pip install --no-build-isolation -e .
"""

import glob
import os
import re
import subprocess
import sys

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - exercised only on a broken install
    sys.exit(
        "pybayes builds against the torch that is already installed: install torch first "
        "(for example `pip install torch==2.13.0`), then `pip install --no-build-isolation -e .`"
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
GENERATED = os.path.join(ROOT, "build", "generated")

# -ffp-contract=off: the shared RNG/update math must give the same bits in every
# vectorised clone and on CUDA (compiled with --fmad=false); -fno-math-errno lets
# sqrt vectorise without changing results.
CXX_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Wno-unknown-pragmas"]
# at::parallel_for is inlined into our code: with torch's OpenMP backend it is an
# `omp parallel` region that runs serially unless the extension itself is built
# with OpenMP (torch's own libgomp serves it at run time).
OPENMP = ["-fopenmp"] if torch.backends.openmp.is_available() else []
NVCC_FLAGS = ["-O3", "--fmad=false", "-lineinfo", "--expt-relaxed-constexpr"]


def rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def cuda_decision():
    """(build_cuda, reason) — the reason is shown by `python -m pybayes info`."""
    if os.environ.get("PYBAYES_FORCE_CPU", "0") not in ("", "0"):
        return False, "CPU-only build forced by PYBAYES_FORCE_CPU"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} has no CUDA"
    if CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    return True, f"CUDA {torch.version.cuda} toolkit at {CUDA_HOME}"


def cuda_archs():
    try:
        from torch.utils.cpp_extension import _get_cuda_arch_flags

        flags = _get_cuda_arch_flags()
    except Exception:  # torch's private helper moved: fall back to the env var
        return os.environ.get("TORCH_CUDA_ARCH_LIST", "default")
    archs = sorted({f.split("code=")[-1] for f in flags if "code=" in f})
    return ",".join(archs) or "default"


# The multi-tensor kernels pass ~14 KB of metadata by value (cuda/multi_tensor.cuh):
# kernel parameters above 4 KB need CUDA >= 12.1 and sm_70 or newer.
MIN_CUDA = (12, 1)
MIN_ARCH = 70


def nvcc_version():
    try:
        out = subprocess.run([os.path.join(CUDA_HOME, "bin", "nvcc"), "--version"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_cuda_support(archs):
    """Refuse, with what to do, a toolkit or an architecture the kernels cannot run on."""
    version = nvcc_version()
    if version is not None and version < MIN_CUDA:
        sys.exit(f"pybayes' CUDA kernels need CUDA >= {MIN_CUDA[0]}.{MIN_CUDA[1]} (nvcc at {CUDA_HOME} "
                 f"is {version[0]}.{version[1]}): install a newer toolkit and point CUDA_HOME at it, "
                 "or build CPU-only with PYBAYES_FORCE_CPU=1")
    numbers = {a: int(m.group(1)) for a in archs.split(",")
               if (m := re.fullmatch(r"(?:sm|compute)_(\d+)[a-z]?", a))}
    old = [a for a, n in numbers.items() if n < MIN_ARCH]
    if old:
        sys.exit(f"pybayes' CUDA kernels need sm_{MIN_ARCH} or newer, but the build targets {', '.join(old)}: "
                 "set TORCH_CUDA_ARCH_LIST to 7.0 or newer (for example '9.0'), or build CPU-only "
                 "with PYBAYES_FORCE_CPU=1")


def check_no_fast_math():
    """nvcc 13 defines no macro for --use_fast_math (csrc/hd.h catches -ffast-math):
    refuse it where a build could pick it up."""
    sources = {"setup.py's nvcc flags": NVCC_FLAGS}
    for var in ("NVCC_APPEND_FLAGS", "NVCC_PREPEND_FLAGS"):
        sources[var] = os.environ.get(var, "").split()
    for where, flags in sources.items():
        if any("fast_math" in f or "fast-math" in f for f in flags):
            sys.exit(f"pybayes must not be built with fast-math ({where}): approximate sqrt/log/"
                     "division would break the bitwise CPU/CUDA noise contract")


def write_build_config(with_cuda, reason, archs):
    os.makedirs(GENERATED, exist_ok=True)
    text = (
        "// Generated by setup.py: what this build of pybayes._C contains.\n"
        "#pragma once\n"
        f"#define PYBAYES_BUILD_CUDA {1 if with_cuda else 0}\n"
        f"#define PYBAYES_BUILD_CUDA_ARCHS {archs!r}\n".replace("'", '"')
        + f"#define PYBAYES_BUILD_NOTE {reason!r}\n".replace("'", '"')
        + f"#define PYBAYES_BUILD_TORCH {torch.__version__!r}\n".replace("'", '"')
    )
    path = os.path.join(GENERATED, "pybayes_build_config.h")
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


def extensions():
    with_cuda, reason = cuda_decision()
    archs = cuda_archs() if with_cuda else ""
    if with_cuda:
        check_cuda_support(archs)
        check_no_fast_math()
    write_build_config(with_cuda, reason, archs)
    include_dirs = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "cuda"), GENERATED]
    shared = glob.glob(os.path.join(ROOT, "csrc", "*.cpp"))
    op_sources = shared + glob.glob(os.path.join(ROOT, "csrc", "ops", "*.cpp"))
    if with_cuda:
        op_sources += glob.glob(os.path.join(ROOT, "cuda", "*.cu"))
        op_sources += glob.glob(os.path.join(ROOT, "csrc", "ops", "cuda", "*.cpp"))
        ops = CUDAExtension(
            "pybayes._C",
            rel(op_sources),
            include_dirs=include_dirs,
            define_macros=[("PYBAYES_WITH_CUDA", "1")],
            extra_compile_args={"cxx": CXX_FLAGS + OPENMP, "nvcc": NVCC_FLAGS},
            extra_link_args=OPENMP,
        )
    else:
        ops = CppExtension(
            "pybayes._C",
            rel(op_sources),
            include_dirs=include_dirs,
            extra_compile_args={"cxx": CXX_FLAGS + OPENMP},
            extra_link_args=OPENMP,
        )
    exts = [ops]
    bindings = os.path.join(ROOT, "csrc", "bindings", "thermo.cpp")
    if os.path.exists(bindings):
        import pybind11

        thermo_sources = shared + glob.glob(os.path.join(ROOT, "csrc", "thermo", "*.cpp")) + [bindings]
        exts.append(
            CppExtension(
                "pybayes._thermo",
                rel(thermo_sources),
                include_dirs=include_dirs + [pybind11.get_include()],
                extra_compile_args={"cxx": CXX_FLAGS},
            )
        )
    # PYBAYES_ONLY=_thermo (or _C): rebuild one extension, for development
    only = os.environ.get("PYBAYES_ONLY")
    if only:
        exts = [e for e in exts if e.name.split(".")[-1] in only.split(",")]
    return exts


if __name__ == "__main__":  # pip's backend and `python setup.py` run it as __main__; tests import it
    setup(
        ext_modules=extensions(),
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    )
