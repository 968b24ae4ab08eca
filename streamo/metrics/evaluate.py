"""Scoring a predictions file against a data file: the driver behind ``streamo eval``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .data import TruthSample, group_predictions, load_truth, predicted_timeline
from .scoring import DEFAULT_TOLERANCE, SampleScore, ScoringItem, score_timelines


@dataclass
class Evaluation:
    report: dict[str, Any]
    items: list[ScoringItem]
    scores: list[SampleScore]
    problems: list[str] = field(default_factory=list)


def evaluate_items(
    items: list[ScoringItem], tolerance: float = DEFAULT_TOLERANCE, problems: list[str] | None = None,
    unpredicted: list[Any] | None = None,
) -> Evaluation:
    """Score ready-made timelines (a model run hands its output here) and build the report."""
    report, scores = score_timelines(items, tolerance)
    problems = list(problems or [])
    report["samples_without_predictions"] = list(unpredicted or [])
    report["problems"] = problems
    report["per_sample"] = [score.as_dict() for score in scores]
    return Evaluation(report, items, scores, problems)


def evaluate_files(
    predictions: str | os.PathLike[str],
    data: str | os.PathLike[str],
    tolerance: float = DEFAULT_TOLERANCE,
    fps: float = 1.0,
    video_prefix: str | None = None,
) -> Evaluation:
    """Score a predictions JSONL file against a stream or raw data file.

    Samples of the data without any prediction are listed, not scored: scoring a subset is
    allowed, but never silently.
    """
    truths, problems = load_truth(data, fps=fps, video_prefix=video_prefix)
    grouped, prediction_problems = group_predictions(predictions, truths)
    problems.extend(prediction_problems)
    items: list[ScoringItem] = []
    unpredicted: list[Any] = []
    for position, truth in enumerate(truths):
        records = grouped.get(position)
        if not records:
            unpredicted.append(truth.key)
            continue
        stream, laying_problems = predicted_timeline(records, truth.timeline)
        problems.extend(f"{predictions}: sample {truth.key!r}: {problem}" for problem in laying_problems)
        items.append(ScoringItem(truth.key, truth.timeline, stream.timeline, stream.latencies_ms))
    return evaluate_items(items, tolerance, problems, unpredicted)


__all__ = ["Evaluation", "TruthSample", "evaluate_files", "evaluate_items"]
