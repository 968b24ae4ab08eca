"""``streamo eval``: a model, or its per-second predictions, scored against ground-truth timelines."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ..argtypes import existing_file
from ..errors import UsageError
from .options import add_fps

NAME = "eval"
HELP = "score a model or per-second predictions against ground-truth timelines"
DESCRIPTION = ("Score predictions (JSON lines of per-second states and answers), or a model run through the "
               "streaming engine, against a stream or raw data file: state accuracy and macro-F1, response timing F1 "
               "and delay, answer ROUGE-L.")


def add_arguments(parser) -> None:
    from ..engine.command import add_engine_options
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=existing_file, help="JSONL: {sample, t, state, text}")
    source.add_argument("--model", help="checkpoint directory: play every sample through the streaming engine")
    parser.add_argument("--data", required=True, type=existing_file, help="ground truth: stream file or raw annotations")
    parser.add_argument("--tolerance", type=float, default=1.0, help="seconds an answer may be early or late (default: 1)")
    add_fps(parser, "turns per second")
    parser.add_argument("--video-prefix", help="directory prepended to raw samples' video_path")
    parser.add_argument("--out", type=Path, help="write the full JSON report here")
    parser.add_argument("--plot", type=Path, help="*.png: one picture of all samples; otherwise a directory of pictures")
    parser.add_argument("--predictions-out", type=Path, help="with --model: keep the predictions JSONL here (to re-score later)")
    add_engine_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..jsonfiles import atomic_write
    from ..metrics import evaluate_files
    from ..metrics.plot import write_plots

    if args.predictions_out is not None and args.model is None:
        raise UsageError("--predictions-out needs --model")
    with tempfile.TemporaryDirectory(prefix="streamo-eval-") as scratch:
        predictions, run_problems = args.predictions, []
        if args.model is not None:
            predictions = args.predictions_out or Path(scratch) / "predictions.jsonl"
            run_problems = _run_model(args, predictions)
        evaluation = evaluate_files(predictions, args.data, args.tolerance, args.fps, args.video_prefix)
    evaluation.problems[:0] = run_problems
    evaluation.report["problems"] = evaluation.problems
    for problem in evaluation.problems[:20]:
        print(f"warning: {problem}", file=sys.stderr)
    if len(evaluation.problems) > 20:
        print(f"... {len(evaluation.problems) - 20} more problems (all in the report)", file=sys.stderr)
    unpredicted = evaluation.report["samples_without_predictions"]
    if unpredicted:
        print(f"warning: {len(unpredicted)} samples have no predictions and are not scored", file=sys.stderr)
    if not evaluation.items:
        raise UsageError(f"no sample of {args.data} has predictions" + ("" if args.model else f" in {args.predictions}"))
    if args.out:
        with atomic_write(args.out) as handle:
            handle.write(json.dumps(evaluation.report, indent=2).encode() + b"\n")
    if args.plot:
        write_plots(args.plot, evaluation.items, evaluation.scores)
    print(json.dumps(evaluation.report["summary"]))
    return 0


def _run_model(args: argparse.Namespace, predictions: Path) -> list[str]:
    """Play every sample of ``args.data`` through ``args.model`` into ``predictions``."""
    from ..jsonfiles import RecordWriter
    from ..engine.model import StreamModel, engine_settings
    from ..model_eval import load_eval_samples, predict_samples

    samples, problems = load_eval_samples(args.data, args.fps, args.video_prefix)
    if not samples:
        raise UsageError(f"{args.data}: no usable sample ({'; '.join(problems[:3]) or 'empty'})")
    model = StreamModel(args.model, engine_settings(args), args.device)
    try:
        with RecordWriter(predictions) as writer:
            problems += predict_samples(model, samples, writer.write, progress=sys.stderr.isatty())
    finally:
        model.close()
    return problems
