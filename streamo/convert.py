"""Raw event annotations -> per-second stream conversations.

Rules (see ``streamo.protocol`` for the turn layout):

* a video of duration D at fps f yields floor(D·f) turns; a moment t belongs to turn
  max(ceil(t·f) − 1, 0);
* a question is shown in the user turn of its time, and by default the first question is
  also shown at turn 0 when that turn has none (the original data does this);
* an interval response [st, end] is ``</Standby>`` from turn(st) through turn(end) and
  ``</Response> content`` at turn(end) + 1; an instant response (``time``) answers at
  turn(time); every other turn is ``</Silence>``;
* a Response is never overwritten: Response beats Standby beats Silence, and two
  responses landing on one turn are both kept, in time order, with a warning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from .annotation import CONSUMED_FIELDS, Problem, RawSample, readable_part, validate_raw
from .protocol import (
    DEFAULT_SYSTEM_PROMPT,
    State,
    assistant_text,
    format_seconds,
    plain_user_texts,
    turn_count,
    turn_of,
    user_text,
)

DurationProbe = Callable[[str], float]


@dataclass(frozen=True)
class ConvertOptions:
    fps: float = 1.0
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    video_prefix: str | None = None
    initial_question: bool = True
    """Also show the first question at turn 0 when turn 0 has none (original data does)."""


@dataclass
class Outcome:
    """Result for one raw sample: the stream sample, or None when rejected, plus findings."""

    sample: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return self.sample is None

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def prefixed_video_path(video_path: str, prefix: str | None) -> str:
    """A raw sample's ``video_path`` under ``--video-prefix``, as the converted stream names it."""
    return os.path.join(prefix, video_path) if prefix else video_path


def _seconds(value: float) -> str:
    return f"{format_seconds(value)} s"


def convert_sample(data: Any, options: ConvertOptions, probe: DurationProbe | None = None) -> Outcome:
    """Convert one raw sample; never raises on bad data, reports it instead."""
    raw, problems = validate_raw(data)
    left_out: frozenset[str] = frozenset()
    if raw is None:  # still check the parts that can be read: every problem is reported at once
        raw, left_out = readable_part(data) if isinstance(data, dict) else (None, frozenset())
        if raw is None:
            return Outcome(None, problems)
    fps = options.fps
    problems.extend(_check_contents(raw, left_out))
    read, response_problems = _read_responses(raw, fps, left_out)
    problems.extend(response_problems)
    if left_out & {"duration", "video_path"}:  # no duration to place anything in
        return Outcome(None, problems)
    video = prefixed_video_path(raw.video_path, options.video_prefix)

    duration = raw.duration
    if duration is None:
        if probe is None:
            return Outcome(None, problems + [Problem("error", "duration", "not given and no video probing available")])
        try:
            duration = probe(video)
        except Exception as exc:  # any decoder failure is this sample's problem only
            return Outcome(None, problems + [Problem("error", "video_path", f"cannot read duration of {video}: {exc}")])
    turns = turn_count(duration, fps)
    if turns == 0:
        return Outcome(None, problems + [Problem("error", "duration", f"{_seconds(duration)} gives no whole frame at {fps:g} fps")])

    questions_at, question_problems = _place_questions(raw, turns, fps, duration, options.initial_question, left_out)
    problems.extend(question_problems)
    states, answers, response_problems = _place_responses(read, turns, duration)
    problems.extend(response_problems)
    if questions_at and not options.initial_question:
        first_question = min(questions_at)
        for answer in read:
            if (answer.turn if answer.first is None else answer.first) < first_question:
                problems.append(Problem("warning", f"response[{answer.index}]", "starts before any question is shown"))
    if any(p.severity == "error" for p in problems):
        return Outcome(None, problems)

    users = list(plain_user_texts(turns, fps))
    for turn, questions in questions_at.items():
        users[turn] = user_text(turn, fps, questions)
    replies = [_STATE_TEXT[state] for state in states]
    for turn, parts in answers.items():
        replies[turn] = assistant_text(State.RESPONSE, " ".join(parts))
    contents: list[str] = [options.system_prompt] * (2 * turns + 1)
    contents[1::2] = users
    contents[2::2] = replies
    messages = [{"role": role, "content": content} for role, content in zip(_roles(turns), contents)]

    sample: dict[str, Any] = {"messages": messages, "videos": [video]}
    for key, value in data.items():
        if key not in CONSUMED_FIELDS and key not in sample:
            sample[key] = value
    return Outcome(sample, problems)


@lru_cache(maxsize=4)
def _role_table(size: int) -> tuple[str, ...]:
    return ("system",) + ("user", "assistant") * size


def _roles(turns: int) -> tuple[str, ...]:
    size = 1024
    while size < turns:
        size *= 2
    return _role_table(size)


_STATE_TEXT = {state: assistant_text(state) for state in State}


def _check_contents(raw: RawSample, left_out: frozenset[str]) -> list[Problem]:
    problems = []
    for kind, items in (("question", raw.question), ("response", raw.response)):
        for index, item in enumerate(items):
            if not item.content.strip() and f"{kind}[{index}]" not in left_out:
                problems.append(Problem("error", f"{kind}[{index}].content", "empty text"))
    if not raw.question and "question" not in left_out:
        problems.append(Problem("warning", "question", "no question: the model only sees the frames"))
    return problems


def _place_questions(
    raw: RawSample, turns: int, fps: float, duration: float, initial_question: bool, left_out: frozenset[str]
) -> tuple[dict[int, list[str]], list[Problem]]:
    problems: list[Problem] = []
    timed: list[tuple[float, int, str]] = []
    for index, question in enumerate(raw.question):
        if left_out and f"question[{index}]" in left_out:
            continue
        moment = 0.0 if question.time is None else question.time
        if turn_of(moment, fps) >= turns:
            problems.append(
                Problem("error", f"question[{index}].time", f"{_seconds(moment)} is after the video end ({_seconds(duration)})")
            )
            continue
        timed.append((moment, index, question.content.strip()))
    timed.sort()
    questions_at: dict[int, list[str]] = {}
    for moment, _, content in timed:
        questions_at.setdefault(turn_of(moment, fps), []).append(content)
    if initial_question and timed and 0 not in questions_at:
        questions_at[0] = [timed[0][2]]
    return questions_at, problems


@dataclass(slots=True)
class _Answer:
    """One readable response: where it answers (``turn``, at ``moment`` given by ``field_name``)
    and the turns it stands by through (``first``..``last``, for an interval)."""

    index: int
    turn: int
    moment: float
    field_name: str
    content: str
    first: int | None = None
    last: int | None = None


def _read_responses(raw: RawSample, fps: float, left_out: frozenset[str]) -> tuple[list[_Answer], list[Problem]]:
    """Every response's own problems (the ones a duration does not decide) and its turns."""
    problems: list[Problem] = []
    read: list[_Answer] = []
    for index, response in enumerate(raw.response):
        where = f"response[{index}]"
        if left_out and where in left_out:
            continue
        content = response.content.strip()
        interval = response.st_time is not None or response.end_time is not None
        if interval:
            if response.st_time is None or response.end_time is None:
                missing = "st_time" if response.st_time is None else "end_time"
                problems.append(Problem("error", f"{where}.{missing}", "interval response needs both st_time and end_time"))
                continue
            if response.end_time < response.st_time:
                problems.append(
                    Problem(
                        "error",
                        f"{where}.end_time",
                        f"end ({_seconds(response.end_time)}) is before start ({_seconds(response.st_time)})",
                    )
                )
                continue
            if response.time is not None:
                problems.append(Problem("warning", f"{where}.time", "ignored: st_time/end_time are given"))
            first, last = turn_of(response.st_time, fps), turn_of(response.end_time, fps)
            read.append(_Answer(index, last + 1, response.end_time, "end_time", content, first, last))
        elif response.time is not None:
            read.append(_Answer(index, turn_of(response.time, fps), response.time, "time", content))
        else:
            problems.append(Problem("error", where, "no time: give st_time and end_time, or time"))
    return read, problems


def _place_responses(
    read: list[_Answer], turns: int, duration: float
) -> tuple[list[State], dict[int, list[str]], list[Problem]]:
    problems: list[Problem] = []
    states = [State.SILENCE] * turns
    placed: dict[int, list[tuple[float, int, str]]] = {}
    for answer in read:
        if answer.turn >= turns:
            when = f"at {_seconds(answer.moment)}" if answer.field_name == "time" else f"after end_time {_seconds(answer.moment)}"
            problems.append(
                Problem(
                    "error",
                    f"response[{answer.index}].{answer.field_name}",
                    f"answer {when} falls beyond the video end ({_seconds(duration)})",
                )
            )
            continue
        if answer.first is not None:
            for turn in range(answer.first, answer.last + 1):
                if states[turn] is State.SILENCE:
                    states[turn] = State.STANDBY
        placed.setdefault(answer.turn, []).append((answer.moment, answer.index, answer.content))

    answers: dict[int, list[str]] = {}
    for turn, items in placed.items():
        items.sort()
        states[turn] = State.RESPONSE
        answers[turn] = [content for _, _, content in items]
        if len(items) > 1:
            indices = ", ".join(f"response[{index}]" for _, index, _ in items)
            problems.append(
                Problem("warning", f"response[{items[-1][1]}]", f"{indices} answer in the same turn; answers are joined")
            )
    return states, answers, problems
