"""``StreamingSession``: one live conversation with a Qwen2.5-VL stream model, one frame a second.

The original approach re-sent the whole conversation (every frame so far) each second, so
each decision cost more than the last. This session keeps the keys and values of
everything the model has read in a KV cache (``cache.GrowingLayer``: appends without
re-copying) and, per frame, runs the
vision encoder on that frame only and prefills only the new tokens:

    [tail of the previous reply]  <|im_start|>user\\n[questions\\n]<Xs-Ys>\\n<frame><|im_end|>\\n<|im_start|>assistant\\n

then compares the three state logits. Only for ``</Response>`` does it feed the state
token and decode the answer greedily until ``<|im_end|>``. The reply's tokens are written
exactly as training writes them (the answer text re-tokenized, ``<|im_end|>\\n`` closing
it) and enter the cache with the next frame's prefill, so a silent second costs one
forward pass.

Bounded memory (``window``, and ``max_context_tokens``: see ``context``): the system prompt is a permanent prefix; when the window
holds ``window`` seconds of turns, the oldest ``eviction_block`` seconds are dropped
and the retained turns are re-encoded after the prefix in the same forward pass as the
new frame, laid out as a training window (the first retained turn repeats the questions
asked before it). Re-encoding (with cached frame embeddings, no vision encoder) keeps
M-RoPE positions contiguous and makes the context token-for-token a conversation the
model was trained on; it costs one longer prefill every ``eviction_block`` seconds.
Which turn carries what, and the window's layout, are ``context.StreamContext``'s, shared
with the vLLM backend (``vllm_backend``); this module only moves tensors.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from PIL import Image

from ..protocol import State
from ..video.sampling import fit_to_budget
from .cache import stream_cache
from .context import ContextSession, ContextTurn
from .prompt import chunk_positions


@dataclass
class StreamEvent:
    """The model's decision for one frame."""

    t: float
    """Start of the frame's turn in seconds (turn k at f fps: k/f)."""
    turn: int
    state: State
    text: str
    """The answer for Response, empty otherwise."""
    latency_ms: float
    """Wall time from receiving the frame to the decision (and answer)."""
    probabilities: dict[State, float] = field(default_factory=dict)
    """P(state) over the three state tokens, after the decision bias."""
    questions: list[str] = field(default_factory=list)
    """Questions shown with this frame."""
    context_tokens: int = 0
    """Tokens the model attended to for the decision (system, retained turns, this turn)."""
    cached_tokens: int = 0
    """Of those, the tokens whose keys and values were reused, not computed for this decision."""

    def as_record(self) -> dict[str, Any]:
        """The JSON line ``streamo stream --json`` prints and ``streamo eval`` reads."""
        return {"t": self.t, "state": self.state.value, "text": self.text, "latency_ms": round(self.latency_ms, 3)}


class StreamingSession(ContextSession):
    """Feed frames (``push_frame``) and questions (``ask``); get one ``StreamEvent`` per frame.

    ``model`` is a ``Qwen2_5_VLForConditionalGeneration`` whose tokenizer holds the three
    state tokens; ``processor`` its ``AutoProcessor`` (tokenizer and image processor).
    ``window`` (seconds) bounds the cache; ``None`` keeps the whole stream.
    """

    def __init__(self, model, processor, **options: Any) -> None:
        """``options``: ``ContextSession``'s (fps, system_prompt, window, decision, budgets ...)."""
        self.model = model
        self.processor = processor
        super().__init__(processor.tokenizer, model.lm_head.weight.shape[0], **options)
        self.merge_size = model.config.vision_config.spatial_merge_size
        self.device = model.device

        self._cache = stream_cache(model.config)
        self._ids: list[int] = []  # mirror of the token ids in the cache
        self._pending: list[int] = []  # reply tail that enters the cache with the next frame
        self._reply_start = 0  # cache length where the latest assistant message begins
        self._next_position = 0
        self._state_rows = torch.tensor([self.state_ids[state] for state in State], device=self.device)
        with torch.inference_mode(), attention_kernels(self.device):
            self._forward(self.context.system_ids, [], [])
        self._prefix_length = len(self._ids)
        self._prefix_position = self._next_position

    # ----------------------------------------------------------------- public API

    def push_frame(self, image: Image.Image, t: float | None = None) -> StreamEvent:
        """Read the frame of moment ``t`` (its turn's start, seconds; None: the next turn)
        and decide. Frames must come in time order; a skipped turn keeps its absolute tag."""
        started = time.perf_counter()
        turn = self.context.turn_at(t)
        with torch.inference_mode(), attention_kernels(self.device):
            embeds, grid = self._encode_frame(image)
            current = self.context.open_turn(turn, grid, embeds if self.context.evicts else None)
            if self.context.evict(current):
                cached = self._prefix_length
                hidden = self._refill(current)
            else:
                cached = len(self._ids)
                hidden = self._forward(self._pending + current.user_ids, [embeds], [grid])
            context_tokens = len(self._ids)
            self._pending = []
            self._reply_start = len(self._ids)
            state, probabilities = self.decision.decide(self._state_logits(hidden))
            answer = self._answer() if state is State.RESPONSE else ""
            self._close_reply(current, state, answer)
        latency = (time.perf_counter() - started) * 1000
        return StreamEvent(turn / self.fps, turn, state, answer, latency, probabilities, current.questions,
                           context_tokens, cached)

    @property
    def cache_length(self) -> int:
        """Tokens whose keys and values the cache holds."""
        return self._cache.get_seq_length()

    def context_ids(self) -> list[int]:
        """Every token the model has read or will read before the next frame."""
        return self._ids + self._pending

    # ----------------------------------------------------------------- internals

    def _frame_inputs(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """The frame's patches and ``image_grid_thw`` for the vision encoder, and its grid in merged patches."""
        image = fit_to_budget(image, self.min_pixels, self.max_pixels)
        inputs = self.processor.image_processor(images=[image], return_tensors="pt", do_resize=False)
        _, grid_h, grid_w = (int(v) for v in inputs["image_grid_thw"][0])
        return inputs["pixel_values"], inputs["image_grid_thw"], (grid_h // self.merge_size, grid_w // self.merge_size)

    def _encode_frame(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
        pixels, grid_thw, grid = self._frame_inputs(image)
        embeds = self.model.model.get_image_features(pixels.to(self.device), grid_thw.to(self.device),
                                                     return_dict=True).pooler_output[0]
        return embeds, grid

    def _positions(self, ids: list[int], grids: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, int]:
        """M-RoPE positions of ``ids`` after the cache, and the next free position."""
        return chunk_positions(ids, self.tokens.image_token_id, grids, self._next_position)

    def _forward(self, ids: list[int], frames: Sequence[torch.Tensor], grids: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Append ``ids`` (with ``frames`` at their image pads) to the cache; return the
        final hidden state at the last new position."""
        positions, next_position = self._positions(ids, grids)
        input_ids = torch.tensor([ids], device=self.device)
        embeds = self.model.model.get_input_embeddings()(input_ids)
        if frames:
            mask = (input_ids == self.tokens.image_token_id).unsqueeze(-1).expand_as(embeds)
            embeds = embeds.masked_scatter(mask, torch.cat(list(frames)).to(embeds.dtype))
        hidden = self.model.model.language_model(
            inputs_embeds=embeds,
            position_ids=positions.unsqueeze(1).to(self.device),
            past_key_values=self._cache,
            use_cache=True,
        ).last_hidden_state
        self._ids.extend(ids)
        self._next_position = next_position
        return hidden[0, -1]

    def _state_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of the three state tokens only: the decision needs no other vocabulary row."""
        head = self.model.lm_head
        bias = None if head.bias is None else head.bias[self._state_rows]
        return torch.nn.functional.linear(hidden, head.weight[self._state_rows], bias)

    def _truncate(self, length: int) -> None:
        """Drop cached tokens after the first ``length``; the caller resets positions."""
        surplus = len(self._ids) - length
        if surplus > 0:
            self._cache.crop(-surplus)
            del self._ids[length:]

    def _logits(self, ids: list[int]) -> torch.Tensor:
        """Append ``ids``; the vocabulary logits at the last one."""
        return self.model.lm_head(self._forward(ids, [], []))

    def _answer(self) -> str:
        logits = self._logits([self.state_ids[State.RESPONSE]])
        answer: list[int] = []
        while len(answer) < self.decoder.max_new_tokens:
            token = self.decoder.pick(logits)
            if token in self.decoder.stop_ids:
                break
            answer.append(token)
            if len(answer) < self.decoder.max_new_tokens:
                logits = self._logits([token])
        return self.decoder.text(answer)

    def _close_reply(self, turn: ContextTurn, state: State, answer: str) -> None:
        """Record the reply as training writes it; decoded tokens that differ from its
        tokenization are dropped from the cache and the rest waits for the next prefill."""
        self.context.close(turn, state, answer)
        fed = self._ids[self._reply_start:]
        same = 0
        while same < len(fed) and same < len(turn.reply_ids) and fed[same] == turn.reply_ids[same]:
            same += 1
        if same < len(fed):
            # Only text tokens follow the reply start: one position each.
            self._next_position -= len(fed) - same
            self._truncate(self._reply_start + same)
        self._pending = turn.reply_ids[same:]

    def _refill(self, current: ContextTurn) -> torch.Tensor:
        """After an eviction: the retained window and the new turn, re-encoded after the cached
        system prompt in one forward pass (cached frame embeddings, no vision encoder)."""
        self._truncate(self._prefix_length)
        self._next_position = self._prefix_position
        turns = self.context.turns
        return self._forward(self.context.retained_ids() + current.user_ids,
                             [turn.frame for turn in turns] + [current.frame], [turn.grid for turn in turns] + [current.grid])


def attention_kernels(device: torch.device) -> contextlib.AbstractContextManager:
    """On CUDA, scaled-dot-product attention without the cuDNN kernel.

    cuDNN builds an execution plan for every new shape, and a stream gives attention a new key
    length on every call: profiled on an H100 with a 7B model, that cost 0.3 ms of CPU per
    call, about 250 calls a second (vision windows and language layers), more than the GPU
    work itself. Flash and memory-efficient kernels have no such per-shape cost.
    """
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
