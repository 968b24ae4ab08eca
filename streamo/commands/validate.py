"""``streamo validate``: every problem of raw annotations; no file written but the report asked for."""

from __future__ import annotations

import argparse

from .convert import process
from .options import add_raw_options

NAME = "validate"
HELP = "check raw annotations and report problems without writing output"
DESCRIPTION = ("Check raw annotations and report every problem of every sample: the first ones printed, all of them "
               "in the --rejects report when one is asked for; nothing else is written.")


def add_arguments(parser) -> None:
    add_raw_options(parser, "none: validate writes no file and prints the first problems")


def run(args: argparse.Namespace) -> int:
    return process(args, None)
