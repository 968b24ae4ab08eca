"""The two choices made each second: which state, and (for Response) which answer tokens.

Both the incremental engine and the full re-encode reference use these rules, so their
outputs can be compared token for token.

State: training always puts a state token first in an assistant message, so only the
three state logits are compared (an untrained or drifting model can never emit a
malformed turn). ``DecisionRule`` lets users trade answer frequency against delay: an
additive bias per state, and/or a threshold ``τ`` on P(Response) (softmax over the three
state logits) below which the engine does not answer.

Answer: greedy decoding after ``</Response>`` until ``<|im_end|>`` (or end of text) or
``max_new_tokens``; added tokens (state tokens, vision and tool markers) and the
vocabulary's unused rows are never chosen, so an answer is always plain text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch

from ..protocol import State


@dataclass(frozen=True)
class DecisionRule:
    """How the state is chosen from the model's three state logits."""

    bias: Mapping[State, float] = field(default_factory=dict)
    """Added to a state's logit before choosing (e.g. ``{State.RESPONSE: -1.0}`` answers less)."""
    response_threshold: float | None = None
    """Answer only when P(Response) >= this; otherwise the likelier of Silence and Standby."""

    def __post_init__(self) -> None:
        for state, value in self.bias.items():
            if not isinstance(state, State) or not math.isfinite(value):
                raise ValueError(f"bias: expected finite numbers keyed by State, got {state!r}: {value!r}")
        if self.response_threshold is not None and not 0.0 <= self.response_threshold <= 1.0:
            raise ValueError(f"response_threshold must lie in [0, 1], got {self.response_threshold}")

    def decide(self, state_logits: torch.Tensor) -> tuple[State, dict[State, float]]:
        """``state_logits``: logits of Silence, Standby, Response (protocol order).
        Returns the chosen state and the three probabilities after the bias."""
        logits = state_logits.detach().float().cpu().clone()
        for position, state in enumerate(State):
            logits[position] += self.bias.get(state, 0.0)
        probabilities = torch.softmax(logits, dim=0)
        named = {state: float(probabilities[position]) for position, state in enumerate(State)}
        if self.response_threshold is None:
            return list(State)[int(torch.argmax(logits))], named
        if named[State.RESPONSE] >= self.response_threshold:
            return State.RESPONSE, named
        quiet = State.SILENCE if logits[0] >= logits[1] else State.STANDBY
        return quiet, named


class AnswerDecoder:
    """Greedy choice of answer tokens with the never-chosen ids masked out."""

    def __init__(self, tokenizer, vocab_rows: int, max_new_tokens: int) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        stops = {tokenizer.convert_tokens_to_ids("<|im_end|>")}
        if tokenizer.eos_token_id is not None:
            stops.add(tokenizer.eos_token_id)
        self.stop_ids = frozenset(stops)
        banned = torch.zeros(vocab_rows, dtype=torch.bool)
        banned[len(tokenizer):] = True
        for token_id in tokenizer.added_tokens_decoder:
            if token_id not in self.stop_ids and token_id < vocab_rows:
                banned[token_id] = True
        self._banned = banned
        self._banned_on: dict[torch.device, torch.Tensor] = {}

    def pick(self, logits: torch.Tensor) -> int:
        """Next answer token from the last position's vocabulary logits."""
        banned = self._banned_on.get(logits.device)
        if banned is None:
            banned = self._banned_on[logits.device] = self._banned.to(logits.device)
        return int(torch.argmax(logits.float().masked_fill(banned, float("-inf"))))

    def allowed_ids(self) -> list[int]:
        """Every id an answer may use (what engines that take an allow-list, such as vLLM, are given)."""
        return torch.nonzero(~self._banned).flatten().tolist()

    def text(self, token_ids: list[int]) -> str:
        """The answer as the protocol writes it (no surrounding spaces)."""
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()
