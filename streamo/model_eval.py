"""Running a stream model over evaluation data with the streaming engine.

``streamo eval --model`` plays every sample of a stream or raw file through a fresh
engine session (frames from ``streamo.video``, each question shown with the frame of
the turn the ground truth shows it in) and writes the per-second decisions as a predictions
file; the scoring is then exactly ``streamo eval --predictions`` on that file, so a run can
be re-scored later and other systems are scored by the same code. The model is an
``engine.model.StreamModel`` (on any backend); ``ovobench_model`` runs it on OVO-Bench.

Torch and transformers are imported on first use, so the command line stays fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .convert import prefixed_video_path
from .jsonfiles import iter_records
from .metrics.data import TruthSample, load_truth

if TYPE_CHECKING:
    from .engine.model import StreamModel


@dataclass
class EvalSample:
    truth: TruthSample
    video: str


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
