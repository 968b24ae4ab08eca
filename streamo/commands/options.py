"""Options that several commands share, so that each is spelled and explained once."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..argtypes import existing_file, positive_float, positive_int, system_prompt_file, system_prompt_text

WORKERS = os.cpu_count() or 1


def add_fps(parser: argparse.ArgumentParser, what: str = "frames (turns) per second") -> None:
    parser.add_argument("--fps", type=positive_float, default=1.0, help=f"{what} (default: 1.0)")


def add_initial_question(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-initial-question", action="store_true",
                        help="do not repeat the first question at turn 0 when no question is asked there")


def add_raw_options(parser: argparse.ArgumentParser, rejects_default: str) -> None:
    """The inputs of ``convert`` and ``validate``: raw annotations and how to read them;
    ``rejects_default`` says where the report goes without ``--rejects``."""
    parser.add_argument("--input", required=True, type=existing_file, help="raw annotations: JSON list, JSON object or JSONL")
    parser.add_argument("--video-prefix", help="directory prepended to each sample's video_path")
    add_fps(parser)
    add_initial_question(parser)
    parser.add_argument("--rejects", type=Path, help=f"JSONL report of every sample with a problem (default: {rejects_default})")
    parser.add_argument("--workers", type=positive_int, default=WORKERS, help="worker processes (default: all CPUs)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any sample is rejected")


def add_prompt_options(parser: argparse.ArgumentParser) -> None:
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--system-prompt", type=system_prompt_text, help="system prompt text (default: Streamo's built-in prompt)")
    prompt.add_argument("--system-prompt-file", dest="system_prompt", type=system_prompt_file, metavar="FILE",
                        help="read the system prompt from this UTF-8 file")


def add_executor(parser: argparse.ArgumentParser, what: str) -> None:
    """``--executor`` and ``--ray-address``: where per-video work runs."""
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help=f"where {what} runs: local worker processes (--workers), or Ray tasks, one per CPU "
                        "the cluster offers, retried when a worker dies (needs streamo[cluster]; default: local)")
    parser.add_argument("--ray-address", default="auto", metavar="ADDRESS",
                        help="Ray cluster to use with --executor ray (default: auto, the running one, else a local "
                        "one started and stopped here)")
