"""Fixtures of the engine tests: the fitted tiny stream model (see ``stream_model``)."""

from __future__ import annotations

import pytest
import torch

from .stream_model import StreamModel, fit_output_rows


@pytest.fixture(scope="session")
def stream_model(tmp_path_factory) -> StreamModel:
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from streamo.tiny_model import TinyModelSpec, build_tiny_model

    base = build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-state", TinyModelSpec(with_state_tokens=True))
    processor = AutoProcessor.from_pretrained(base)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32).eval()
    fit_output_rows(model, processor)
    directory = tmp_path_factory.mktemp("models") / "fitted"
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return StreamModel(model, processor, directory)
