"""Command line: ``python -m pybayes {info,test,bench,demo}``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pybayes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, compiled kernels, threads, GPU")
    t = sub.add_parser("test", help="the full test suite: ctest, nvcc compile check, pytest")
    t.add_argument("pytest_args", nargs="*", help="extra arguments passed to pytest")
    b = sub.add_parser("bench", add_help=False,
                       help="benchmarks from the source checkout: same as python bench/run.py "
                            "[ops|thermo|all] --device cpu|cuda [--quick] (bench --help for all options)")
    b.add_argument("bench_args", nargs=argparse.REMAINDER)
    from .demo.run import add_arguments as add_demo_arguments

    d = sub.add_parser("demo", help="the main job: Bayesian deep learning on the digits data (4 methods, "
                                    "calibration, OOD, plots) and the thermodynamic chip; needs the [demo] extra")
    add_demo_arguments(d)
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw and raw[0] == "bench":  # everything after "bench" goes to bench/run.py verbatim
        from ._bench import main as bench_main

        return bench_main(raw[1:])
    args, extra = parser.parse_known_args(argv)
    if args.command == "info":
        from ._info import main as info_main

        return info_main()
    if args.command == "demo":
        from .demo.run import run_args

        if extra:
            parser.error(f"demo: unrecognized arguments: {' '.join(extra)}")

        return run_args(args)
    if args.command == "test":
        from ._selftest import main as test_main

        return test_main(args.pytest_args + extra)
    return 2


if __name__ == "__main__":
    sys.exit(main())
