"""``streamo ovobench``: a model on OVO-Bench, or its replies, scored by the benchmark's rules."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..argtypes import existing_file
from ..errors import UsageError
from .options import add_fps

NAME = "ovobench"
HELP = "run a model on OVO-Bench (or score its replies) by the benchmark's rules"
DESCRIPTION = ("OVO-Bench: forward-active tasks (REC, SSR, CRR) stream and the model decides when to answer; "
               "multiple-choice tasks are answered at the probe time. Prints one JSON line, scored as the benchmark's scorer "
               "does, in %: score.tasks (each task's accuracy: mean over its probes), score.categories (backward, realtime, "
               "forward: mean of their tasks' accuracies), score.overall (mean of the category means: the benchmark's "
               "\"Total Avg.\"); with --model also a latency-aware forward score.")


def add_arguments(parser) -> None:
    from ..engine.command import add_engine_options
    parser.add_argument("--annotations", required=True, type=existing_file, help="OVO-Bench annotation file (JSON list)")
    parser.add_argument("--video-root", type=Path, help="directory the annotations' video paths are relative to")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint directory to run through the streaming engine")
    source.add_argument("--predictions", type=existing_file, help="score these replies instead (JSONL {id, index, reply})")
    parser.add_argument("--tasks", nargs="+", help="only these tasks (e.g. REC SSR CRR EPM)")
    add_fps(parser)
    parser.add_argument("--out", type=Path, help="write the full JSON report (scores, latency, every probe) here")
    parser.add_argument("--predictions-out", type=Path, help="write the replies (JSONL {id, task, index, reply}) here")
    add_engine_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..jsonfiles import RecordWriter, atomic_write
    from ..ovobench import CATEGORY_OF, latency_score, load_annotations, results_as_records, score

    unknown = sorted(set(args.tasks or ()) - set(CATEGORY_OF))
    if unknown:
        raise UsageError(f"--tasks: unknown {', '.join(unknown)} (known: {', '.join(CATEGORY_OF)})")
    items, problems = load_annotations(args.annotations, str(args.video_root) if args.video_root else None, args.tasks)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not items:
        raise UsageError(f"{args.annotations}: no usable item")
    report: dict = {}
    if args.model is not None:
        from ..engine.model import StreamModel, engine_settings
        from ..ovobench_model import ovobench_run

        model = StreamModel(args.model, engine_settings(args), args.device)
        try:
            results, runs = ovobench_run(items, model, progress=sys.stderr.isatty())
        finally:
            model.close()
        report["latency"] = latency_score(runs)
    else:
        from ..ovobench import read_replies

        results, reply_problems = read_replies(args.predictions, items)
        problems += reply_problems
    failed = [f"item {r.probe.item_id!r} probe {r.probe.index}: {r.error}" for r in results if r.error]
    for problem in failed[:20]:
        print(f"warning: {problem}", file=sys.stderr)
    report = {"score": score(results), **report, "problems": problems + failed, "probes": results_as_records(results)}
    if args.predictions_out:
        with RecordWriter(args.predictions_out) as writer:
            for record in report["probes"]:
                writer.write({"id": record["item_id"], "task": record["task"], "index": record["index"], "reply": record["reply"]})
    if args.out:
        with atomic_write(args.out) as handle:
            handle.write(json.dumps(report, indent=2, ensure_ascii=False).encode() + b"\n")
    print(json.dumps({"score": report["score"], **({"latency": report["latency"]} if "latency" in report else {})}))
    return 0
