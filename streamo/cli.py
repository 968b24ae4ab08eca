"""The ``streamo`` command line.

Each sub-command lives in its own small function; ``scripts/convert_streaming_video.py``
exposes the data sub-commands under the names the original project used (``to-stream``).
Exit status: 0 on success, 2 for unusable arguments or unreadable input, 1 when
``--strict`` is given and samples were rejected.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from .argtypes import (
    existing_file,
    existing_path,
    positive_float,
    positive_int,
    system_prompt_file,
    system_prompt_text,
    task_weight,
)
from .protocol import DEFAULT_SYSTEM_PROMPT


class UsageError(Exception):
    """Arguments or inputs that make the command unusable (exit status 2)."""


def _add_raw_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=existing_file, help="raw annotations: JSON list, JSON object or JSONL")
    parser.add_argument("--video-prefix", help="directory prepended to each sample's video_path")
    parser.add_argument("--fps", type=positive_float, default=1.0, help="frames (turns) per second (default: 1.0)")
    parser.add_argument(
        "--no-initial-question",
        action="store_true",
        help="do not repeat the first question at turn 0 when no question is asked there",
    )
    parser.add_argument("--rejects", type=Path, help="JSONL report of every sample with a problem (default: next to the output)")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, help="worker processes (default: all CPUs)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any sample is rejected")


def _convert_options(args: argparse.Namespace):
    from .convert import ConvertOptions

    return ConvertOptions(
        fps=args.fps,
        # validate has no prompt options (it writes no stream); blank prompts are refused while parsing
        system_prompt=getattr(args, "system_prompt", None) or DEFAULT_SYSTEM_PROMPT,
        video_prefix=args.video_prefix,
        initial_question=not args.no_initial_question,
    )


def _run_process(args: argparse.Namespace, output: Path | None) -> int:
    from .batch import default_rejects_path, process_file
    from .jsonfiles import InvalidRecord

    rejects = args.rejects or (default_rejects_path(output) if output else None)
    try:
        summary = process_file(args.input, _convert_options(args), output, rejects, workers=args.workers)
    except InvalidRecord as exc:
        raise UsageError(str(exc)) from None
    where = f" -> {output}" if output else ""
    report = f"; report: {rejects}" if rejects and (summary.rejected or summary.with_warnings) else ""
    print(f"{args.input}{where}: {summary.line()}{report}", file=sys.stderr)
    return 1 if args.strict and summary.rejected else 0


def cmd_convert(args: argparse.Namespace) -> int:
    if args.output.resolve() == args.input.resolve():
        raise UsageError("--output must differ from --input")
    return _run_process(args, args.output)


def cmd_validate(args: argparse.Namespace) -> int:
    return _run_process(args, None)


def cmd_stats(args: argparse.Namespace) -> int:
    from .jsonfiles import InvalidRecord
    from .stats import format_stats, stream_stats

    try:
        stats = stream_stats(args.input)
    except InvalidRecord as exc:
        raise UsageError(str(exc)) from None
    for problem in stats.problems[:20]:
        print(f"error: {problem}", file=sys.stderr)
    print(json.dumps(stats.as_dict()) if args.json else format_stats(stats))
    return 0


def _build_convert(sub) -> None:
    parser = sub.add_parser(
        "convert",
        aliases=["to-stream"],
        help="convert raw event annotations into per-second stream conversations",
        description="Convert raw event annotations into per-second stream conversations.",
    )
    _add_raw_options(parser)
    parser.add_argument("--output", required=True, type=Path, help="stream file: *.json (indented list) or *.jsonl")
    _add_prompt_options(parser)
    parser.set_defaults(handler=cmd_convert)


def _add_prompt_options(parser: argparse.ArgumentParser) -> None:
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--system-prompt", type=system_prompt_text, help="system prompt text (default: Streamo's built-in prompt)")
    prompt.add_argument("--system-prompt-file", dest="system_prompt", type=system_prompt_file, metavar="FILE",
                        help="read the system prompt from this UTF-8 file")


def _build_validate(sub) -> None:
    parser = sub.add_parser(
        "validate",
        help="check raw annotations and report problems without writing output",
        description="Check raw annotations and report every problem, writing no output.",
    )
    _add_raw_options(parser)
    parser.set_defaults(handler=cmd_validate)


def _build_stats(sub) -> None:
    parser = sub.add_parser(
        "stats",
        help="count samples, turns, states and responses in a stream file",
        description="Count samples, turns, state distribution, responses and durations of a stream file.",
    )
    parser.add_argument("--input", required=True, type=existing_file, help="stream file (JSON list or JSONL)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(handler=cmd_stats)


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import SynthOptions, generate, parse_pause, parse_range, parse_size

    try:
        width, height = parse_size(args.size)
        pause = parse_pause(args.pause)
        duration = parse_range(args.duration, "duration")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    options = SynthOptions(videos=args.videos, seed=args.seed, fps=args.fps, width=width, height=height,
                           first_index=args.first_index, grounding=args.grounding, timing_cue=args.timing_cue,
                           pause=pause, duration=duration)
    try:
        raw_path = generate(args.out, options, progress=sys.stderr.isatty())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"{raw_path}: {args.videos} videos; convert with --video-prefix {args.out}", file=sys.stderr)
    return 0


def _build_synth(sub) -> None:
    from .synth.scene import DEFAULT_DURATION, DEFAULT_PAUSE, GROUNDING_CHOICES, MIN_PAUSE, SHORTEST_DURATION

    parser = sub.add_parser(
        "synth",
        help="generate synthetic shape videos with timed events and their raw annotations",
        description="Generate short videos of coloured shapes with unambiguous timed events and their raw "
        "annotations (instant QA, event grounding, narration, several questions per stream).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory (videos/ and raw_data.json)")
    parser.add_argument("--videos", required=True, type=positive_int, help="number of videos")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    parser.add_argument("--first-index", type=int, default=0, help="index of the first video (held-out sets: start after the training set)")
    parser.add_argument("--fps", type=positive_float, default=5.0, help="frame rate of the files (default: 5)")
    parser.add_argument("--size", default="160x128", help="frame size WIDTHxHEIGHT, even numbers (default: 160x128)")
    parser.add_argument("--grounding", choices=GROUNDING_CHOICES, default="one",
                        help="Grounding samples per video: one, about a random moving shape (default), or each moving "
                        "shape (training data: the same frames with different answers per shape named)")
    parser.add_argument("--pause", default="%d,%d" % DEFAULT_PAUSE, metavar="MIN,MAX",
                        help=f"whole seconds of stillness between changes, at least {MIN_PAUSE} (default: %(default)s); other "
                        "than the default, the first change also comes up to MAX-MIN seconds later, so that wider "
                        "ranges make the timing hard to guess without looking")
    parser.add_argument("--duration", default="%d,%d" % DEFAULT_DURATION, metavar="MIN,MAX",
                        help=f"whole seconds each clip lasts, at least {SHORTEST_DURATION} (default: %(default)s; "
                        "120,300 gives clips of realistic length for training at full size)")
    parser.add_argument("--timing-cue", action="store_true",
                        help="diagnostic: paint the background blue while something moves and red in the first frame "
                        "at rest after a change, so that the timing can be read off any frame by any vision encoder")
    parser.set_defaults(handler=cmd_synth)


def _build_tiny_model(sub) -> None:
    from . import tiny_model

    parser = sub.add_parser(
        "tiny-model",
        help="build a tiny random Qwen2.5-VL with the real Qwen2 tokenizer (CPU smoke runs, tests)",
        description="Build a tiny random Qwen2.5-VL with the real Qwen2 tokenizer (seeded; reused when complete).",
    )
    tiny_model.add_arguments(parser)
    parser.set_defaults(handler=tiny_model.run)


def _build_fit_head(sub) -> None:
    from . import fitting

    parser = sub.add_parser(
        "fit-head",
        help="fit a checkpoint's output head to a few stream conversations (a demo model that plays its examples)",
        description="Fit the output rows of a checkpoint so that it replies as the chosen stream conversations do over "
        "their own frames, and save the result with a line saying what it is (shown by streamo serve's page).",
    )
    fitting.add_arguments(parser)
    parser.set_defaults(handler=fitting.run)


def cmd_frames(args: argparse.Namespace) -> int:
    from .jsonfiles import InvalidRecord
    from .video.cache import DEFAULT_QUALITY, FrameCache
    from .video.extract import extract_file, report_paths
    from .video.sampling import MAX_PIXELS, MIN_PIXELS

    try:
        cache = FrameCache(
            args.cache_dir,
            args.fps,
            args.max_pixels or MAX_PIXELS,
            args.min_pixels or MIN_PIXELS,
            args.quality or DEFAULT_QUALITY,
        )
        summary = extract_file(args.input, cache, args.video_prefix, workers=args.workers)
    except (InvalidRecord, ValueError) as exc:
        raise UsageError(str(exc)) from None
    manifest, failures = report_paths(args.cache_dir, args.input)
    print(f"{args.input} -> {args.cache_dir}: {summary.line()}; manifest: {manifest}"
          + (f"; failures: {failures}" if summary.failed or summary.samples_rejected else ""), file=sys.stderr)
    return 0


def _build_frames(sub) -> None:
    parser = sub.add_parser(
        "frames",
        help="extract every video's per-turn frames into the frame cache ahead of training",
        description="Sample each video at --fps, resize to the pixel budget and store JPEGs in the frame "
        "cache; resumable, with a manifest and a failure report in the cache directory.",
    )
    parser.add_argument("--input", required=True, type=existing_file, help="stream file or raw annotations")
    parser.add_argument("--cache-dir", required=True, type=Path, help="frame cache directory")
    parser.add_argument("--fps", type=positive_float, default=1.0, help="frames (turns) per second (default: 1.0)")
    parser.add_argument("--max-pixels", type=positive_int,
                        help="pixel budget per frame (default: 100352 = 128 visual tokens)")
    parser.add_argument("--min-pixels", type=positive_int, help="smallest frame area (default: 3136 = 4 visual tokens)")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                        help="videos decoded in parallel (default: all CPUs)")
    parser.add_argument("--quality", type=positive_int, help="JPEG quality 1-100 (default: 90)")
    parser.add_argument("--video-prefix", help="directory prepended to each video path")
    parser.set_defaults(handler=cmd_frames)


def cmd_instruct_prepare(args: argparse.Namespace) -> int:
    from .convert import ConvertOptions
    from .instruct import PrepareError, PrepareOptions, VideoRoots, format_table, prepare

    roots = VideoRoots()
    try:
        if args.roots:
            roots.add_file(args.roots)
        for spec in args.video_root:
            roots.add(spec)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    weights = dict(args.task_weight)
    if weights and any(character.isspace() for character in str(args.out.resolve())):
        raise UsageError("--task-weight: train.sh's DATASET separates files by spaces, so --out must not contain any")
    options = PrepareOptions(
        annotations=args.annotations, out=args.out, roots=roots, tasks=tuple(args.tasks), sources=tuple(args.sources),
        limit=args.limit, seed=args.seed, workers=args.workers, task_weights=weights,
        convert=ConvertOptions(fps=args.fps, system_prompt=args.system_prompt or DEFAULT_SYSTEM_PROMPT,
                               initial_question=not args.no_initial_question),
    )
    try:
        summary = prepare(options, progress=sys.stderr.isatty())
    except PrepareError as exc:
        raise UsageError(str(exc)) from None
    total, files, probes = summary["total"], summary["files"], summary["probes"]
    print(format_table(summary))
    print(f"\nvideos: {total['videos']} distinct, {total['found']} found ({total['hours']:.1f} h), {total['missing']} "
          f"missing, {total['unreadable']} unreadable; {probes['probed']} probed, {probes['reused']} known from "
          f"the last run; per video: {files['videos']}")
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


def _build_instruct(sub) -> None:
    parser = sub.add_parser(
        "instruct",
        help="prepare Streamo-Instruct-465K: find the videos, convert, report what is missing",
        description="Work with Streamo-Instruct-465K-style annotation trees.",
    )
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
    prepare.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                         help="worker processes for probing and converting (default: all CPUs)")
    prepare.add_argument("--fps", type=positive_float, default=1.0, help="frames (turns) per second (default: 1.0)")
    prepare.add_argument("--no-initial-question", action="store_true",
                         help="do not repeat the first question at turn 0 when no question is asked there")
    _add_prompt_options(prepare)
    prepare.set_defaults(handler=cmd_instruct_prepare)


def _run_model_predictions(args: argparse.Namespace, predictions: Path) -> list[str]:
    """Play every sample of ``args.data`` through ``args.model`` into ``predictions``."""
    from .jsonfiles import RecordWriter
    from .model_eval import StreamModel, engine_settings, load_eval_samples, predict_samples

    samples, problems = load_eval_samples(args.data, args.fps, args.video_prefix)
    if not samples:
        raise UsageError(f"{args.data}: no usable sample ({'; '.join(problems[:3]) or 'empty'})")
    try:
        model = StreamModel(args.model, engine_settings(args), args.device)
    except ValueError as exc:  # a ModelLoadError
        raise UsageError(str(exc)) from None
    try:
        with RecordWriter(predictions) as writer:
            problems += predict_samples(model, samples, writer.write, progress=sys.stderr.isatty())
    finally:
        model.close()
    return problems


def cmd_eval(args: argparse.Namespace) -> int:
    import tempfile

    from .jsonfiles import InvalidRecord, atomic_write
    from .metrics import evaluate_files
    from .metrics.plot import write_plots

    if args.predictions_out is not None and args.model is None:
        raise UsageError("--predictions-out needs --model")
    with tempfile.TemporaryDirectory(prefix="streamo-eval-") as scratch:
        predictions, run_problems = args.predictions, []
        if args.model is not None:
            predictions = args.predictions_out or Path(scratch) / "predictions.jsonl"
            run_problems = _run_model_predictions(args, predictions)
        try:
            evaluation = evaluate_files(predictions, args.data, args.tolerance, args.fps, args.video_prefix)
        except (InvalidRecord, ValueError) as exc:
            raise UsageError(str(exc)) from None
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
        try:
            write_plots(args.plot, evaluation.items, evaluation.scores)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    print(json.dumps(evaluation.report["summary"]))
    return 0


def _build_eval(sub) -> None:
    from .engine.command import add_engine_options

    parser = sub.add_parser(
        "eval",
        help="score a model or per-second predictions against ground-truth timelines",
        description="Score predictions (JSON lines of per-second states and answers), or a model run through the "
        "streaming engine, against a stream or raw data file: state accuracy and macro-F1, response timing F1 "
        "and delay, answer ROUGE-L.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=existing_file, help="JSONL: {sample, t, state, text}")
    source.add_argument("--model", help="checkpoint directory: play every sample through the streaming engine")
    parser.add_argument("--data", required=True, type=existing_file, help="ground truth: stream file or raw annotations")
    parser.add_argument("--tolerance", type=float, default=1.0, help="seconds an answer may be early or late (default: 1)")
    parser.add_argument("--fps", type=positive_float, default=1.0, help="turns per second (default: 1.0)")
    parser.add_argument("--video-prefix", help="directory prepended to raw samples' video_path")
    parser.add_argument("--out", type=Path, help="write the full JSON report here")
    parser.add_argument("--plot", type=Path, help="*.png: one picture of all samples; otherwise a directory of pictures")
    parser.add_argument("--predictions-out", type=Path, help="with --model: keep the predictions JSONL here (to re-score later)")
    add_engine_options(parser)
    parser.set_defaults(handler=cmd_eval)


def cmd_ovobench(args: argparse.Namespace) -> int:
    from .jsonfiles import InvalidRecord, RecordWriter, atomic_write
    from .ovobench import CATEGORY_OF, latency_score, load_annotations, results_as_records, score

    unknown = sorted(set(args.tasks or ()) - set(CATEGORY_OF))
    if unknown:
        raise UsageError(f"--tasks: unknown {', '.join(unknown)} (known: {', '.join(CATEGORY_OF)})")
    try:
        items, problems = load_annotations(args.annotations, str(args.video_root) if args.video_root else None, args.tasks)
    except InvalidRecord as exc:
        raise UsageError(str(exc)) from None
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not items:
        raise UsageError(f"{args.annotations}: no usable item")
    report: dict = {}
    if args.model is not None:
        from .model_eval import StreamModel, engine_settings, ovobench_run

        try:
            model = StreamModel(args.model, engine_settings(args), args.device)
        except ValueError as exc:  # a ModelLoadError
            raise UsageError(str(exc)) from None
        try:
            results, runs = ovobench_run(items, model, progress=sys.stderr.isatty())
        finally:
            model.close()
        report["latency"] = latency_score(runs)
    else:
        from .model_eval import ovobench_replies

        try:
            results, reply_problems = ovobench_replies(args.predictions, items)
        except InvalidRecord as exc:
            raise UsageError(str(exc)) from None
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


def _build_ovobench(sub) -> None:
    from .engine.command import add_engine_options

    parser = sub.add_parser(
        "ovobench",
        help="run a model on OVO-Bench (or score its replies) by the benchmark's rules",
        description="OVO-Bench: forward-active tasks (REC, SSR, CRR) stream and the model decides when to answer; "
        "multiple-choice tasks are answered at the probe time. Prints one JSON line, scored as the benchmark's scorer "
        "does, in %: score.tasks (each task's accuracy: mean over its probes), score.categories (backward, realtime, "
        "forward: mean of their tasks' accuracies), score.overall (mean of the category means: the benchmark's "
        "\"Total Avg.\"); with --model also a latency-aware forward score.",
    )
    parser.add_argument("--annotations", required=True, type=existing_file, help="OVO-Bench annotation file (JSON list)")
    parser.add_argument("--video-root", type=Path, help="directory the annotations' video paths are relative to")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint directory to run through the streaming engine")
    source.add_argument("--predictions", type=existing_file, help="score these replies instead (JSONL {id, index, reply})")
    parser.add_argument("--tasks", nargs="+", help="only these tasks (e.g. REC SSR CRR EPM)")
    parser.add_argument("--fps", type=positive_float, default=1.0, help="frames (turns) per second (default: 1.0)")
    parser.add_argument("--out", type=Path, help="write the full JSON report (scores, latency, every probe) here")
    parser.add_argument("--predictions-out", type=Path, help="write the replies (JSONL {id, task, index, reply}) here")
    add_engine_options(parser)
    parser.set_defaults(handler=cmd_ovobench)


def _live_command(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A handler whose StreamInputError (bad input, unusable model) is a one-line usage error."""

    def handler(args: argparse.Namespace) -> int:
        from .engine.command import StreamInputError

        try:
            return run(args)
        except StreamInputError as exc:
            raise UsageError(str(exc)) from None

    return handler


def _build_stream(sub) -> None:
    from .engine.command import add_arguments, run_stream

    parser = sub.add_parser(
        "stream",
        help="play a video through a stream model and print each second's state and answer",
        description="Play a video (file, frame directory, stream URL or live stream on stdin) through a stream model "
        "with the incremental KV-cache engine, printing one line (or JSON line) per second.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=_live_command(run_stream))


def _build_serve(sub) -> None:
    from .live.command import add_serve_arguments, run_serve

    parser = sub.add_parser(
        "serve",
        help="serve live streaming sessions over a WebSocket API, with a web page",
        description="Serve a stream model to many live sessions at once: clients push frames (or name a server-side "
        "video) over the WebSocket /v1/stream and get one decision per frame. Loopback only unless an API key is set.",
    )
    add_serve_arguments(parser)
    parser.set_defaults(handler=_live_command(run_serve))


def _build_client(sub) -> None:
    from .live.command import add_client_arguments, run_client

    parser = sub.add_parser(
        "client",
        help="play a video through a streamo serve session and print each second's state and answer",
        description="Open a live session on a streamo serve server, send a video's frames (and questions), and print "
        "the same lines as streamo stream.",
    )
    add_client_arguments(parser)
    parser.set_defaults(handler=_live_command(run_client))


COMMANDS: dict[str, Callable] = {
    "convert": _build_convert,
    "validate": _build_validate,
    "stats": _build_stats,
    "synth": _build_synth,
    "tiny-model": _build_tiny_model,
    "fit-head": _build_fit_head,
    "frames": _build_frames,
    "eval": _build_eval,
    "ovobench": _build_ovobench,
    "stream": _build_stream,
    "serve": _build_serve,
    "client": _build_client,
    "instruct": _build_instruct,
}
DATA_COMMANDS = ("convert", "validate", "stats")


def build_parser(prog: str = "streamo", commands: Sequence[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Streamo: train and run real-time streaming video assistants.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        COMMANDS[name](sub)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "streamo", commands: Sequence[str] = tuple(COMMANDS)) -> int:
    parser = build_parser(prog, commands)
    args = parser.parse_args(argv)
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
