"""Where ``streamo stream`` takes the frame budget from, and which directories it refuses."""

import json

import pytest

from streamo.engine.loading import ModelLoadError, load_stream_model, training_max_pixels
from streamo.video import MAX_PIXELS


def test_frame_budget_comes_from_the_checkpoint_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MAX_PIXELS", raising=False)
    assert training_max_pixels(tmp_path) == MAX_PIXELS
    monkeypatch.setenv("MAX_PIXELS", "50176")
    assert training_max_pixels(tmp_path) == 50176
    (tmp_path / "args.json").write_text(json.dumps({"max_pixels": 3136}), encoding="utf-8")
    assert training_max_pixels(tmp_path) == 3136
    (tmp_path / "args.json").write_text(json.dumps({"max_pixels": None}), encoding="utf-8")
    assert training_max_pixels(tmp_path) == 50176


def test_non_checkpoints_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model directory"):
        load_stream_model(tmp_path / "missing")
    (tmp_path / "adapter_config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="merge it first"):
        load_stream_model(tmp_path)
