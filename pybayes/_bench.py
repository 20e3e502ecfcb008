"""``python -m pybayes bench ...``: runs ``bench/run.py`` of the source checkout.

The benchmarks are not part of the installed package (they compare against
optional third-party libraries and write results into the repository), so this
finds the checkout the package was installed from (``pip install -e .``) and
runs its ``bench/run.py`` with the same Python and arguments.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence


def find_run_py() -> Optional[Path]:
    """``bench/run.py`` next to the package directory, i.e. in the checkout of
    an editable (or in-place) install; None for a regular installed copy."""
    candidate = Path(__file__).resolve().parent.parent / "bench" / "run.py"
    return candidate if candidate.is_file() else None


def main(args: Sequence[str]) -> int:
    run_py = find_run_py()
    if run_py is None:
        pkg = Path(__file__).resolve().parent
        print("python -m pybayes bench: the benchmarks live in the bench/ folder of the source "
              f"checkout, which this installation does not have (pybayes is imported from {pkg}).\n"
              "Clone the repository, install it with `pip install --no-build-isolation -e .` and run "
              "`python -m pybayes bench` (or `python bench/run.py`) there.", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(run_py), *args])
