"""The ``transformers`` backend: a checkpoint loaded with transformers, its sessions the exact
KV-cache ``StreamingSession`` or, with ``max_batch`` above 1, ``batching.BatchedSession``."""

from __future__ import annotations

from typing import Any

from .batching import BatchedSession, Batcher
from .session import StreamingSession


class TransformersEngine:
    """A checkpoint loaded with transformers: every session reads the one model.

    ``max_batch`` 1: one session's work at a time, in one model thread. Above 1: up to
    ``max_batch`` sessions' frames in flight, their model work merged into shared passes
    (``batching.Batcher``)."""

    def __init__(self, model, processor, max_batch: int = 1) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model, self.processor = model, processor
        self.max_batch = max_batch
        config = model.config
        self.position_limit = getattr(getattr(config, "text_config", config), "max_position_embeddings", None)
        self.batcher = None
        if max_batch > 1:
            self.batcher = Batcher(model, max_batch)

    def session(self, **options: Any) -> StreamingSession:
        if self.batcher is None:
            return StreamingSession(self.model, self.processor, **options)
        return BatchedSession(self.model, self.processor, self.batcher, **options)

    def model_threads(self, max_sessions: int) -> int:
        """One per frame a batch may hold (one when unbatched): each runs one session's frame."""
        return max(1, min(self.max_batch, max_sessions))

    def close(self) -> None:
        """Nothing to stop: the weights go with the last reference."""


def load(path, settings, max_pixels: int, device: str | None) -> TransformersEngine:
    """The ``transformers`` backend (``backend.BACKENDS``): the checkpoint on ``device``."""
    from .loading import load_stream_model

    return TransformersEngine(*load_stream_model(path, device), max_batch=settings.max_batch)
