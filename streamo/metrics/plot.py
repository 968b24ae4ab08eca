"""Timeline plots: ground truth above, prediction below, states as coloured bands.

Answers are triangles with their text; matched answers are joined by a line; a missed true
answer is ringed in red and an unmatched prediction is a red cross labelled early, late or
spurious, so a reader sees at a glance where the model is early, late or silent.
Uses matplotlib's Agg canvas directly, so no display and no global backend switch is needed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..errors import UsageError
from ..protocol import State, Timeline
from .scoring import SampleScore, ScoringItem, state_metrics

COLOURS = {State.SILENCE: "#d9d9d9", State.STANDBY: "#f5b942", State.RESPONSE: "#2ca25f", None: "#ffffff"}
MISS_COLOUR = "#d62728"
MAX_STACKED = 40
"""More samples than this go one file per sample into a directory."""
_TRUTH_Y, _PRED_Y, _BAND = 1.0, 0.0, 0.5


def _runs(timeline: Timeline) -> list[tuple[State | None, float, float]]:
    runs: list[tuple[State | None, float, float]] = []
    for turn in timeline.turns:
        if runs and runs[-1][0] == turn.state and abs(runs[-1][2] - turn.start) < 1e-9:
            runs[-1] = (turn.state, runs[-1][1], turn.end)
        else:
            runs.append((turn.state, turn.start, turn.end))
    return runs


def _short(text: str, limit: int = 38) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _draw(ax, item: ScoringItem, score: SampleScore) -> None:
    for timeline, y in ((item.truth, _TRUTH_Y), (item.prediction, _PRED_Y)):
        for state, start, end in _runs(timeline):
            ax.broken_barh([(start, end - start)], (y - _BAND / 2, _BAND), facecolors=COLOURS[state], edgecolors="none")
    half = 0.5 / item.truth.fps
    truth_turns, predicted_turns = item.truth.turns, item.prediction.turns
    for match in score.matches:
        x_true, x_pred = truth_turns[match.truth_turn].start + half, predicted_turns[match.predicted_turn].start + half
        ax.plot([x_true, x_pred], [_TRUTH_Y - _BAND / 2, _PRED_Y + _BAND / 2], color="#555555", lw=0.8)
    for turn in item.truth.responses():
        x = turn.start + half
        ax.plot(x, _TRUTH_Y + _BAND / 2 + 0.08, marker="v", color="#1b7a43", ms=6)
        ax.text(x, _TRUTH_Y + _BAND / 2 + 0.2, _short(turn.answer), rotation=18, fontsize=6, ha="left", va="bottom")
    for turn in item.prediction.responses():
        x = turn.start + half
        ax.plot(x, _PRED_Y - _BAND / 2 - 0.08, marker="^", color="#1b7a43", ms=6)
        ax.text(x, _PRED_Y - _BAND / 2 - 0.2, _short(turn.answer), rotation=-18, fontsize=6, ha="left", va="top")
    for turn_index in score.missed_truth:
        ax.plot(truth_turns[turn_index].start + half, _TRUTH_Y, marker="o", mfc="none", mec=MISS_COLOUR, ms=11, mew=1.5)
    for turn_index, reason in score.unmatched_predictions.items():
        x = predicted_turns[turn_index].start + half
        ax.plot(x, _PRED_Y, marker="x", color=MISS_COLOUR, ms=9, mew=2)
        ax.text(x, _PRED_Y + _BAND / 2 + 0.03, reason, color=MISS_COLOUR, fontsize=6, ha="center", va="bottom")
    for turn in item.truth.turns:
        if turn.questions:
            ax.axvline(turn.start, color="#3a6fb0", lw=0.8, ls=":")
            ax.text(turn.start, _TRUTH_Y + _BAND / 2 + 0.1, "?", color="#3a6fb0", fontsize=8, ha="center")
    states = state_metrics(score.confusion)
    timing = score.timing.as_dict()

    def fmt(value):
        return "n/a" if value is None else f"{value:.2f}"

    ax.set_title(
        f"sample {item.sample}: timing F1 {fmt(timing['f1'])}, macro-F1 {fmt(states['macro_f1'])}, "
        f"accuracy {fmt(states['accuracy'])}; missed {timing['missed']}, early {timing['early']}, late {timing['late']}",
        fontsize=8,
        loc="left",
    )
    ax.set_yticks([_PRED_Y, _TRUTH_Y], ["prediction", "truth"], fontsize=8)
    ax.set_ylim(-2.1, 3.1)
    ax.set_xlim(0, max(item.truth.duration, 1e-3))
    ax.set_xlabel("seconds", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def _figure(items: Sequence[ScoringItem], scores: Sequence[SampleScore]) -> Figure:
    longest = max((item.truth.duration for item in items), default=1.0)
    width = min(max(7.0, longest * 0.22), 28.0)
    figure = Figure(figsize=(width, 3.2 * len(items) + 0.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(items), 1, squeeze=False)[:, 0]
    for ax, item, score in zip(axes, items, scores):
        _draw(ax, item, score)
    legend = [Patch(color=COLOURS[state], label=state.value) for state in State]
    figure.legend(handles=legend, loc="upper right", ncol=3, fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    return figure


def _file_name(sample) -> str:
    return "sample_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", str(sample)) + ".png"


class PlotTargetError(UsageError, ValueError):
    """A picture target that cannot hold what is asked (too many samples for one file)."""


def write_plots(target: str | os.PathLike[str], items: Sequence[ScoringItem], scores: Sequence[SampleScore]) -> list[Path]:
    """``*.png``: all samples stacked in one picture; otherwise a directory, one picture per sample.

    Files are written to a temporary name and renamed. Raises PlotTargetError when a single
    picture would hold more than ``MAX_STACKED`` samples.
    """
    target = Path(target)
    if target.suffix.lower() == ".png":
        if len(items) > MAX_STACKED:
            raise PlotTargetError(f"{len(items)} samples do not fit one picture (at most {MAX_STACKED}): give a directory")
        jobs = [(target, list(items), list(scores))]
    else:
        jobs = [(target / _file_name(item.sample), [item], [score]) for item, score in zip(items, scores)]
    written = []
    for path, group_items, group_scores in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        _figure(group_items, group_scores).savefig(temporary, dpi=110, format="png")
        os.replace(temporary, path)
        written.append(path)
    return written
