"""Real-time streaming inference: an incremental KV-cache engine for stream models.

``StreamingSession`` reads one frame a second and decides Silence/Standby/Response
with a prefill of only the new turn; ``reference.ReencodeSession`` is the original
whole-conversation approach, kept as the yardstick the engine must match. Pure
transformers and torch, no ms-swift import. Names are imported on first use, so the
command line can register ``streamo stream`` without loading torch.
"""

from importlib import import_module

_EXPORTS = {
    "AnswerDecoder": "decoding",
    "DecisionRule": "decoding",
    "PromptTokens": "prompt",
    "chunk_positions": "prompt",
    "StreamEvent": "session",
    "StreamingSession": "session",
    "EngineSettings": "backend",
    "StreamModel": "model",
    "ModelLoadError": "loading",
    "load_stream_model": "loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
