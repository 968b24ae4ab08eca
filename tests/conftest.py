"""Shared fixtures: paths to the shipped example and the reference data beside the checkout."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO.parent / "shared" / "reference" / "example"


@pytest.fixture
def reference_dir() -> Path:
    if not SHARED_REFERENCE.is_dir():
        pytest.skip("../shared/reference/example is absent")
    return SHARED_REFERENCE


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random Qwen2.5-VL (no state tokens: training adds them), built once per session."""
    from streamo.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl")


@pytest.fixture(scope="session")
def stream_model(tmp_path_factory):
    """The fitted tiny stream model (``engine/stream_model.py``): it plays a planned stream exactly."""
    from engine.stream_model import fitted_stream_model

    return fitted_stream_model(tmp_path_factory.mktemp("models") / "fitted")
