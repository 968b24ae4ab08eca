"""Fixtures for the ms-swift plugin tests: the tiny model's processor and the stream template."""

import json
from pathlib import Path

import pytest

pytest.importorskip("swift")

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "dataset" / "example" / "stream_format.json"
SPECIAL_TOKENS_FILE = REPO / "configs" / "special_tokens.txt"
SMALL_FRAMES = 56 * 56  # 4 visual tokens per frame keeps every encoding and training step small


@pytest.fixture(scope="session")
def example_rows() -> list[dict]:
    if not EXAMPLE.is_file():
        pytest.skip("dataset/example is absent")
    rows = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    for row in rows:
        row["videos"] = [str(REPO / video) for video in row["videos"]]
    return rows


@pytest.fixture(scope="session")
def stream_processor(tiny_model_dir):
    """The tiny model's processor with the state tokens added the way training adds them."""
    from swift.model import get_model_processor

    tokens = SPECIAL_TOKENS_FILE.read_text(encoding="utf-8").split()
    _, processor = get_model_processor(str(tiny_model_dir), load_model=False, new_special_tokens=tokens)
    return processor


@pytest.fixture
def make_template(stream_processor, monkeypatch):
    from streamo.swift_plugin.template import TEMPLATE_TYPE, register_stream_template

    monkeypatch.delenv("STREAMO_FRAME_CACHE", raising=False)
    monkeypatch.setenv("MAX_PIXELS", str(SMALL_FRAMES))
    register_stream_template()

    def make(max_length=None, processor=stream_processor):
        from swift.template import get_template

        template = get_template(processor, template_type=TEMPLATE_TYPE, max_length=max_length)
        template.set_mode("train")
        return template

    return make
