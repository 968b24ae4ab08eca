"""The random models the scripts measure, built locally (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

from streamo.tiny_model import TinyModelSpec, build_full_size_model, build_tiny_model


def build_model(folder: Path, config: str, device: str = "cpu", with_state_tokens: bool = False,
                hidden_size: int = TinyModelSpec.hidden_size) -> Path:
    """``config`` "tiny": the tiny Qwen2.5-VL, ``hidden_size`` wide; "3b" / "7b": a random
    full-size one initialised on ``device``. Reused when already built."""
    if config == "tiny":
        return build_tiny_model(folder, TinyModelSpec(hidden_size=hidden_size, with_state_tokens=with_state_tokens))
    return build_full_size_model(folder, config, device, with_state_tokens=with_state_tokens)
