"""A KV cache that grows without copying itself on every step.

transformers' ``DynamicLayer`` concatenates the whole cache with each new chunk, so each
forward pass copies every cached key and value: on a long stream that copy costs more than
the new tokens' compute (at 600 s of a 7B model, gigabytes per decode step). ``GrowingLayer``
keeps keys and values in buffers with spare room (grown by half when full) and writes only
the new tokens; the layer exposes views of the filled part, so attention code sees the
usual tensors. Cropping only moves the fill mark, so a windowed session re-uses its
buffers and its memory stays flat.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

_MIN_CAPACITY = 256


class GrowingLayer(DynamicLayer):
    """One layer's keys and values in amortised-growth buffers."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_buffer = self._value_buffer = None
        self._length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._length + key_states.shape[-2]
        if self._key_buffer is None or end > self._key_buffer.shape[-2]:
            self._grow(key_states, value_states, end)
        self._key_buffer[..., self._length:end, :] = key_states
        self._value_buffer[..., self._length:end, :] = value_states
        self._set_length(end)
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> None:
        old = 0 if self._key_buffer is None else self._key_buffer.shape[-2]
        capacity = max(needed, old + old // 2, _MIN_CAPACITY)
        keys = key_states.new_empty((*key_states.shape[:-2], capacity, key_states.shape[-1]))
        values = value_states.new_empty((*value_states.shape[:-2], capacity, value_states.shape[-1]))
        if self._length:
            keys[..., : self._length, :] = self._key_buffer[..., : self._length, :]
            values[..., : self._length, :] = self._value_buffer[..., : self._length, :]
        self._key_buffer, self._value_buffer = keys, values

    def _set_length(self, length: int) -> None:
        self._length = length
        self.keys = self._key_buffer[..., :length, :]
        self.values = self._value_buffer[..., :length, :]

    def get_seq_length(self) -> int:
        return self._length if self.is_initialized else 0

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last ``-tokens_to_remove`` tokens (a negative count, as transformers now asks)."""
        if tokens_to_remove > 0:
            raise ValueError("crop takes the negative number of tokens to remove")
        if self.is_initialized and self._key_buffer is not None:
            self._set_length(max(self._length + tokens_to_remove, 0))

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        self._length = 0
        super().reset()


def stream_cache(config) -> Cache:
    """A cache of ``GrowingLayer``s for a model whose layers all use full attention (Qwen2.5-VL
    as released); transformers' ``DynamicCache`` for any other layout."""
    text_config = config.get_text_config(decoder=True)
    layer_types = getattr(text_config, "layer_types", None) or ["full_attention"] * text_config.num_hidden_layers
    if any(kind != "full_attention" for kind in layer_types):
        return DynamicCache(config=config)
    return Cache(layers=[GrowingLayer() for _ in layer_types])
