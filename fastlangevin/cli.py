"""The ``fastlangevin`` command (also ``python -m fastlangevin``).

Subcommands register themselves through ``SUBCOMMANDS``: each entry is a module path whose
``add_parser(subparsers)`` adds its parser and sets ``func`` (called with the parsed args,
returns an exit code). Modules import lazily so ``fastlangevin info`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

SUBCOMMANDS = [
    "fastlangevin.cli_info",
    "fastlangevin.demos.cli",
    "fastlangevin.benchmarking.cli",
    "fastlangevin.benchmarking.profiling",
    "fastlangevin.kernel_budget",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastlangevin", description="Fused Langevin sampling and score matching for PyTorch."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
