"""``streamo instruct prepare``: a Streamo-Instruct-style annotation tree, found, checked and converted."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..argtypes import existing_file, existing_path, positive_int, task_weight
from ..errors import UsageError
from ..protocol import DEFAULT_SYSTEM_PROMPT
from .options import WORKERS, add_executor, add_fps, add_initial_question, add_prompt_options

NAME = "instruct"
HELP = "prepare Streamo-Instruct-465K: find the videos, convert, report what is missing"
DESCRIPTION = "Work with Streamo-Instruct-465K-style annotation trees."


def add_arguments(parser) -> None:
    commands = parser.add_subparsers(dest="instruct_command", required=True, metavar="COMMAND")
    prepare = commands.add_parser(
        "prepare",
        help="find every record's video, check it, convert, and report what is missing",
        description="Scan an annotation tree (JSON lists, JSON objects, JSONL, per-task folders), find each "
        "record's video under the root of its source, check every distinct video once (exists, not empty, "
        "decodes, true duration; cached for re-runs), convert what can be converted into one stream file per "
        "task plus a combined one, report every other sample with its reason, and print the commands that "
        "fill the frame cache and train on the result. See docs/instruct.md.",
    )
    prepare.add_argument("--annotations", required=True, type=existing_path, help="annotation directory (or one file)")
    prepare.add_argument("--video-root", action="append", default=[], metavar="SOURCE=DIR",
                         help="videos of SOURCE are under DIR (names match ignoring case and punctuation, aliases "
                         "included); a DIR alone is the default root for every other source; repeatable")
    prepare.add_argument("--roots", type=existing_file, metavar="FILE",
                         help="more roots, one SOURCE=DIR or DIR per line (relative to the file); --video-root wins")
    prepare.add_argument("--out", required=True, type=Path, help="output directory")
    prepare.add_argument("--tasks", nargs="+", default=[], metavar="TASK", help="only these tasks")
    prepare.add_argument("--sources", nargs="+", default=[], metavar="SOURCE", help="only these sources")
    prepare.add_argument("--limit", type=positive_int, metavar="N",
                         help="a random subset of N of the selected samples, the same for the same --seed")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the --limit subset (default: 0)")
    prepare.add_argument("--task-weight", type=task_weight, action="append", default=[], metavar="TASK=FACTOR",
                         help="in the printed train.sh line, draw FACTOR times the task's samples (ms-swift's "
                         "FILE#N; 0 leaves the task out); repeatable")
    prepare.add_argument("--workers", type=positive_int, default=WORKERS,
                         help="worker processes for probing and converting (default: all CPUs)")
    add_executor(prepare, "checking the videos")
    add_fps(prepare)
    add_initial_question(prepare)
    add_prompt_options(prepare)


def run(args: argparse.Namespace) -> int:
    """``prepare``, the one sub-command so far."""
    import contextlib

    from ..cluster import RayExecutor
    from ..convert import ConvertOptions
    from ..instruct import PrepareOptions, VideoRoots, format_table, prepare

    roots = VideoRoots()
    if args.roots:
        roots.add_file(args.roots)
    for spec in args.video_root:
        roots.add(spec)
    weights = dict(args.task_weight)
    if weights and any(character.isspace() for character in str(args.out.resolve())):
        raise UsageError("--task-weight: train.sh's DATASET separates files by spaces, so --out must not contain any")
    options = PrepareOptions(
        annotations=args.annotations, out=args.out, roots=roots, tasks=tuple(args.tasks), sources=tuple(args.sources),
        limit=args.limit, seed=args.seed, workers=args.workers, task_weights=weights,
        convert=ConvertOptions(fps=args.fps, system_prompt=args.system_prompt or DEFAULT_SYSTEM_PROMPT,
                               initial_question=not args.no_initial_question),
    )
    with RayExecutor(args.ray_address) if args.executor == "ray" else contextlib.nullcontext() as executor:
        summary = prepare(options, progress=sys.stderr.isatty(), executor=executor)
    total, files, probes = summary["total"], summary["files"], summary["probes"]
    print(format_table(summary))
    print(f"\nvideos: {total['videos']} distinct, {total['found']} found ({total['hours']:.1f} h), {total['missing']} "
          f"missing, {total['unreadable']} unreadable; {probes['probed']} probed, {probes['reused']} known from "
          f"the last run; per video: {files['videos']}")
    if executor is not None:
        print(f"ray: {probes['retried']} videos checked again after their worker died; failures: {files['ledger']}")
    print(f"samples: {total['samples']}: {total['converted']} converted ({summary['converted_with_warnings']} with "
          f"warnings), {total['rejected']} rejected; report: {files['rejects']}")
    if summary["commands"] is None:
        print("nothing was converted: see the report and give the missing video roots")
        return 0
    estimate = summary["frame_cache_estimate"]
    print(f"stream conversations: {files['stream']} ({summary['conversion']}), one file per task in "
          f"{Path(files['stream']).parent / 'tasks'}")
    print(f"\nfill the frame cache (about {estimate['frames']} frames, {estimate['gb']} GB at the default pixel budget):\n"
          f"  {summary['commands']['frames']}\ntrain:\n  {summary['commands']['train']}")
    return 0
