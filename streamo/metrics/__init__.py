"""Timing-aware evaluation of streaming assistants: per-second states, answer timing, answer text.

``score_sample``/``score_timelines`` take ``streamo.protocol.Timeline`` objects (a model run
can score its output directly); ``evaluate_files`` scores a predictions JSONL file against a
stream or raw data file; ``write_plots`` draws truth against prediction.
"""

from .data import PredictedStream, PredictionRecord, TruthSample, load_truth, predicted_timeline
from .evaluate import Evaluation, evaluate_files, evaluate_items
from .scoring import (
    DEFAULT_TOLERANCE,
    STATES,
    Match,
    SampleScore,
    ScoringItem,
    aggregate,
    confusion_matrix,
    latency_stats,
    match_responses,
    percentile,
    score_sample,
    score_timelines,
    state_metrics,
)
from .text import exact_match, rouge_l

__all__ = [
    "DEFAULT_TOLERANCE",
    "STATES",
    "Evaluation",
    "Match",
    "PredictedStream",
    "PredictionRecord",
    "SampleScore",
    "ScoringItem",
    "TruthSample",
    "aggregate",
    "confusion_matrix",
    "evaluate_files",
    "evaluate_items",
    "exact_match",
    "latency_stats",
    "load_truth",
    "match_responses",
    "percentile",
    "predicted_timeline",
    "rouge_l",
    "score_sample",
    "score_timelines",
    "state_metrics",
]
