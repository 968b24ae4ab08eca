"""``streamo validate``: every problem of raw annotations, with nothing written."""

from __future__ import annotations

import argparse

from .convert import process
from .options import add_raw_options

NAME = "validate"


def add_parser(sub) -> None:
    parser = sub.add_parser(
        NAME,
        help="check raw annotations and report problems without writing output",
        description="Check raw annotations and report every problem, writing no output.",
    )
    add_raw_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return process(args, None)
