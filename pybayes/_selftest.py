"""`python -m pybayes test`: the whole test suite from a source checkout.

1. CMake configure + build (C++ unit tests; nvcc compile check of cuda/ when
   nvcc is found), then ctest;
2. pytest over tests/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time


def _run(cmd, cwd):
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=cwd)


def main(pytest_args=()) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, "CMakeLists.txt")):
        print("python -m pybayes test runs from a source checkout (pip install -e .)", file=sys.stderr)
        return 2
    cmake = shutil.which("cmake")
    if cmake is None:
        print("cmake not found: install it (pip install cmake) to run the C++ tests", file=sys.stderr)
        return 2
    build = os.path.join(root, "build", "cmake")
    jobs = str(os.cpu_count() or 2)
    t0 = time.time()
    for cmd in ([cmake, "-S", root, "-B", build, "-DCMAKE_BUILD_TYPE=Release"],
                [cmake, "--build", build, "-j", jobs],
                ["ctest", "--test-dir", build, "--output-on-failure"]):
        if cmd[0] == "ctest":
            cmd[0] = shutil.which("ctest") or os.path.join(os.path.dirname(cmake), "ctest")
        rc = _run(cmd, root)
        if rc != 0:
            return rc
    print(f"C++ build + ctest: {time.time() - t0:.1f} s", flush=True)
    return _run([sys.executable, "-m", "pytest", os.path.join(root, "tests"), *pytest_args], root)
