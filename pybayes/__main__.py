"""Command line: ``python -m pybayes {info,test}``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pybayes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, compiled kernels, threads, GPU")
    t = sub.add_parser("test", help="the full test suite: ctest, nvcc compile check, pytest")
    t.add_argument("pytest_args", nargs="*", help="extra arguments passed to pytest")
    args, extra = parser.parse_known_args(argv)
    if args.command == "info":
        from ._info import main as info_main

        return info_main()
    if args.command == "test":
        from ._selftest import main as test_main

        return test_main(args.pytest_args + extra)
    return 2


if __name__ == "__main__":
    sys.exit(main())
