"""``streamo convert`` (alias ``to-stream``): raw event annotations to per-second stream conversations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError
from ..protocol import DEFAULT_SYSTEM_PROMPT
from .options import add_prompt_options, add_raw_options

NAME = "convert"
ALIASES = ("to-stream",)
HELP = "convert raw event annotations into per-second stream conversations"
DESCRIPTION = "Convert raw event annotations into per-second stream conversations."


def add_arguments(parser) -> None:
    add_raw_options(parser, "OUTPUT.rejects.jsonl, beside the output")
    parser.add_argument("--output", required=True, type=Path, help="stream file: *.json (indented list) or *.jsonl")
    add_prompt_options(parser)


def run(args: argparse.Namespace) -> int:
    if args.output.resolve() == args.input.resolve():
        raise UsageError("--output must differ from --input")
    return process(args, args.output)


def process(args: argparse.Namespace, output: Path | None) -> int:
    """Convert (or with no ``output``, only check) ``args.input``; the summary goes to stderr."""
    from ..batch import default_rejects_path, process_file
    from ..convert import ConvertOptions

    options = ConvertOptions(
        fps=args.fps,
        # validate has no prompt options (it writes no stream); blank prompts are refused while parsing
        system_prompt=getattr(args, "system_prompt", None) or DEFAULT_SYSTEM_PROMPT,
        video_prefix=args.video_prefix,
        initial_question=not args.no_initial_question,
    )
    rejects = args.rejects or (default_rejects_path(output) if output else None)
    summary = process_file(args.input, options, output, rejects, workers=args.workers)
    where = f" -> {output}" if output else ""
    report = f"; report: {rejects}" if rejects and (summary.rejected or summary.with_warnings) else ""
    print(f"{args.input}{where}: {summary.line()}{report}", file=sys.stderr)
    return 1 if args.strict and summary.rejected else 0
