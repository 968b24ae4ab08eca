"""Splitting a stream conversation that is too long for ``--max_length`` into windows.

A long clip is cut into consecutive windows of whole turns, each of which fits the token
budget, instead of being dropped (the ms-swift default) or truncated mid-turn. Every window
keeps the system prompt and starts with the questions asked so far, as streaming inference
keeps them in its permanent prefix, so the model is never asked to answer a question it
cannot see. Time tags stay absolute: the template takes each turn's frame from its tag.

Token counts are exact: each ChatML message is tokenized as the template writes it, with one
frame's visual tokens per ``<stream>`` (tested against the template's own encoding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..protocol import DEFAULT_SYSTEM_PROMPT, STREAM_PLACEHOLDER, carried_questions, parse_stream_messages

_VISION_SPAN = "<|vision_start|><|image_pad|><|vision_end|>"


class WindowError(ValueError):
    """A turn that does not fit the budget even alone."""


@dataclass
class ChatMLCounter:
    """Token count of one ChatML message as the Qwen2.5-VL template encodes it."""

    tokenizer: Any
    image_tokens: int
    """Visual tokens of one frame: (height/28)·(width/28)."""

    def __call__(self, role: str, content: str) -> int:
        frames = content.count(STREAM_PLACEHOLDER)
        text = f"<|im_start|>{role}\n{content.replace(STREAM_PLACEHOLDER, _VISION_SPAN)}<|im_end|>\n"
        return len(self.tokenizer.encode(text, add_special_tokens=False)) + frames * (self.image_tokens - 1)


def frame_tokens(height: int, width: int, factor: int = 28) -> int:
    """Visual tokens of a frame already sized to multiples of ``factor`` (14-pixel patches merged 2×2)."""
    return (height // factor) * (width // factor)


def split_windows(
    messages: Sequence[dict[str, Any]],
    max_length: int,
    count: Callable[[str, str], int],
) -> list[list[dict[str, Any]]]:
    """Cut ``messages`` into consecutive windows whose token count is at most ``max_length``.

    Returns ``[messages]`` unchanged when the whole conversation fits. Raises WindowError when
    a single turn (with the questions carried into it) is over the budget.
    """
    timeline = parse_stream_messages(messages)
    has_system = bool(messages) and messages[0].get("role") == "system"
    system = dict(messages[0]) if has_system else None
    body = list(messages[1:] if has_system else messages)
    pairs = [body[i : i + 2] for i in range(0, len(body), 2)]
    base = count("system", system["content"] if system else DEFAULT_SYSTEM_PROMPT)

    def pair_cost(pair: Sequence[dict[str, Any]]) -> int:
        return sum(count(message["role"], message["content"]) for message in pair)

    costs = [pair_cost(pair) for pair in pairs]
    if base + sum(costs) <= max_length:
        return [list(messages)]

    windows = []
    asked: list[str] = []
    start = 0
    while start < len(pairs):
        first = [dict(message) for message in pairs[start]]
        carried = carried_questions(timeline.turns[start].questions, asked)
        if carried:
            first[0]["content"] = "\n".join(carried) + "\n" + first[0]["content"]
        total = base + pair_cost(first)
        if total > max_length:
            raise WindowError(f"turn {start} needs {total} tokens with the system prompt, more than max_length {max_length}")
        end = start + 1
        while end < len(pairs) and total + costs[end] <= max_length:
            total += costs[end]
            end += 1
        window = ([system] if system else []) + first
        for pair in pairs[start + 1 : end]:
            window.extend(dict(message) for message in pair)
        windows.append(window)
        for turn in timeline.turns[start:end]:
            asked.extend(turn.questions)
        start = end
    return windows
