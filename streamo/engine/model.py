"""``StreamModel``: a loaded checkpoint and the settings to open sessions on it, on any backend.

Every command that runs a model (``streamo stream``, ``serve``, ``eval --model``,
``ovobench --model``) loads it here from the same ``EngineSettings``; what runs the model is
the backend the settings name (``backend.BACKENDS``). Torch is imported on first use, so the
command line stays fast.
"""

from __future__ import annotations

import argparse
import copy
import os
from typing import Any, Iterator

from ..protocol import DEFAULT_SYSTEM_PROMPT, State
from .backend import EngineSettings, Session, get_backend


class StreamModel:
    """A loaded checkpoint and the settings to open sessions on it, on any backend."""

    def __init__(self, path: str | os.PathLike[str], settings: EngineSettings, device: str | None = None) -> None:
        from .loading import training_max_pixels

        backend = get_backend(settings.backend)
        self.settings = settings
        self.backend = backend.name
        self.max_pixels = settings.max_pixels or training_max_pixels(path)
        self.engine = backend.load(path, settings, self.max_pixels, device)
        self.position_limit = self.engine.position_limit

    @property
    def max_context_tokens(self) -> int | None:
        """The token budget of every session (``EngineSettings.max_context_tokens``, capped by the model's limit)."""
        given = self.settings.max_context_tokens
        limits = [limit for limit in (given, self.position_limit) if limit]
        return min(limits) if limits else None

    def model_threads(self, max_sessions: int) -> int:
        """Threads that should run live sessions' work at once (the backend's choice)."""
        return self.engine.model_threads(max_sessions)

    def with_settings(self, settings: EngineSettings) -> "StreamModel":
        """The same loaded weights with other engine settings (no second copy of the model)."""
        other = copy.copy(self)
        other.settings = settings
        other.max_pixels = settings.max_pixels or self.max_pixels
        return other

    def session(self, bias: dict[State, float] | None = None) -> Session:
        from .decoding import DecisionRule

        settings = self.settings
        return self.engine.session(
            fps=settings.fps, system_prompt=settings.system_prompt, window=settings.window,
            eviction_block=settings.eviction_block,
            decision=DecisionRule(bias=bias or {}, response_threshold=settings.response_threshold),
            max_new_tokens=settings.max_new_tokens, max_pixels=self.max_pixels,
            max_context_tokens=self.max_context_tokens,
        )

    def close(self) -> None:
        """Let the backend go (vLLM's engine processes; nothing to do for transformers)."""
        self.engine.close()

    def frames(self, video: str, turns: int) -> Iterator[tuple[int, Any]]:
        """(turn, image) of the first ``turns`` turns of ``video``; raises VideoError when unreadable."""
        from ..video import MIN_PIXELS, iter_frames

        for sampled in iter_frames(video, self.settings.fps, self.max_pixels, MIN_PIXELS, turns=turns):
            yield sampled.turn, sampled.image


def engine_settings(args: argparse.Namespace) -> EngineSettings:
    """The settings of ``engine.command.add_engine_options``' flags."""
    return EngineSettings(
        fps=args.fps, window=args.window, eviction_block=args.eviction_block,
        response_threshold=args.response_threshold, max_new_tokens=args.max_new_tokens, max_pixels=args.max_pixels,
        max_context_tokens=args.max_context_tokens, system_prompt=args.system_prompt or DEFAULT_SYSTEM_PROMPT, backend=args.backend, vllm=vllm_options(args),
        max_batch=getattr(args, "max_batch", 1),
    )


def vllm_options(args: argparse.Namespace) -> dict[str, Any]:
    """The vLLM flags of ``add_engine_options`` as ``VllmOptions`` fields."""
    return {
        "tensor_parallel_size": args.tensor_parallel_size, "pipeline_parallel_size": args.pipeline_parallel_size,
        "data_parallel_size": args.data_parallel_size, "max_model_len": args.max_model_len,
        "engine_args": dict(args.vllm_arg),
    }
