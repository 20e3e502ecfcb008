"""setup.py refuses, with what to do, the CUDA builds the kernels cannot run
under: toolkits older than 12.1 and architectures older than sm_70 (the ~14 KB
of by-value kernel metadata), and fast-math anywhere in the nvcc flags (the
bitwise CPU/CUDA noise contract)."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def setup_py(monkeypatch):
    spec = importlib.util.spec_from_file_location("pybayes_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: defines the checks, builds nothing
    for var in ("NVCC_APPEND_FLAGS", "NVCC_PREPEND_FLAGS"):
        monkeypatch.delenv(var, raising=False)
    return module


@pytest.mark.parametrize("version, ok", [((11, 8), False), ((12, 0), False), ((12, 1), True),
                                         ((13, 0), True), (None, True)])
def test_toolkit_version(setup_py, monkeypatch, version, ok):
    monkeypatch.setattr(setup_py, "nvcc_version", lambda: version)
    if ok:
        setup_py.check_cuda_support("sm_90")
    else:
        with pytest.raises(SystemExit, match=r"CUDA >= 12\.1 .*PYBAYES_FORCE_CPU=1"):
            setup_py.check_cuda_support("sm_90")


@pytest.mark.parametrize("archs, bad", [("sm_90,compute_90", None), ("sm_70", None), ("sm_90a", None),
                                        ("sm_60,sm_90", "sm_60"), ("compute_61", "compute_61")])
def test_architectures(setup_py, monkeypatch, archs, bad):
    monkeypatch.setattr(setup_py, "nvcc_version", lambda: (13, 0))
    if bad is None:
        setup_py.check_cuda_support(archs)
    else:
        with pytest.raises(SystemExit, match=f"sm_70 or newer.*targets {bad}.*TORCH_CUDA_ARCH_LIST"):
            setup_py.check_cuda_support(archs)


@pytest.mark.parametrize("var", ["NVCC_APPEND_FLAGS", "NVCC_PREPEND_FLAGS"])
def test_fast_math_refused(setup_py, monkeypatch, var):
    setup_py.check_no_fast_math()  # the project's own flags are fine
    monkeypatch.setenv(var, "-O3 --use_fast_math")
    with pytest.raises(SystemExit, match=f"fast-math \\({var}\\)"):
        setup_py.check_no_fast_math()


def test_nvcc_version_parsed(setup_py, monkeypatch, tmp_path):
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir()
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.0, V12.0.76'\n")
    nvcc.chmod(0o755)
    monkeypatch.setattr(setup_py, "CUDA_HOME", str(tmp_path))
    assert setup_py.nvcc_version() == (12, 0)
    with pytest.raises(SystemExit, match="is 12.0"):
        setup_py.check_cuda_support("sm_90")
