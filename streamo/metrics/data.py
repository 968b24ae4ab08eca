"""Reading ground truth (stream or raw files) and predictions (JSON lines) into timelines.

Predictions file: one JSON object per turn, the same objects ``streamo stream --json``
prints, plus which sample they belong to::

    {"sample": 0, "t": 6.0, "state": "response", "text": "The circle moved ...", "latency_ms": 41.2}

* ``sample``: the sample's position in the data file (0-based) or its ``id`` field; may be
  left out when the data file holds a single sample;
* ``t``: start of the turn in seconds, i.e. the time of the frame the decision was made on
  (turn k at f fps has t = k/f);
* ``state``: ``silence``, ``standby`` or ``response`` (the tokens ``</Silence>`` etc. work too);
* ``text``: the answer of a Response (optional otherwise); ``latency_ms`` optional.

Unreadable records and records that do not fit the truth are reported with their record
number and skipped; they never stop the scoring of the rest.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..convert import ConvertOptions, convert_sample
from ..jsonfiles import iter_records
from ..protocol import TOKEN_TO_STATE, ConversationError, State, Timeline, Turn, frame_turn, parse_stream_messages

_STATE_NAMES: dict[str, State] = {state.value: state for state in State}
_STATE_NAMES.update({token.lower(): state for token, state in TOKEN_TO_STATE.items()})


@dataclass
class TruthSample:
    key: Any
    """The sample's ``id`` field when it has one, otherwise its position in the file."""
    index: int
    timeline: Timeline


@dataclass
class PredictionRecord:
    number: int
    """1-based record number in the predictions file, for messages."""
    t: float
    state: State
    text: str = ""
    latency_ms: float | None = None


@dataclass
class PredictedStream:
    timeline: Timeline
    latencies_ms: list[float] = field(default_factory=list)


def load_truth(
    path: str | os.PathLike[str], fps: float = 1.0, video_prefix: str | None = None
) -> tuple[list[TruthSample], list[str]]:
    """Ground-truth timelines of a stream file, or of a raw file converted on the fly.

    Each record is recognised on its own (``messages`` means stream format); ``fps`` and
    ``video_prefix`` only matter for raw records. Returns the samples and the problems of the
    records that could not be used.
    """
    from ..video.probe import cached_duration

    samples: list[TruthSample] = []
    problems: list[str] = []
    options = ConvertOptions(fps=fps, video_prefix=video_prefix)
    for index, record in enumerate(iter_records(path)):
        where = f"{path}: sample {index}"
        if isinstance(record, dict) and "messages" in record:
            try:
                timeline = parse_stream_messages(record["messages"])
            except (ConversationError, AttributeError, TypeError) as exc:
                problems.append(f"{where}: messages: {exc}")
                continue
            if any(turn.state is None for turn in timeline.turns):
                problems.append(f"{where}: messages: the last user turn has no assistant reply")
                continue
        else:
            outcome = convert_sample(record, options, cached_duration)
            if outcome.sample is None:
                problems.extend(f"{where}: {p.field}: {p.message}" for p in outcome.problems if p.severity == "error")
                continue
            timeline = parse_stream_messages(outcome.sample["messages"])
        key = record.get("id", index) if isinstance(record, dict) else index
        samples.append(TruthSample(key, index, timeline))
    return samples, problems


def _parse_prediction(record: Any, number: int) -> tuple[Any, PredictionRecord]:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    t = record.get("t")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise ValueError(f"t: expected seconds >= 0, got {t!r}")
    state_name = record.get("state")
    state = _STATE_NAMES.get(state_name.strip().lower()) if isinstance(state_name, str) else None
    if state is None:
        raise ValueError(f"state: expected silence, standby or response, got {state_name!r}")
    text = record.get("text") or ""
    if not isinstance(text, str):
        raise ValueError(f"text: expected a string, got {type(text).__name__}")
    latency = record.get("latency_ms")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, (int, float))):
        raise ValueError(f"latency_ms: expected a number, got {latency!r}")
    sample = record.get("sample")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, (int, str))):
        raise ValueError(f"sample: expected an index or an id, got {sample!r}")
    return sample, PredictionRecord(number, float(t), state, text.strip(), None if latency is None else float(latency))


def iter_predictions(path: str | os.PathLike[str]) -> Iterator[tuple[Any, PredictionRecord | str]]:
    """(sample, record) per predictions record, or (None, problem text) for a bad one."""
    for number, record in enumerate(iter_records(path), start=1):
        try:
            yield _parse_prediction(record, number)
        except ValueError as exc:
            yield None, f"{path}: record {number}: {exc}"


def predicted_timeline(records: list[PredictionRecord], truth: Timeline) -> tuple[PredictedStream, list[str]]:
    """Lay prediction records onto the truth's turns; turns nobody predicted keep state None."""
    turns = [Turn(index=t.index, start=t.start, end=t.end, questions=list(t.questions)) for t in truth.turns]
    problems: list[str] = []
    latencies: list[float] = []
    for record in records:
        turn_index = frame_turn(record.t, truth.fps)
        if turn_index >= len(turns):
            problems.append(f"record {record.number}: t={record.t:g} s is past the last turn ({len(turns)} turns)")
            continue
        turn = turns[turn_index]
        if turn.state is not None:
            problems.append(f"record {record.number}: second prediction for turn {turn_index} (t={record.t:g} s); kept the first")
            continue
        turn.state, turn.answer = record.state, record.text if record.state is State.RESPONSE else ""
        if record.latency_ms is not None:
            latencies.append(record.latency_ms)
    return PredictedStream(Timeline(system=truth.system, turns=turns, fps=truth.fps), latencies), problems


def group_predictions(
    path: str | os.PathLike[str], truths: list[TruthSample]
) -> tuple[dict[int, list[PredictionRecord]], list[str]]:
    """Prediction records per truth sample (by position in ``truths``) and the problems found."""
    by_index = {sample.index: position for position, sample in enumerate(truths)}
    by_key = {str(sample.key): position for position, sample in enumerate(truths)}
    grouped: dict[int, list[PredictionRecord]] = {}
    problems: list[str] = []
    for sample, record in iter_predictions(path):
        if isinstance(record, str):
            problems.append(record)
            continue
        if sample is None:
            if len(truths) != 1:
                problems.append(f"{path}: record {record.number}: sample: missing, and the data holds {len(truths)} samples")
                continue
            position = 0
        elif isinstance(sample, int):
            position = by_index.get(sample)
        else:
            position = by_key.get(sample)
            if position is None and sample.isdigit():
                position = by_index.get(int(sample))
        if position is None:
            problems.append(f"{path}: record {record.number}: sample: {sample!r} is not a usable sample of the data")
            continue
        grouped.setdefault(position, []).append(record)
    return grouped, problems
