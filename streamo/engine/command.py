"""``streamo stream``: play a video through a stream model and print each second's decision.

Inputs are checked before the model is loaded, so a wrong path or question time fails in
a second with a one-line message. ``streamo.video.inputs`` opens ``--video``: a file (the
sampling rule training used, resized to the checkpoint's pixel budget), a directory of pictures
(one per turn, in name order), a stream URL, or a live stream piped to standard input (``-``).
This module imports no torch at import time: ``streamo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..argtypes import engine_arg, positive_float, positive_int, probability, seconds, system_prompt_file
from ..errors import UsageError
from ..protocol import MIN_WINDOW_TURNS, State, format_seconds, time_tag, turn_of, window_turns
from .backend import BACKENDS

if TYPE_CHECKING:
    from ..video.inputs import FrameInput


class StreamInputError(UsageError, ValueError):
    """Arguments or inputs ``streamo stream`` cannot use (exit status 2); an unreadable ``--video``
    is ``video.inputs.InputError``."""


def add_engine_options(parser: argparse.ArgumentParser, window: float | None = None) -> None:
    """The engine settings every command that runs a model takes (stream, serve, eval and ovobench --model);
    ``window`` is the default window (serve bounds every session)."""
    parser.add_argument("--window", type=positive_float, default=window,
                        help="keep at most this many seconds of turns in the cache"
                        + ("" if window is None else f" (default: {window:g})"))
    parser.add_argument("--eviction-block", type=positive_float,
                        help="seconds dropped at once when the window is full (default: a quarter of the window)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=128, help="longest answer in tokens (default: 128)")
    parser.add_argument("--response-threshold", type=probability,
                        help="answer only when P(Response) over the three states is at least this")
    parser.add_argument("--max-pixels", type=positive_int,
                        help="pixel budget per frame (default: the checkpoint's max_pixels, else $MAX_PIXELS, else 100352)")
    parser.add_argument("--max-context-tokens", type=positive_int, metavar="TOKENS",
                        help="tokens a session's context may hold; older turns are evicted to stay within it "
                        "(default: the checkpoint's max_position_embeddings, on vLLM its max_model_len)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--system-prompt-file", dest="system_prompt", type=system_prompt_file, metavar="FILE",
                        help="UTF-8 file with the system prompt the model was trained with (default: Streamo's built-in prompt)")
    described = [f"{name} ({backend.summary})" for name, backend in BACKENDS.items()]
    parser.add_argument("--backend", choices=list(BACKENDS), default="transformers",
                        help=f"what runs the model: {', '.join(described[:-1])} or {described[-1]} (default: transformers)")
    vllm = parser.add_argument_group("vLLM backend", "with --backend vllm (docs/serving.md#vllm)")
    vllm.add_argument("--tensor-parallel-size", type=positive_int, default=1, metavar="N", help="GPUs one model is split over (default: 1)")
    vllm.add_argument("--pipeline-parallel-size", type=positive_int, default=1, metavar="N",
                      help="pipeline stages, e.g. one per node (default: 1)")
    vllm.add_argument("--data-parallel-size", type=positive_int, default=1, metavar="N",
                      help="model replicas behind one engine (default: 1)")
    vllm.add_argument("--max-model-len", type=positive_int, metavar="TOKENS", help="longest context in tokens (default: the model's)")
    vllm.add_argument("--vllm-arg", action="append", type=engine_arg, default=[], metavar="KEY=VALUE",
                      help="any other vLLM engine argument (an AsyncEngineArgs field; VALUE as JSON when it parses), "
                      "e.g. gpu_memory_utilization=0.85 or kv_cache_memory_bytes=8589934592 (repeatable)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory (swift sft output or a saved Qwen2.5-VL)")
    parser.add_argument("--video", required=True,
                        help="video file, directory of frame pictures (one per turn, name order), a stream URL "
                        "(rtsp://, http://, ...), or - for a live stream on stdin")
    add_question_arguments(parser)
    parser.add_argument("--fps", type=positive_float, default=1.0, help="frames (turns) per second (default: 1.0)")
    add_engine_options(parser)
    parser.add_argument("--json", action="store_true", help='print JSON lines {"t", "state", "text", "latency_ms"}')
    parser.add_argument("--realtime", action="store_true", help="pace frames by the wall clock instead of as fast as possible")


def add_question_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``streamo stream`` and ``streamo client`` ask, and when (read by ``gather_questions``)."""
    parser.add_argument("--question", action="append", default=[], help="question text (repeatable)")
    parser.add_argument("--at", action="append", type=seconds, default=[],
                        help="second at which the matching --question is asked (repeatable; '5' shows it with <4s-5s>; default 0)")
    parser.add_argument("--questions", type=Path, help="raw annotation file whose questions to ask (placed as the converter places them)")
    parser.add_argument("--sample", type=int, default=0, help="record of --questions to use (default: 0)")


def check_window(window: float | None, fps: float) -> None:
    """``--window`` by the engine's own rule (``protocol.window_turns``), before anything loads."""
    try:
        window_turns(window, None, fps)
    except ValueError:
        raise StreamInputError(f"--window must hold at least {MIN_WINDOW_TURNS} frames at {fps:g} fps") from None


def gather_questions(args: argparse.Namespace, source: FrameInput) -> list[tuple[float, str]]:
    """(second, text) of every question, checked against the input's length."""
    if args.at and len(args.at) != len(args.question):
        raise StreamInputError(f"give one --at per --question ({len(args.question)} questions, {len(args.at)} times)")
    asked = list(zip(args.at or [0.0] * len(args.question), args.question))
    for number, (_, text) in enumerate(asked, start=1):
        if not text.strip():
            raise StreamInputError(f"--question {number} is empty")
    if args.questions is not None:
        asked += _annotation_questions(args.questions, args.sample, args.fps, source)
    if not asked:
        raise StreamInputError("nothing to ask: give --question (with --at) or --questions")
    if source.turns is not None:
        for moment, text in asked:
            if turn_of(moment, args.fps) >= source.turns:
                raise StreamInputError(
                    f"question {text!r} at {format_seconds(moment)} s is after the end of {source.name} "
                    f"({format_seconds(source.turns / args.fps)} s at {args.fps:g} fps)"
                )
    return [(moment, text.strip()) for moment, text in asked]


def _annotation_questions(path: Path, sample: int, fps: float, source: FrameInput) -> list[tuple[float, str]]:
    from ..convert import ConvertOptions, convert_sample
    from ..jsonfiles import iter_records
    from ..protocol import parse_stream_messages

    if not path.is_file():
        raise StreamInputError(f"{path}: no such file")
    if source.turns is None:
        raise StreamInputError("--questions needs an input of known length; with a live stream use --question/--at")
    records = list(iter_records(path))  # an InvalidRecord is a UsageError: one line naming the file
    if not 0 <= sample < len(records):
        raise StreamInputError(f"{path}: no record {sample} (the file holds {len(records)})")
    record = records[sample]
    if isinstance(record, dict):
        # The input's own length places the questions, not a duration written for another file.
        record = {key: value for key, value in record.items() if key != "duration"}
    outcome = convert_sample(record, ConvertOptions(fps=fps), probe=lambda _: source.turns / fps)
    if outcome.sample is None:
        problems = "; ".join(f"{p.field}: {p.message}" for p in outcome.problems if p.severity == "error")
        raise StreamInputError(f"{path}: record {sample}: {problems}")
    timeline = parse_stream_messages(outcome.sample["messages"])
    return [(turn.end, question) for turn in timeline.turns for question in turn.questions]


def format_line(event, fps: float) -> str:
    """One second as ``streamo stream`` prints it: time tag, state, answer."""
    line = f"{time_tag(event.turn, fps):<11}  {event.state.value:<8}"  # columns line up up to <999s-1000s>
    return f"{line}  {event.text}" if event.text else line.rstrip()


def run_stream(args: argparse.Namespace) -> int:
    from .model import StreamModel, engine_settings
    from ..video import MIN_PIXELS
    from ..video.inputs import open_input
    from .loading import training_max_pixels

    check_window(args.window, args.fps)
    if args.eviction_block is not None and args.window is None:
        raise StreamInputError("--eviction-block needs --window")
    max_pixels = args.max_pixels or training_max_pixels(args.model)
    source = open_input(args.video, args.fps, max_pixels, MIN_PIXELS)
    questions = gather_questions(args, source)
    model = StreamModel(args.model, engine_settings(args), args.device)  # a ModelLoadError is a UsageError
    try:
        return _play(args, model, source, questions)
    finally:
        model.close()


def _play(args: argparse.Namespace, model, source: FrameInput, questions: list[tuple[float, str]]) -> int:
    try:
        session = model.session()
    except ValueError as exc:
        raise StreamInputError(str(exc)) from None
    from .context import ContextBudgetError

    for moment, text in questions:
        try:
            session.ask(text, moment)
        except ContextBudgetError as exc:
            raise StreamInputError(f"question at {moment:g} s: {exc} (--max-context-tokens)") from None

    latencies, responses = [], 0
    started = time.monotonic()
    for turn, image in source.frames:
        if args.realtime:
            time.sleep(max(0.0, started + turn / args.fps - time.monotonic()))
        try:
            event = session.push_frame(image, turn / args.fps)
        except ContextBudgetError as exc:
            raise StreamInputError(f"{source.name}: turn {turn}: {exc} (--max-context-tokens)") from None
        latencies.append(event.latency_ms)
        responses += event.state is State.RESPONSE
        print(json.dumps(event.as_record(), ensure_ascii=False) if args.json else format_line(event, args.fps), flush=True)
    for turn, text in session.waiting_questions:
        print(f"warning: the stream ended before turn {turn}; question {text!r} was never shown", file=sys.stderr)
    if latencies:
        from ..metrics.scoring import latency_stats

        mean, p95, peak = latency_stats(latencies)
        print(
            f"{source.name}: {len(latencies)} frames, {responses} responses; latency ms mean "
            f"{mean:.1f}, p95 {p95:.1f}, max {peak:.1f}; cache {session.cache_length} tokens",
            file=sys.stderr,
        )
    return 0
