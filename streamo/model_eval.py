"""Running a stream model over evaluation data with the streaming engine.

``streamo eval --model`` plays every sample of a stream or raw file through a fresh
``StreamingSession`` (frames from ``streamo.video``, each question shown with the frame of
the turn the ground truth shows it in) and writes the per-second decisions as a predictions
file; the scoring is then exactly ``streamo eval --predictions`` on that file, so a run can
be re-scored later and other systems are scored by the same code. ``streamo ovobench`` plugs
the same engine into ``streamo.ovobench``: forward-active tasks stream and let the model
decide when to answer, multiple-choice tasks make it answer at the probe time.

Torch and transformers are imported on first use, so the command line stays fast.
"""

from __future__ import annotations

import argparse
import copy
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from .convert import prefixed_video_path
from .engine.command import BACKENDS
from .jsonfiles import iter_records
from .metrics.data import TruthSample, load_truth
from .protocol import DEFAULT_SYSTEM_PROMPT, State, turn_count, turn_of

FORCE_RESPONSE_BIAS = 1e4
"""Added to the Response logit on a multiple-choice probe's frame: the model must answer there."""


@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs; one fresh session per sample or stream."""

    fps: float = 1.0
    window: float | None = None
    eviction_block: float | None = None
    response_threshold: float | None = None
    max_new_tokens: int = 128
    max_pixels: int | None = None
    """None: the checkpoint's training budget (``training_max_pixels``)."""
    max_context_tokens: int | None = None
    """Tokens a session's context may hold; None: the checkpoint's ``max_position_embeddings``
    (on vLLM, its ``max_model_len``)."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    backend: str = "transformers"
    """What runs the model: ``transformers`` (the KV-cache engine) or ``vllm``."""
    vllm: Mapping[str, Any] = field(default_factory=dict)
    """``VllmOptions`` fields for the vllm backend."""


@dataclass
class EvalSample:
    truth: TruthSample
    video: str


class StreamModel:
    """A loaded checkpoint and the settings to open sessions on it, on either backend."""

    def __init__(self, path: str | os.PathLike[str], settings: EngineSettings, device: str | None = None) -> None:
        from .engine.loading import ModelLoadError, load_stream_model, load_stream_processor, training_max_pixels

        if settings.backend not in BACKENDS:
            raise ModelLoadError(f"unknown backend {settings.backend!r} (choose from {', '.join(BACKENDS)})")
        self.settings = settings
        self.max_pixels = settings.max_pixels or training_max_pixels(path)
        self.model = self.engine = None
        if settings.backend == "transformers":
            self.model, self.processor = load_stream_model(path, device)
            config = self.model.config
            self.position_limit = getattr(getattr(config, "text_config", config), "max_position_embeddings", None)
            return
        from .engine.vllm_backend import VllmOptions, start_engine
        from .video import MIN_PIXELS

        if device is not None:
            raise ModelLoadError("--device is the transformers backend's; vLLM places the model on its platform's "
                                 "devices (CUDA_VISIBLE_DEVICES chooses GPUs)")
        self.processor = load_stream_processor(path)
        self.engine = start_engine(path, self.processor.tokenizer, self.max_pixels, MIN_PIXELS,
                                   VllmOptions(**settings.vllm), settings.window, settings.fps)
        self.position_limit = self.engine.max_model_len - 1  # the prompt and the one token decided after it

    @property
    def max_context_tokens(self) -> int | None:
        """The token budget of every session (``EngineSettings.max_context_tokens``, capped by the model's limit)."""
        given = self.settings.max_context_tokens
        limits = [limit for limit in (given, self.position_limit) if limit]
        return min(limits) if limits else None

    @property
    def backend(self) -> str:
        return "transformers" if self.engine is None else "vllm"

    def with_settings(self, settings: EngineSettings) -> "StreamModel":
        """The same loaded weights with other engine settings (no second copy of the model)."""
        other = copy.copy(self)
        other.settings = settings
        other.max_pixels = settings.max_pixels or self.max_pixels
        return other

    def session(self, bias: dict[State, float] | None = None):
        from .engine.decoding import DecisionRule

        settings = self.settings
        options = dict(
            fps=settings.fps, system_prompt=settings.system_prompt, window=settings.window,
            eviction_block=settings.eviction_block,
            decision=DecisionRule(bias=bias or {}, response_threshold=settings.response_threshold),
            max_new_tokens=settings.max_new_tokens, max_pixels=self.max_pixels,
            max_context_tokens=self.max_context_tokens,
        )
        if self.engine is not None:
            from .engine.vllm_backend import VllmSession

            return VllmSession(self.engine, **options)
        from .engine.session import StreamingSession

        return StreamingSession(self.model, self.processor, **options)

    def close(self) -> None:
        """Stop the vLLM engine (its processes); nothing to do for transformers."""
        if self.engine is not None:
            self.engine.close()

    def frames(self, video: str, turns: int) -> Iterator[tuple[int, Any]]:
        """(turn, image) of the first ``turns`` turns of ``video``; raises VideoError when unreadable."""
        from .video import MIN_PIXELS, iter_frames

        for sampled in iter_frames(video, self.settings.fps, self.max_pixels, MIN_PIXELS, turns=turns):
            yield sampled.turn, sampled.image


def load_eval_samples(
    path: str | os.PathLike[str], fps: float = 1.0, video_prefix: str | None = None
) -> tuple[list[EvalSample], list[str]]:
    """Ground truth of a stream or raw file with each sample's video; problems of unusable records."""
    truths, problems = load_truth(path, fps=fps, video_prefix=video_prefix)
    records = list(iter_records(path))
    samples = []
    for truth in truths:
        record = records[truth.index]
        if "messages" in record:
            videos = record.get("videos")
            video = videos[0] if isinstance(videos, list) and videos and isinstance(videos[0], str) else None
            field_name = "videos"
        else:
            video = record.get("video_path")
            video = prefixed_video_path(video, video_prefix) if isinstance(video, str) and video else None
            field_name = "video_path"
        if video is None:
            problems.append(f"{path}: sample {truth.index}: {field_name}: no video to play")
            continue
        samples.append(EvalSample(truth, video))
    return samples, problems


def predict_sample(model: StreamModel, sample: EvalSample) -> list[dict[str, Any]]:
    """The engine's per-turn decisions on one sample, as predictions records.

    Questions are asked at the end of the turn the ground truth shows them in (so turn k
    shows them, as in training); the video gives as many turns as the ground truth has.
    """
    from .video import VideoError

    timeline = sample.truth.timeline
    session = model.session()
    for turn in timeline.turns:
        for question in turn.questions:
            session.ask(question, turn.end)
    records = []
    try:
        for turn, image in model.frames(sample.video, len(timeline.turns)):
            event = session.push_frame(image, turn / model.settings.fps)
            records.append({"sample": sample.truth.key, **event.as_record()})
    except VideoError as exc:
        raise ValueError(f"{sample.video}: {exc}") from None
    if len(records) < len(timeline.turns):
        raise ValueError(f"{sample.video}: gave {len(records)} frames, the ground truth has {len(timeline.turns)} turns")
    return records


def predict_samples(
    model: StreamModel, samples: list[EvalSample], write: Callable[[dict[str, Any]], None], progress: bool = False
) -> list[str]:
    """Write every sample's predictions through ``write``; returns the problems of samples that failed."""
    from tqdm import tqdm

    problems = []
    for sample in tqdm(samples, desc="eval", unit="sample", disable=not progress):
        try:
            records = predict_sample(model, sample)
        except ValueError as exc:
            problems.append(f"sample {sample.truth.key!r}: not run: {exc}")
            continue
        for record in records:
            write(record)
    return problems


# ------------------------------------------------------------------ OVO-Bench


def _video_turns(video: str, fps: float) -> int:
    from .video import probe_duration

    return turn_count(probe_duration(video), fps)


def ovobench_stream(model: StreamModel) -> Callable:
    """``stream(request)`` for ``streamo.ovobench.run_streaming``: one session per request."""
    from .ovobench import DecidedTurn

    fps = model.settings.fps

    def stream(request) -> list:
        turns = min(_video_turns(request.video, fps), turn_of(request.until, fps) + 1)
        if turn_of(request.ask_time, fps) >= turns:
            raise ValueError(f"{request.video}: question at {request.ask_time:g} s is after the video's end")
        session = model.session()
        session.ask(request.question, request.ask_time)
        events = []
        for turn, image in model.frames(request.video, turns):
            event = session.push_frame(image, turn / fps)
            events.append(DecidedTurn(event.t, event.state, event.text))
        return events

    return stream


def ovobench_answer(model: StreamModel) -> Callable:
    """``answer(probe)`` for ``streamo.ovobench.run_offline``: play the video up to the probe
    time, show the question with the last frame, and make the engine answer on that frame."""
    fps = model.settings.fps

    def answer(probe) -> str:
        last = turn_of(probe.time, fps)
        turns = _video_turns(probe.video, fps)
        if last >= turns:
            raise ValueError(f"{probe.video}: probe at {probe.time:g} s is after the video's end")
        from .engine.decoding import DecisionRule

        session, event = model.session(), None
        session.ask(probe.prompt, probe.time)
        for turn, image in model.frames(probe.video, last + 1):
            if turn == last:
                session.decision = DecisionRule(bias={State.RESPONSE: FORCE_RESPONSE_BIAS})
            event = session.push_frame(image, turn / fps)
        return event.text if event is not None else ""

    return answer


def engine_settings(args: argparse.Namespace) -> EngineSettings:
    return EngineSettings(
        fps=args.fps, window=args.window, eviction_block=args.eviction_block,
        response_threshold=args.response_threshold, max_new_tokens=args.max_new_tokens, max_pixels=args.max_pixels,
        max_context_tokens=args.max_context_tokens, system_prompt=args.system_prompt or DEFAULT_SYSTEM_PROMPT, backend=args.backend, vllm=vllm_options(args),
    )


def vllm_options(args: argparse.Namespace) -> dict[str, Any]:
    """The vLLM flags of ``add_engine_options`` as ``VllmOptions`` fields."""
    return {
        "tensor_parallel_size": args.tensor_parallel_size, "pipeline_parallel_size": args.pipeline_parallel_size,
        "data_parallel_size": args.data_parallel_size, "max_model_len": args.max_model_len,
        "engine_args": dict(args.vllm_arg),
    }


def ovobench_run(items: list, model: StreamModel, progress: bool = False) -> tuple[list, list]:
    """Forward-active items stream (the model decides when to answer); multiple-choice items
    are answered at their probe time. Returns (probe results, forward stream runs)."""
    from tqdm import tqdm

    from .ovobench import FORWARD_TASKS, run_offline, run_streaming

    forward = [item for item in items if item.task in FORWARD_TASKS]
    choice = [item for item in items if item.task not in FORWARD_TASKS]
    results, runs = run_streaming(tqdm(forward, desc="forward", unit="item", disable=not progress), ovobench_stream(model))
    results += run_offline(tqdm(choice, desc="multiple choice", unit="item", disable=not progress), ovobench_answer(model))
    return results, runs


def ovobench_replies(path: str | os.PathLike[str], items: list) -> tuple[list, list[str]]:
    """Probe results from a replies file (JSON lines ``{"id", "index", "reply"}``, as
    ``streamo ovobench --predictions-out`` writes them); a probe without a reply is wrong."""
    from .ovobench import ProbeResult

    replies: dict[tuple[str, int], Any] = {}
    problems = []
    for number, record in enumerate(iter_records(path), start=1):
        index = record.get("index", 0) if isinstance(record, dict) else None
        reply = record.get("reply") if isinstance(record, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or not (reply is None or isinstance(reply, str)):
            problems.append(f"{path}: record {number}: expected {{id, index, reply}} with a text or null reply")
            continue
        key = (str(record.get("id")), index)
        if key in replies:
            problems.append(f"{path}: record {number}: second reply for item {key[0]} probe {index}; kept the first")
            continue
        replies[key] = reply
    results, unanswered = [], 0
    for item in items:
        for probe in item.probes:
            key = (str(probe.item_id), probe.index)
            unanswered += key not in replies
            results.append(ProbeResult(probe, replies.get(key), None if key in replies else "no reply in the predictions"))
    if unanswered:
        problems.append(f"{path}: {unanswered} probes have no reply and count as wrong")
    return results, problems
