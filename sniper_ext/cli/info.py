"""``sniper info``: what was built and what runs here (the report of ``python -m sniper_ext.info``)."""

from __future__ import annotations

from ..info import report
from .common import EXIT_OK, add_command

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    return add_command(subparsers, "info", help="build and runtime information")


def run(args) -> int:
    print(report())
    return EXIT_OK
