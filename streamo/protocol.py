"""The stream protocol: the single source of truth for tokens, time tags and turn layout.

A stream conversation has one user turn per sampled frame. Each user turn holds an
optional question, the time tag of the frame's interval and the ``<stream>`` frame
placeholder; each assistant turn starts with one of three state tokens. Conversion,
training, streaming inference and evaluation all import these definitions so that
the model sees exactly the same text everywhere.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

STREAM_PLACEHOLDER = "<stream>"
"""Stands for the turn's frame; the training template swaps it for the image tokens."""

# Tolerance for turning float seconds into turn indices: 5.000000001 s still means "5".
_EPS = 1e-6


class State(str, enum.Enum):
    """What the assistant decides each second."""

    SILENCE = "silence"
    STANDBY = "standby"
    RESPONSE = "response"

    @property
    def token(self) -> str:
        return STATE_TOKENS[self]


STATE_TOKENS: dict[State, str] = {
    State.SILENCE: "</Silence>",
    State.STANDBY: "</Standby>",
    State.RESPONSE: "</Response>",
}
TOKEN_TO_STATE: dict[str, State] = {token: state for state, token in STATE_TOKENS.items()}
SPECIAL_TOKENS: tuple[str, ...] = tuple(STATE_TOKENS.values())

DEFAULT_SYSTEM_PROMPT = """You are a streaming video assistant. The video arrives one frame at a time, \
and every frame is labelled with the time span it covers, written as <Xs-Ys> (for example <3s-4s>).
After each frame, reply with exactly one of these states:

</Silence>  - nothing relevant to the question is happening, or the question cannot be \
addressed by what is on screen.
</Standby>  - something relevant is under way but has not finished yet, or you still need \
to see more before you can answer.
</Response> - the event has finished or you have seen enough to answer; write the full \
answer right after the token.

Never answer in part or guess beyond what you have seen, and start every answer with </Response>.
"""


def format_seconds(value: float) -> str:
    """Print seconds the way time tags do: ``5``, ``0.5``, ``1.25`` (no trailing zeros)."""
    rounded = round(value, 6)
    if rounded == int(rounded):
        return str(int(rounded))
    return f"{rounded:.6f}".rstrip("0").rstrip(".")


@lru_cache(maxsize=64)
def _tag_table(fps: float, count: int) -> tuple[str, ...]:
    return tuple(f"<{format_seconds(k / fps)}s-{format_seconds((k + 1) / fps)}s>" for k in range(count))


def time_tag(turn: int, fps: float = 1.0) -> str:
    """Tag of turn ``turn``, which covers ``[turn/fps, (turn+1)/fps)``, e.g. ``<4s-5s>``."""
    if turn < 1024:
        return _tag_table(fps, 1024)[turn]
    return f"<{format_seconds(turn / fps)}s-{format_seconds((turn + 1) / fps)}s>"


_TAG_RE = re.compile(r"<(\d+(?:\.\d+)?)s-(\d+(?:\.\d+)?)s>")


def parse_time_tag(text: str) -> tuple[float, float] | None:
    """Return ``(start, end)`` of the last time tag in ``text`` or None."""
    matches = _TAG_RE.findall(text)
    if not matches:
        return None
    start, end = matches[-1]
    return float(start), float(end)


def turn_count(duration: float, fps: float = 1.0) -> int:
    """Number of whole frames a video of ``duration`` seconds yields: floor(D·f)."""
    return max(int(math.floor(duration * fps + _EPS)), 0)


def turn_of(moment: float, fps: float = 1.0) -> int:
    """Turn a moment belongs to: max(ceil(t·f) − 1, 0), so "5" lands in ``<4s-5s>``."""
    return max(int(math.ceil(moment * fps - _EPS)) - 1, 0)


def frame_turn(t: float, fps: float = 1.0) -> int:
    """The turn whose frame starts at ``t`` seconds (turn k starts at k/fps): floor(t·f).
    A frame at 5 s is turn 5 (``<5s-6s>``); a question at 5 s is turn 4 (``turn_of``)."""
    return int(math.floor(t * fps + _EPS))


MIN_WINDOW_TURNS = 2
"""A bounded context keeps at least one turn beside the one being added."""


def window_turns(window: float | None, block: float | None, fps: float) -> tuple[int | None, int]:
    """(turns a window of ``window`` seconds holds, turns one eviction drops); (None, 0) without
    a window. Raises ValueError when the window holds fewer than ``MIN_WINDOW_TURNS``."""
    if window is None:
        if block is not None:
            raise ValueError("eviction_block needs a window")
        return None, 0
    turns = turn_count(window, fps)
    if turns < MIN_WINDOW_TURNS:
        raise ValueError(f"window must hold at least {MIN_WINDOW_TURNS} frames at {fps:g} fps, got {window} s")
    block_turns = max(1, turns // 4) if block is None else turn_count(block, fps)
    if not 1 <= block_turns < turns:
        raise ValueError(f"eviction_block must hold at least one frame and fewer than the window's {turns}")
    return turns, block_turns


@lru_cache(maxsize=16)
def _plain_user_table(fps: float, count: int) -> tuple[str, ...]:
    return tuple(f"{tag}\n{STREAM_PLACEHOLDER}" for tag in _tag_table(fps, count))


def plain_user_texts(turns: int, fps: float = 1.0) -> tuple[str, ...]:
    """User texts without a question for turns 0..turns-1 (cached: conversion's hot path)."""
    size = 1024
    while size < turns:
        size *= 2
    return _plain_user_table(fps, size)[:turns]


def user_text(turn: int, fps: float = 1.0, questions: Sequence[str] = ()) -> str:
    """User turn content: questions (one per line), the time tag, the frame placeholder."""
    tag = time_tag(turn, fps)
    if questions:
        return "\n".join(questions) + f"\n{tag}\n{STREAM_PLACEHOLDER}"
    return f"{tag}\n{STREAM_PLACEHOLDER}"


def assistant_text(state: State, answer: str | None = None) -> str:
    """Assistant turn content: the state token, followed by the answer for Response."""
    if state is State.RESPONSE:
        return f"{STATE_TOKENS[state]} {answer}" if answer else STATE_TOKENS[state]
    return STATE_TOKENS[state]


def parse_assistant(text: str) -> tuple[State | None, str]:
    """Split an assistant reply into its state and answer; state is None if no token leads."""
    stripped = text.lstrip()
    for token, state in TOKEN_TO_STATE.items():
        if stripped.startswith(token):
            return state, stripped[len(token):].strip()
    return None, text.strip()


class StateTokenError(ValueError):
    """A tokenizer that does not hold each state token as a single id."""


def state_token_ids(tokenizer) -> dict[State, int]:
    """Id of each state token (Silence, Standby, Response order); each must be one token.

    Training adds the tokens with ``--new_special_tokens configs/special_tokens.txt``; a
    tokenizer without them splits ``</Silence>`` into pieces and nothing would work.
    """
    ids, problems = {}, []
    for state, token in STATE_TOKENS.items():
        encoded = tokenizer.encode(token, add_special_tokens=False)
        if len(encoded) == 1:
            ids[state] = int(encoded[0])
        else:
            problems.append(f"{token} -> {len(encoded)} tokens {list(encoded)}")
    if problems:
        raise StateTokenError(
            "the state tokens must each be a single token id, but " + "; ".join(problems)
            + ". Add them when training with --new_special_tokens configs/special_tokens.txt"
            " (a checkpoint trained that way already contains them)."
        )
    return ids


def carried_questions(own: Sequence[str], earlier: Sequence[str]) -> list[str]:
    """Questions the first turn of a window repeats: those asked before the window, each once,
    in the order asked, except the ones the turn asks itself. Training windows and the
    streaming engine's evicting cache follow this same rule."""
    seen = set(own)
    carried = []
    for question in earlier:
        if question not in seen:
            seen.add(question)
            carried.append(question)
    return carried


@dataclass
class Turn:
    """One second (one frame) of a stream conversation."""

    index: int
    start: float
    end: float
    questions: list[str] = field(default_factory=list)
    state: State | None = None
    answer: str = ""


@dataclass
class Timeline:
    """A stream conversation read back into per-turn states: the inverse of conversion."""

    system: str | None
    turns: list[Turn]
    fps: float

    @property
    def duration(self) -> float:
        return self.turns[-1].end if self.turns else 0.0

    def states(self) -> list[State | None]:
        return [turn.state for turn in self.turns]

    def responses(self) -> list[Turn]:
        return [turn for turn in self.turns if turn.state is State.RESPONSE]


class ConversationError(ValueError):
    """A stream conversation that does not follow the protocol."""


def parse_stream_messages(messages: Iterable[Mapping[str, Any]]) -> Timeline:
    """Read a stream conversation's messages back into a timeline.

    Raises ConversationError naming the message index when turns do not alternate or a
    user turn lacks its time tag or frame placeholder.
    """
    system = None
    turns: list[Turn] = []
    pending: Turn | None = None
    for position, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if not isinstance(content, str):
            raise ConversationError(f"message {position}: content must be a string")
        if role == "system":
            if position != 0:
                raise ConversationError(f"message {position}: system message must come first")
            system = content
        elif role == "user":
            if pending is not None:
                raise ConversationError(f"message {position}: two user turns in a row")
            if STREAM_PLACEHOLDER not in content:
                raise ConversationError(f"message {position}: user turn lacks {STREAM_PLACEHOLDER}")
            span = parse_time_tag(content)
            if span is None:
                raise ConversationError(f"message {position}: user turn lacks a <Xs-Ys> time tag")
            head = content[: content.rfind("<", 0, content.rfind(STREAM_PLACEHOLDER))]
            questions = [line for line in head.split("\n") if line.strip()]
            pending = Turn(index=len(turns), start=span[0], end=span[1], questions=questions)
        elif role == "assistant":
            if pending is None:
                raise ConversationError(f"message {position}: assistant turn without a user turn")
            state, answer = parse_assistant(content)
            if state is None:
                raise ConversationError(f"message {position}: assistant turn does not start with a state token")
            pending.state, pending.answer = state, answer
            turns.append(pending)
            pending = None
        else:
            raise ConversationError(f"message {position}: unknown role {role!r}")
    if pending is not None:
        turns.append(pending)
    fps = 1.0 / (turns[0].end - turns[0].start) if turns and turns[0].end > turns[0].start else 1.0
    return Timeline(system=system, turns=turns, fps=fps)
