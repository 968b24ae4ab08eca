"""Raw event annotations: schema, time parsing and the problems found in them.

Raw samples come from many annotation sources, so times arrive as numbers, numeric
strings, ``MM:SS`` or ``HH:MM:SS``, and an empty string means "not given". The schema
turns every such value into float seconds or None and reports what it cannot read with
the field's path, so a bad sample is rejected with a reason instead of crashing a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding about one sample; errors reject the sample, warnings do not."""

    severity: Severity
    field: str
    message: str

    def describe(self, source: str, index: int) -> str:
        return f"{source}: sample {index}: {self.field}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "field": self.field, "message": self.message}


def parse_time(value: Any) -> float | None:
    """Seconds from a number, a numeric string, ``MM:SS`` or ``HH:MM:SS``; None if empty."""
    kind = type(value)
    if kind is float or kind is int:  # the common case, first
        seconds = float(value)
    elif value is None or value == "":
        return None
    elif isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        parts = text.split(":")
        if len(parts) > 3:
            raise ValueError(f"not a time: {value!r}")
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            raise ValueError(f"not a time: {value!r}") from None
        if len(parts) > 1 and any(n < 0 or (i > 0 and n >= 60) for i, n in enumerate(numbers)):
            raise ValueError(f"not a time: {value!r}")
        seconds = 0.0
        for number in numbers:
            seconds = seconds * 60 + number
    else:
        raise ValueError(f"not a time: {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"not a finite time: {value!r}")
    if seconds < 0:
        raise ValueError(f"negative time: {value!r}")
    return seconds


TimeValue = Annotated[Optional[float], BeforeValidator(parse_time)]


class RawQuestion(BaseModel):
    model_config = ConfigDict(extra="allow")

    content: str
    time: TimeValue = None


class RawResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    content: str
    st_time: TimeValue = None
    end_time: TimeValue = None
    time: TimeValue = None


class RawSample(BaseModel):
    """One raw annotation; unknown top-level fields are kept and carried into the output."""

    model_config = ConfigDict(extra="allow")

    video_path: str
    question: list[RawQuestion] = []
    response: list[RawResponse] = []
    duration: TimeValue = None

    @field_validator("video_path")
    @classmethod
    def _video_path_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty video path")
        return value


CONSUMED_FIELDS = frozenset({"video_path", "question", "response", "duration"})
"""Raw fields that the stream format replaces; every other field is carried through."""


def field_path(loc: tuple[Any, ...]) -> str:
    """``('response', 1, 'end_time')`` -> ``response[1].end_time``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "sample"


def validate_raw(data: Any) -> tuple[RawSample | None, list[Problem]]:
    """Check the structure of one raw sample; returns the model or the schema errors."""
    if not isinstance(data, dict):
        return None, [Problem("error", "sample", f"expected a JSON object, got {type(data).__name__}")]
    try:
        return RawSample.model_validate(data), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            problems.append(Problem("error", field_path(tuple(error["loc"])), message))
        return None, problems


_LEFT_OUT = {"video_path": "-", "question": [], "response": [], "duration": None}
"""What stands in for a top-level field the schema cannot read, in ``readable_part``."""


def readable_part(data: dict[str, Any]) -> tuple[RawSample | None, frozenset[str]]:
    """A sample the schema rejects, with each part it cannot read left out, and those parts'
    paths (``duration``, ``response[2]``: a question or response as a whole), so that the
    rest is still checked and a sample's problems are all reported at once. None when
    nothing can stand in for the unreadable parts."""
    try:
        return RawSample.model_validate(data), frozenset()
    except ValidationError as exc:
        locations = [tuple(error["loc"]) for error in exc.errors()]
    patched = {**data, **{kind: list(data[kind]) for kind in ("question", "response") if isinstance(data.get(kind), list)}}
    left_out = set()
    for location in locations:
        head = location[0]
        if head in ("question", "response") and len(location) > 1 and isinstance(location[1], int):
            patched[head][location[1]] = {"content": "-"}  # never checked: it is left out
            left_out.add(field_path(location[:2]))
        elif head in _LEFT_OUT:
            patched[head] = _LEFT_OUT[head]
            left_out.add(str(head))
        else:
            return None, frozenset()
    try:
        return RawSample.model_validate(patched), frozenset(left_out)
    except ValidationError:
        return None, frozenset()
