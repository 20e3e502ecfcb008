"""`python -m pybayes info`: what this installation contains."""

from __future__ import annotations

import importlib
import platform

import torch

import pybayes


def collect() -> dict:
    info = {
        "pybayes": pybayes.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    info.update({f"build.{k}": v for k, v in pybayes.ops.build_info().items()})
    kernels = ["cpu"]
    if info["build.cuda"]:
        kernels.append(f"cuda ({info['build.cuda_archs']})")
    info["kernels"] = ", ".join(kernels)
    try:
        thermo = importlib.import_module("pybayes._thermo")
        info["thermo"] = f"present (matrix-product kernel: {thermo.gemm_isa()})"
    except ImportError as e:
        info["thermo"] = f"absent ({e})"
    if torch.cuda.is_available():
        info["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    else:
        info["gpu"] = "none visible to torch"
    return info


def main(argv=None) -> int:
    for key, value in collect().items():
        print(f"{key:>24}: {value}")
    return 0
