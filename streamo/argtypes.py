"""argparse value types shared by every sub-command, so each flag validates the same way."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _number(text: str, kind=float):
    try:
        value = kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def seconds(text: str) -> float:
    """A moment in a stream: a finite number of seconds, at least 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be seconds >= 0: {text!r}")
    return value


def probability(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1]: {text!r}")
    return value


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def existing_path(text: str) -> Path:
    """A file or a directory that exists."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file or directory: {text}")
    return path


def task_weight(text: str) -> tuple[str, float]:
    """``TASK=FACTOR``, the factor a finite number >= 0."""
    task, equals, factor = text.rpartition("=")
    if not equals or not task.strip():
        raise argparse.ArgumentTypeError(f"expected TASK=FACTOR: {text!r}")
    value = _number(factor)
    if value < 0:
        raise argparse.ArgumentTypeError(f"factor must be >= 0: {text!r}")
    return task.strip(), value


def system_prompt_text(text: str) -> str:
    """A system prompt given inline. Blank is refused everywhere, because a stream converted with
    one could never be streamed: every session opens with the prompt training used."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def system_prompt_file(text: str) -> str:
    """The system prompt read from the file ``text`` names, checked as :func:`system_prompt_text`;
    read while parsing, so every command reports a bad file the same way, as a usage error."""
    try:
        prompt = Path(text).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"{text}: {exc}") from None
    if not prompt.strip():
        raise argparse.ArgumentTypeError(f"{text}: empty")
    return prompt


def engine_arg(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` for an engine argument; VALUE is read as JSON when it parses (numbers,
    true/false, lists, objects), else kept as text."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value
