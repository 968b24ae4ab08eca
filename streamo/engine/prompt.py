"""Token layout of a stream conversation, built one turn at a time.

Training encodes a stream conversation with ChatML (``stream_qwen2_5_vl`` template): a
system message, then per second a user message (questions, time tag, frame) and an
assistant message (state token, answer for Response). The engine never re-encodes that
whole text; it tokenizes each new message alone and appends it. That gives the same ids
because every message is bounded by the special tokens ``<|im_start|>``/``<|im_end|>``,
which the tokenizer never merges with neighbouring text (tests compare against the
template's encoding).

Positions follow Qwen2.5-VL's M-RoPE: a text token takes one position on all three axes;
a frame of ``h x w`` merged patches starts at the next free position p, its token (i, j)
gets (p, p+i, p+j), and the text after it resumes at p + max(h, w).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..protocol import STREAM_PLACEHOLDER, State, assistant_text, user_text

VISION_SPAN = "<|vision_start|><|image_pad|><|vision_end|>"


class PromptTokens:
    """Tokenizes the pieces of a stream conversation exactly as training does."""

    def __init__(self, tokenizer, fps: float = 1.0) -> None:
        self.tokenizer = tokenizer
        self.fps = fps
        self.image_token_id: int = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.end_ids: tuple[int, ...] = tuple(self._encode("<|im_end|>\n"))
        self.im_end_id = self.end_ids[0]

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def system(self, prompt: str) -> list[int]:
        return self._encode(f"<|im_start|>system\n{prompt}<|im_end|>\n")

    def user_content(self, turn: int, questions: Sequence[str]) -> str:
        """The user message text of ``turn`` in stream format (frame as ``<stream>``)."""
        return user_text(turn, self.fps, list(questions))

    def user(self, turn: int, questions: Sequence[str], frame_tokens: int) -> list[int]:
        """User message of ``turn`` with its frame's ``frame_tokens`` image pads, up to and
        including the assistant header that the state token follows."""
        content = self.user_content(turn, questions).replace(STREAM_PLACEHOLDER, VISION_SPAN)
        ids = self._encode(f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n")
        at = ids.index(self.image_token_id)
        return ids[:at] + [self.image_token_id] * frame_tokens + ids[at + 1:]

    def reply(self, state: State, answer: str = "") -> list[int]:
        """Assistant message body and its closing ``<|im_end|>\\n``."""
        return self._encode(assistant_text(state, answer)) + list(self.end_ids)


def chunk_positions(
    ids: Sequence[int], image_token_id: int, grids: Sequence[tuple[int, int]], start: int
) -> tuple[torch.Tensor, int]:
    """M-RoPE position ids ``(3, len(ids))`` of a chunk that begins at position ``start``.

    ``grids`` holds ``(height, width)`` in merged patches of each frame in the chunk, in
    order. Returns the positions and the next free position.
    """
    positions = torch.empty(3, len(ids), dtype=torch.long)
    frames = iter(grids)
    index, current = 0, start
    while index < len(ids):
        if ids[index] != image_token_id:
            positions[:, index] = current
            index += 1
            current += 1
            continue
        height, width = next(frames)
        count = height * width
        rows = torch.arange(height).repeat_interleave(width)
        cols = torch.arange(width).repeat(height)
        positions[0, index:index + count] = current
        positions[1, index:index + count] = current + rows
        positions[2, index:index + count] = current + cols
        index += count
        current += max(height, width)
    return positions, current
