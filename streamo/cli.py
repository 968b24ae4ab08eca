"""The ``streamo`` command line: parses, dispatches to ``streamo.commands``, and turns user errors
into one line.

``scripts/convert_streaming_video.py`` exposes the data sub-commands under the names the original
project used (``to-stream``). Exit status: 0 on success, 2 for unusable arguments or unreadable
input (any ``errors.UsageError``), 1 when ``--strict`` is given and samples were rejected or
when ``frames`` could not extract a video.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import __version__
from .commands import COMMANDS, DATA_COMMANDS, add_parser
from .errors import UsageError

__all__ = ["COMMANDS", "DATA_COMMANDS", "UsageError", "build_parser", "main"]


def build_parser(prog: str = "streamo", commands: Sequence[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Streamo: train and run real-time streaming video assistants.")
    parser.add_argument("--version", action="version", version=f"streamo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        add_parser(sub, name)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "streamo", commands: Sequence[str] = tuple(COMMANDS)) -> int:
    args = build_parser(prog, commands).parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
