"""``streamo stats``: samples, turns, states and responses of a stream file."""

from __future__ import annotations

import argparse
import json
import sys

from ..argtypes import existing_file

NAME = "stats"
HELP = "count samples, turns, states and responses in a stream file"
DESCRIPTION = "Count samples, turns, state distribution, responses and durations of a stream file."


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True, type=existing_file, help="stream file (JSON list or JSONL)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..stats import format_stats, stream_stats

    stats = stream_stats(args.input)
    for problem in stats.problems[:20]:
        print(f"error: {problem}", file=sys.stderr)
    print(json.dumps(stats.as_dict()) if args.json else format_stats(stats))
    return 0
