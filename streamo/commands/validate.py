"""``streamo validate``: every problem of raw annotations, with nothing written."""

from __future__ import annotations

import argparse

from .convert import process
from .options import add_raw_options

NAME = "validate"
HELP = "check raw annotations and report problems without writing output"
DESCRIPTION = "Check raw annotations and report every problem, writing no output."


def add_arguments(parser) -> None:
    add_raw_options(parser)


def run(args: argparse.Namespace) -> int:
    return process(args, None)
