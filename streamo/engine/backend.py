"""What runs a stream model: the contract every backend keeps, and the registry of backends.

A backend loads a checkpoint into an ``Engine``, which opens ``Session``s: the per-second
conversations that ``streamo stream``, ``eval``, ``ovobench`` and ``serve`` drive, whatever
does the model work. A new backend is one module (its ``load`` and its sessions, sharing
``context.ContextSession``) plus one ``register_backend`` line below. Nothing here imports
torch: the command line lists the backends without loading one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any, Mapping, Protocol, runtime_checkable

from ..protocol import DEFAULT_SYSTEM_PROMPT

if TYPE_CHECKING:
    from .decoding import DecisionRule
    from .session import StreamEvent


@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs; one fresh session per sample or stream. It lives beside the contract
    because every backend's ``load`` takes it (``model`` builds on both, so neither needs the other)."""

    fps: float = 1.0
    window: float | None = None
    eviction_block: float | None = None
    response_threshold: float | None = None
    max_new_tokens: int = 128
    max_pixels: int | None = None
    """None: the checkpoint's training budget (``training_max_pixels``)."""
    max_context_tokens: int | None = None
    """Tokens a session's context may hold; None: the checkpoint's ``max_position_embeddings``
    (on vLLM, its ``max_model_len``)."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    backend: str = "transformers"
    """What runs the model: a name of ``backend.BACKENDS`` (``transformers``, the KV-cache engine, or ``vllm``)."""
    vllm: Mapping[str, Any] = field(default_factory=dict)
    """``VllmOptions`` fields for the vllm backend."""
    max_batch: int = 1
    """Sessions' frames the transformers backend decides in one forward (1: one at a time); vLLM batches on its own."""


@runtime_checkable
class Session(Protocol):
    """One stream: questions in (``ask``), one decision per frame out (``push_frame``).

    ``decision`` may be replaced between frames (the live server's per-session bias, a forced
    answer on an OVO-Bench probe); a session is used by one thread at a time."""

    decision: DecisionRule

    def ask(self, text: str, t: float | None = None) -> int: ...

    def push_frame(self, image: Any, t: float | None = None) -> StreamEvent: ...

    @property
    def waiting_questions(self) -> list[tuple[int, str]]: ...

    @property
    def cache_length(self) -> int: ...

    def context_ids(self) -> list[int]: ...

    def context_messages(self) -> list[dict[str, str]]: ...


class Engine(Protocol):
    """A loaded checkpoint that opens sessions."""

    position_limit: int | None
    """Tokens one session's context may hold at most (None: no limit known)."""

    def session(self, **options: Any) -> Session:
        """A fresh session; ``options`` are ``ContextSession``'s (fps, window, decision, budgets ...)."""
        ...

    def model_threads(self, max_sessions: int) -> int:
        """Threads that should run sessions' work at once for ``max_sessions`` live sessions."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str
    """The ``--backend`` value."""
    summary: str
    """What ``--backend``'s help says of it."""

    def load(self, path: str | os.PathLike[str], settings: EngineSettings, max_pixels: int,
             device: str | None) -> Engine:
        """The checkpoint at ``path`` ready for sessions, or a ``ModelLoadError`` that says why not."""
        ...


@dataclass(frozen=True)
class LazyBackend:
    """A backend whose ``load`` lives in ``module`` and is imported on first use."""

    name: str
    summary: str
    module: str

    def load(self, path: str | os.PathLike[str], settings: EngineSettings, max_pixels: int,
             device: str | None) -> Engine:
        return import_module(self.module).load(path, settings, max_pixels, device)


BACKENDS: dict[str, Backend] = {}
"""The backends by name, in the order ``--backend`` lists them."""


def register_backend(backend: Backend) -> Backend:
    if backend.name in BACKENDS:
        raise ValueError(f"backend {backend.name!r} is already registered")
    BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    """The backend called ``name``; a ``ModelLoadError`` naming the choices when there is none."""
    from .loading import ModelLoadError

    if name not in BACKENDS:
        raise ModelLoadError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    return BACKENDS[name]


register_backend(LazyBackend("transformers", "the KV-cache engine, exact, runs anywhere",
                             "streamo.engine.transformers_backend"))
register_backend(LazyBackend("vllm", "batched sessions, paged KV cache, several GPUs; needs the vllm extra",
                             "streamo.engine.vllm_backend"))
