"""Scoring predicted per-second timelines against ground-truth timelines.

Three views of one stream:

* states: every turn's predicted state against the true one; accuracy and macro-F1 over
  Silence, Standby and Response (accuracy alone rewards a model that never speaks, because
  Silence dominates the data);
* timing: predicted Response turns matched one-to-one to true Response turns when they lie
  within ``tolerance`` seconds; precision, recall, F1, the delay of matched answers, and why
  the others failed (a true answer missed; a predicted one early, late or spurious);
* answers: ROUGE-L and exact match of each matched answer against the true one.

Everything works on ``streamo.protocol.Timeline`` objects, so a streaming engine can hand its
decisions straight to ``score_sample``/``score_timelines`` without writing a file. A turn whose
prediction is missing (state None) counts as Silence and is reported as uncovered.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from ..errors import UsageError
from ..protocol import State, Timeline
from .text import exact_match, rouge_l


class ToleranceError(UsageError, ValueError):
    """A timing tolerance that is not a finite number of seconds >= 0."""


STATES: tuple[State, ...] = (State.SILENCE, State.STANDBY, State.RESPONSE)
DEFAULT_TOLERANCE = 1.0


@dataclass(frozen=True)
class Match:
    """A true Response turn and the predicted one matched to it."""

    truth_turn: int
    predicted_turn: int
    delay: float
    """Predicted time minus true time in seconds: positive is late."""
    rouge_l: float
    exact: bool


@dataclass
class TimingCounts:
    truth: int = 0
    predicted: int = 0
    matched: int = 0
    missed: int = 0
    early: int = 0
    late: int = 0
    spurious: int = 0
    abs_delay_sum: float = 0.0
    delay_sum: float = 0.0
    rouge_l_sum: float = 0.0
    exact: int = 0

    def add(self, other: "TimingCounts") -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, Any]:
        precision = self.matched / self.predicted if self.predicted else None
        recall = self.matched / self.truth if self.truth else None
        total = self.predicted + self.truth
        return {
            "precision": precision,
            "recall": recall,
            "f1": 2 * self.matched / total if total else None,
            "truth": self.truth,
            "predicted": self.predicted,
            "matched": self.matched,
            "missed": self.missed,
            "early": self.early,
            "late": self.late,
            "spurious": self.spurious,
            "mean_abs_delay_s": self.abs_delay_sum / self.matched if self.matched else None,
            "mean_delay_s": self.delay_sum / self.matched if self.matched else None,
        }

    def answers(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "rouge_l": self.rouge_l_sum / self.matched if self.matched else None,
            "exact": self.exact / self.matched if self.matched else None,
        }


@dataclass
class SampleScore:
    sample: Any
    turns: int
    confusion: list[list[int]]
    """confusion[true][predicted] in ``STATES`` order."""
    timing: TimingCounts
    matches: list[Match]
    unmatched_predictions: dict[int, str]
    """Predicted Response turn -> "early", "late" or "spurious"."""
    missed_truth: list[int]
    uncovered_turns: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        states = state_metrics(self.confusion)
        return {
            "sample": self.sample,
            "turns": self.turns,
            "uncovered_turns": self.uncovered_turns,
            "state_accuracy": states["accuracy"],
            "macro_f1": states["macro_f1"],
            "timing": self.timing.as_dict(),
            "answers": self.timing.answers(),
            "matches": [asdict(match) for match in self.matches],
            "unmatched_predictions": {str(turn): why for turn, why in sorted(self.unmatched_predictions.items())},
            "missed_truth": self.missed_truth,
        }


def confusion_matrix(truth: Sequence[State | None], predicted: Sequence[State | None]) -> list[list[int]]:
    """Counts of (true, predicted) state pairs; a missing prediction counts as Silence."""
    index = {state: position for position, state in enumerate(STATES)}
    matrix = [[0] * len(STATES) for _ in STATES]
    for true_state, predicted_state in zip(truth, predicted, strict=True):
        if true_state is None:
            raise ValueError("ground truth has a turn without a state")
        matrix[index[true_state]][index[predicted_state or State.SILENCE]] += 1
    return matrix


def state_metrics(confusion: list[list[int]]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and their macro-F1.

    A class that is absent from both truth and prediction has no F1 and is left out of the
    macro mean (it would otherwise reward or punish a model for something that never came up).
    """
    total = sum(map(sum, confusion))
    correct = sum(confusion[i][i] for i in range(len(STATES)))
    per_class: dict[str, dict[str, Any]] = {}
    f1_values = []
    for i, state in enumerate(STATES):
        support = sum(confusion[i])
        predicted = sum(row[i] for row in confusion)
        hits = confusion[i][i]
        f1 = 2 * hits / (support + predicted) if support + predicted else None
        per_class[state.value] = {
            "precision": hits / predicted if predicted else None,
            "recall": hits / support if support else None,
            "f1": f1,
            "support": support,
            "predicted": predicted,
        }
        if f1 is not None:
            f1_values.append(f1)
    return {
        "accuracy": correct / total if total else None,
        "macro_f1": sum(f1_values) / len(f1_values) if f1_values else None,
        "per_class": per_class,
        "confusion": {
            true_state.value: {pred_state.value: confusion[i][j] for j, pred_state in enumerate(STATES)}
            for i, true_state in enumerate(STATES)
        },
    }


def match_responses(truth_times: Sequence[float], predicted_times: Sequence[float], tolerance: float) -> list[tuple[int, int]]:
    """One-to-one matching of sorted true and predicted answer times within ``tolerance``.

    Maximises the number of matches, then minimises the total absolute delay. On a line an
    optimal matching never crosses, so a dynamic programme over both sorted lists is exact.
    Returns (truth index, predicted index) pairs.
    """
    n, m = len(truth_times), len(predicted_times)
    # best[i][j] = (matches, -total delay) using the first i true and first j predicted times
    best = [[(0, 0.0)] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            candidate = max(best[i - 1][j], best[i][j - 1])
            gap = abs(predicted_times[j - 1] - truth_times[i - 1])
            if gap <= tolerance + 1e-9:
                matched, cost = best[i - 1][j - 1]
                candidate = max(candidate, (matched + 1, cost - gap))
            best[i][j] = candidate
    pairs = []
    i, j = n, m
    while i > 0 and j > 0:
        if best[i][j] == best[i - 1][j]:
            i -= 1
        elif best[i][j] == best[i][j - 1]:
            j -= 1
        else:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
    return pairs[::-1]


def _unmatched_reason(time: float, truth_times: Sequence[float]) -> str:
    """Early or late relative to the nearest true answer (ties go to the later one)."""
    if not truth_times:
        return "spurious"
    nearest = min(truth_times, key=lambda t: (abs(t - time), -t))
    return "early" if nearest > time else "late"


def score_sample(
    truth: Timeline,
    prediction: Timeline,
    tolerance: float = DEFAULT_TOLERANCE,
    sample: Any = None,
    latencies_ms: Sequence[float] = (),
) -> SampleScore:
    """Score one predicted timeline against the truth; both must have the same turns.

    Times of answers are the start times of their turns (the frame the decision was made on).
    """
    if len(prediction.turns) != len(truth.turns):
        raise ValueError(f"prediction has {len(prediction.turns)} turns, truth has {len(truth.turns)}")
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ToleranceError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    truth_states, predicted_states = truth.states(), prediction.states()
    confusion = confusion_matrix(truth_states, predicted_states)
    true_answers, predicted_answers = truth.responses(), prediction.responses()
    truth_times = [turn.start for turn in true_answers]
    predicted_times = [turn.start for turn in predicted_answers]
    pairs = match_responses(truth_times, predicted_times, tolerance)

    timing = TimingCounts(truth=len(true_answers), predicted=len(predicted_answers), matched=len(pairs))
    matches = []
    for i, j in pairs:
        true_turn, predicted_turn = true_answers[i], predicted_answers[j]
        delay = predicted_turn.start - true_turn.start
        quality = rouge_l(predicted_turn.answer, true_turn.answer).f1
        exact = exact_match(predicted_turn.answer, true_turn.answer)
        matches.append(Match(true_turn.index, predicted_turn.index, delay, quality, exact))
        timing.abs_delay_sum += abs(delay)
        timing.delay_sum += delay
        timing.rouge_l_sum += quality
        timing.exact += exact
    matched_truth = {i for i, _ in pairs}
    matched_predicted = {j for _, j in pairs}
    missed = [true_answers[i].index for i in range(len(true_answers)) if i not in matched_truth]
    timing.missed = len(missed)
    unmatched: dict[int, str] = {}
    for j, turn in enumerate(predicted_answers):
        if j not in matched_predicted:
            reason = _unmatched_reason(turn.start, truth_times)
            unmatched[turn.index] = reason
            setattr(timing, reason, getattr(timing, reason) + 1)
    return SampleScore(
        sample=sample,
        turns=len(truth.turns),
        confusion=confusion,
        timing=timing,
        matches=matches,
        unmatched_predictions=unmatched,
        missed_truth=missed,
        uncovered_turns=sum(state is None for state in predicted_states),
        latencies_ms=list(latencies_ms),
    )


def percentile(values: Iterable[float], fraction: float) -> float:
    """The nearest-rank percentile of a non-empty collection: the smallest value that at least
    ``fraction`` of the values do not exceed (``fraction`` 0.95: the p95 every report prints)."""
    ordered = sorted(values)
    position = min(int(math.ceil(fraction * len(ordered))) - 1, len(ordered) - 1)
    return ordered[max(position, 0)]


def latency_stats(latencies: Iterable[float]) -> tuple[float, float, float]:
    """Mean, p95 (``percentile``) and maximum of a non-empty collection: the latency figures of
    ``streamo eval``'s report, ``streamo stream``'s and ``streamo client``'s summary and ``closed``."""
    ordered = sorted(latencies)
    return sum(ordered) / len(ordered), percentile(ordered, 0.95), ordered[-1]


def aggregate(scores: Iterable[SampleScore], tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Pool the counts of all samples (turns and answers weigh equally, not samples)."""
    scores = list(scores)
    confusion = [[0] * len(STATES) for _ in STATES]
    timing = TimingCounts()
    latencies: list[float] = []
    for score in scores:
        for i in range(len(STATES)):
            for j in range(len(STATES)):
                confusion[i][j] += score.confusion[i][j]
        timing.add(score.timing)
        latencies.extend(score.latencies_ms)
    states = state_metrics(confusion)
    timing_dict = timing.as_dict()
    answers = timing.answers()
    summary = {
        "samples": len(scores),
        "turns": sum(score.turns for score in scores),
        "uncovered_turns": sum(score.uncovered_turns for score in scores),
        "tolerance_s": tolerance,
        "state_accuracy": states["accuracy"],
        "macro_f1": states["macro_f1"],
        "timing_precision": timing_dict["precision"],
        "timing_recall": timing_dict["recall"],
        "timing_f1": timing_dict["f1"],
        "mean_abs_delay_s": timing_dict["mean_abs_delay_s"],
        "early": timing.early,
        "late": timing.late,
        "missed": timing.missed,
        "spurious": timing.spurious,
        "answer_rouge_l": answers["rouge_l"],
        "answer_exact": answers["exact"],
    }
    report: dict[str, Any] = {"summary": summary, "states": states, "timing": timing_dict, "answers": answers}
    if latencies:
        mean, p95, peak = latency_stats(latencies)
        report["latency_ms"] = {"count": len(latencies), "mean": mean, "p95": p95, "max": peak}
    return report


@dataclass
class ScoringItem:
    """One stream to score: its id, the true and the predicted timeline, optional latencies."""

    sample: Any
    truth: Timeline
    prediction: Timeline
    latencies_ms: Sequence[float] = ()


def score_timelines(
    items: Iterable[ScoringItem], tolerance: float = DEFAULT_TOLERANCE
) -> tuple[dict[str, Any], list[SampleScore]]:
    """Score many streams: the pooled report and the per-sample scores."""
    scores = [score_sample(item.truth, item.prediction, tolerance, item.sample, item.latencies_ms) for item in items]
    return aggregate(scores, tolerance), scores
