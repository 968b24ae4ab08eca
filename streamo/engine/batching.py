"""Many sessions' frames decided together: one vision pass and one language-model pass per step.

With ``--max-batch N`` above 1 the transformers engine gives the live server N model threads
(``Engine.model_threads``), each running one session's ``push_frame`` as before. Their model
work does not run in their own threads: each call (a frame through the vision encoder, a chunk
of tokens through the language model) is handed to the engine's ``Batcher``, which runs every
call waiting at that moment in one pass and hands each its own result. Nothing above the engine
knows: the scheduler's round-robin picks which sessions' frames are in flight, the batcher only
merges their calls.

How the ragged caches meet (docs/streaming.md, "Many sessions in one forward"): the sessions'
new tokens are packed side by side into one sequence of batch 1, so every weight matrix is read
once for all of them, and each token carries its own session's M-RoPE position, so every
session's positions are exactly its own. Attention is the one step that is per session: each
layer writes each session's new keys and values into that session's own ``GrowingLayer`` (no
copy of the cache, no padding) and runs scaled-dot-product attention of that session's queries
over that session's cache, with the causal mask transformers builds for it alone. Answers
decode in the same passes: a session decoding its answer sends one token, beside the others'
frames.

When a batched pass raises, every session's cache is cut back to what it held before the
pass, and each call runs again alone: only the call that fails alone fails.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, create_causal_mask, sdpa_mask

from .session import StreamingSession, attention_kernels

PACKED_ATTENTION = "streamo_packed"
"""The attention implementation of a batching engine's language model (registered below)."""


@dataclass
class _Vision:
    """One frame through the vision encoder."""

    pixels: torch.Tensor
    grid_thw: torch.Tensor
    result: Any = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class _Chunk:
    """Tokens appended to one session's cache; the result is the last position's hidden state
    (with ``logits``, the vocabulary logits from it)."""

    cache: Any
    ids: list[int]
    frames: Sequence[torch.Tensor]
    positions: torch.Tensor
    logits: bool = False
    result: Any = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class _Pack:
    """The sessions of one packed pass: where each one's tokens lie, its cache and its mask."""

    caches: list[Any]
    bounds: list[tuple[int, int]]
    masks: list[Any] = field(default_factory=list)
    views: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """The language model's cache call: each session's new keys and values go to its own cache."""
        self.views[layer_idx] = [cache.update(key_states[:, :, start:end], value_states[:, :, start:end], layer_idx)
                                 for cache, (start, end) in zip(self.caches, self.bounds)]
        return key_states, value_states


def packed_attention(module, query, key, value, attention_mask, **kwargs):
    """Per session: its queries over its own cache (``_Pack``); without a pack, plain sdpa."""
    pack: _Pack | None = kwargs.pop("streamo_pack", None)
    if pack is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    outputs = [
        sdpa_attention_forward(module, query[:, :, start:end], keys, values, mask, **kwargs)[0]
        for (start, end), (keys, values), mask in zip(pack.bounds, pack.views[module.layer_idx], pack.masks)
    ]
    return torch.cat(outputs, dim=1), None


AttentionInterface.register(PACKED_ATTENTION, packed_attention)
AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)  # each session's mask is the one sdpa gets unbatched


class Batcher:
    """Merges the model calls of the sessions in flight into one pass each, up to ``max_batch``.

    A pass starts as soon as every session inside a ``step`` is waiting on a call (or
    ``max_batch`` are): the first call alone runs at once, and calls that arrive while a pass runs
    go together in the next. Calls run in arrival order, so a call waits behind at most one
    pass. One of the waiting threads runs each pass (no extra thread)."""

    def __init__(self, model, max_batch: int) -> None:
        if max_batch < 2:
            raise ValueError(f"a batcher needs max_batch >= 2, got {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self.language = model.model.language_model
        if self.language.config._attn_implementation not in ("sdpa", PACKED_ATTENTION):
            raise ValueError("batched decisions need the model loaded with sdpa attention (load_stream_model's), "
                             f"not {self.language.config._attn_implementation}")
        self.language.config._attn_implementation = PACKED_ATTENTION
        self._image_token_id = model.config.image_token_id
        self._cond = threading.Condition()
        self._waiting: list[_Vision | _Chunk] = []
        self._active = 0
        self._busy = False
        self.passes = 0
        """Passes run so far (vision and language together count one)."""
        self.calls = 0
        """Calls those passes ran: ``calls / passes`` is the mean batch."""

    @contextmanager
    def step(self) -> Iterator[None]:
        """A session's model work (a frame, a first prompt): a pass waits for its next call."""
        with self._cond:
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def encode(self, pixels: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """One frame's visual embeddings."""
        return self._run(_Vision(pixels, grid_thw))

    def forward(self, cache, ids: list[int], frames: Sequence[torch.Tensor], positions: torch.Tensor,
                logits: bool = False) -> torch.Tensor:
        """Append ``ids`` (``frames`` at their image pads, ``positions`` (3, len)) to ``cache``;
        the last position's hidden state, or its vocabulary logits."""
        return self._run(_Chunk(cache, ids, frames, positions, logits))

    def forward_together(self, chunks: Sequence[tuple]) -> list[torch.Tensor]:
        """One pass over ``chunks`` ((cache, ids, frames, positions) each) in this thread, now: the
        pass ``forward`` calls share, as ``benchmarks/serve_load.py`` times it."""
        calls = [_Chunk(*chunk) for chunk in chunks]
        with torch.inference_mode(), attention_kernels(self.model.device):
            self._chunks(calls)
        return [call.result for call in calls]

    # ------------------------------------------------------------------ internals

    def _run(self, call):
        with self._cond:
            self._waiting.append(call)
            self._cond.notify_all()
            while not call.done:
                if not self._busy and self._waiting and len(self._waiting) >= min(self._active, self.max_batch):
                    batch = self._waiting[:self.max_batch]
                    del self._waiting[:self.max_batch]
                    self._busy = True
                    self._cond.release()
                    try:
                        self._execute(batch)
                    except BaseException as error:  # never leave a call waiting for ever
                        for undone in batch:
                            if not undone.done:
                                undone.error, undone.done = error, True
                        raise
                    finally:
                        self._cond.acquire()
                        self._busy = False
                        self._cond.notify_all()
                else:
                    self._cond.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def _execute(self, batch: list) -> None:
        """Run ``batch``; every call ends done, with its result or its own error."""
        self.passes += 1
        self.calls += len(batch)
        with torch.inference_mode(), attention_kernels(self.model.device):
            for kind, run in ((_Vision, self._vision), (_Chunk, self._chunks)):
                calls = [call for call in batch if isinstance(call, kind)]
                if not calls:
                    continue
                try:
                    run(calls)
                except Exception as error:
                    if len(calls) == 1:
                        calls[0].error = error
                    else:
                        for call in calls:  # alone, so that only the call that fails alone fails
                            try:
                                run([call])
                            except Exception as alone:
                                call.error = alone
                for call in calls:
                    call.done = True

    def _vision(self, calls: list[_Vision]) -> None:
        pixels = torch.cat([call.pixels for call in calls]).to(self.model.device)
        grid_thw = torch.cat([call.grid_thw for call in calls]).to(self.model.device)
        embeds = self.model.model.get_image_features(pixels, grid_thw, return_dict=True).pooler_output
        for call, frame in zip(calls, embeds):
            call.result = frame

    def _chunks(self, calls: list[_Chunk]) -> None:
        device = self.model.device
        before = [[layer.get_seq_length() for layer in call.cache.layers] for call in calls]
        try:
            bounds, start = [], 0
            for call in calls:
                bounds.append((start, start + len(call.ids)))
                start += len(call.ids)
            input_ids = torch.tensor([[token for call in calls for token in call.ids]], device=device)
            embeds = self.language.get_input_embeddings()(input_ids)
            frames = [frame for call in calls for frame in call.frames]
            if frames:
                mask = (input_ids == self._image_token_id).unsqueeze(-1).expand_as(embeds)
                embeds = embeds.masked_scatter(mask, torch.cat(frames).to(embeds.dtype))
            pack = _Pack([call.cache for call in calls], bounds)
            pack.masks = [create_causal_mask(config=self.language.config, inputs_embeds=embeds[:, lo:hi],
                                             attention_mask=None, past_key_values=call.cache)
                          for call, (lo, hi) in zip(calls, bounds)]
            positions = torch.cat([call.positions for call in calls], dim=1).unsqueeze(1).to(device)
            hidden = self.language(inputs_embeds=embeds, position_ids=positions, past_key_values=pack, use_cache=True,
                                   attention_mask={"full_attention": None}, streamo_pack=pack).last_hidden_state[0]
        except Exception:
            for call, lengths in zip(calls, before):  # every cache as it was before this pass
                for layer, length in zip(call.cache.layers, lengths):
                    if layer.get_seq_length() > length:
                        layer.crop(length - layer.get_seq_length())
            raise
        last = hidden[[hi - 1 for _, hi in bounds]]
        wanted = [row for row, call in enumerate(calls) if call.logits]
        logits = self.model.lm_head(last[wanted]) if wanted else None
        for row, call in enumerate(calls):
            call.result = logits[wanted.index(row)] if call.logits else last[row]


class BatchedSession(StreamingSession):
    """A ``StreamingSession`` whose model work goes through the engine's ``Batcher``; the same
    tokens, positions, cache and decisions, so every state and answer is the unbatched session's."""

    def __init__(self, model, processor, batcher: Batcher, **options: Any) -> None:
        self._batcher = batcher
        with batcher.step():
            super().__init__(model, processor, **options)

    def push_frame(self, image, t: float | None = None):
        with self._batcher.step():
            return super().push_frame(image, t)

    def _encode_frame(self, image):
        pixels, grid_thw, grid = self._frame_inputs(image)
        return self._batcher.encode(pixels, grid_thw), grid

    def _forward(self, ids, frames, grids, logits: bool = False) -> torch.Tensor:
        positions, next_position = self._positions(ids, grids)
        result = self._batcher.forward(self._cache, ids, frames, positions, logits)
        self._ids.extend(ids)
        self._next_position = next_position
        return result

    def _logits(self, ids: list[int]) -> torch.Tensor:
        return self._forward(ids, [], [], logits=True)
