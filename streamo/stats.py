"""Statistics of a stream-format file: what a dataset teaches, before training on it.

The state distribution matters most: Silence dominates real data, which is why the loss
re-weights the state tokens.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .jsonfiles import InvalidRecord, iter_records, parse_record
from .protocol import ConversationError, State, parse_stream_messages

DURATION_BINS: tuple[tuple[str, float], ...] = (
    ("<30s", 30),
    ("30s-1m", 60),
    ("1-2m", 120),
    ("2-5m", 300),
    ("5-10m", 600),
    (">=10m", float("inf")),
)


@dataclass
class StreamStats:
    samples: int = 0
    invalid: int = 0
    turns: int = 0
    states: Counter = field(default_factory=Counter)
    responses_per_sample: Counter = field(default_factory=Counter)
    durations: Counter = field(default_factory=Counter)
    task_types: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        total_states = sum(self.states.values()) or 1
        return {
            "samples": self.samples,
            "invalid_samples": self.invalid,
            "turns": self.turns,
            "mean_turns": round(self.turns / self.samples, 2) if self.samples else 0.0,
            "states": {state.value: self.states[state] for state in State},
            "state_share": {state.value: round(self.states[state] / total_states, 4) for state in State},
            "responses_per_sample": dict(sorted(self.responses_per_sample.items())),
            "duration_histogram": {label: self.durations[label] for label, _ in DURATION_BINS},
            "task_types": dict(self.task_types.most_common()),
        }


def _duration_bin(seconds: float) -> str:
    for label, upper in DURATION_BINS:
        if seconds < upper:
            return label
    return DURATION_BINS[-1][0]


def stream_stats(path: str | os.PathLike[str]) -> StreamStats:
    """Read a stream file (JSON list or JSONL) and count turns, states and responses."""
    stats = StreamStats()
    for index, item in enumerate(iter_records(path, lazy=True)):
        try:
            sample = parse_record(item)
            if not isinstance(sample, dict) or not isinstance(sample.get("messages"), list):
                raise ConversationError("no messages list")
            timeline = parse_stream_messages(sample["messages"])
        except (ConversationError, InvalidRecord, AttributeError) as exc:
            stats.invalid += 1
            stats.problems.append(f"{path}: sample {index}: messages: {exc}")
            continue
        stats.samples += 1
        stats.turns += len(timeline.turns)
        stats.states.update(turn.state for turn in timeline.turns if turn.state is not None)
        stats.responses_per_sample[len(timeline.responses())] += 1
        stats.durations[_duration_bin(timeline.duration)] += 1
        stats.task_types[str(sample.get("task_type", "unknown"))] += 1
    return stats


def format_stats(stats: StreamStats) -> str:
    data = stats.as_dict()
    lines = [
        f"samples          {data['samples']}" + (f"  ({data['invalid_samples']} invalid)" if stats.invalid else ""),
        f"turns            {data['turns']}  (mean {data['mean_turns']} per sample)",
        "states           "
        + "  ".join(f"{name} {count} ({data['state_share'][name]:.1%})" for name, count in data["states"].items()),
        "responses/sample " + "  ".join(f"{k}: {v}" for k, v in data["responses_per_sample"].items()),
        "durations        " + "  ".join(f"{k}: {v}" for k, v in data["duration_histogram"].items()),
        "task types       " + "  ".join(f"{k}: {v}" for k, v in data["task_types"].items()),
    ]
    return "\n".join(lines)
