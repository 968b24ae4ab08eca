"""A real ``streamo serve`` app on a free loopback port (uvicorn in a thread of the test process,
so tests can also look at the scheduler), driven by real WebSocket clients."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.stream_model import MAX_PIXELS
from streamo.live.listener import build_server
from streamo.live.server import AppState, ServeSettings
from streamo.engine.model import EngineSettings, StreamModel


REPO = Path(__file__).resolve().parents[2]
EXAMPLE_VIDEO = REPO / "dataset" / "example" / "videos" / "synth_0000.mp4"
EXAMPLE_RAW = REPO / "dataset" / "example" / "raw_data.json"


SAMPLE = 2
"""The shipped example's Narration sample on synth_0000 (the demo's): silence, standby and response with answers."""


@dataclass
class Running:
    url: str
    state: AppState


@pytest.fixture(scope="session")
def loaded_model(stream_model) -> StreamModel:
    """The fitted stream model loaded as ``streamo serve`` loads a checkpoint."""
    return StreamModel(stream_model.directory, EngineSettings(window=None, max_pixels=MAX_PIXELS), "cpu")


@pytest.fixture(scope="session")
def example_model(tmp_path_factory) -> Path:
    """The demo's page model, built as scripts/demo.sh builds it (step 5): the tiny model with the
    state tokens, its output head fitted by ``streamo fit-head`` to play sample ``SAMPLE`` of the
    shipped example exactly, with margins wide enough that the few pixel levels a browser's
    decoder differs by cannot flip a decision. (The demo's 80-step training is not repeated.)"""
    from streamo.cli import main

    folder = tmp_path_factory.mktemp("models")
    example = EXAMPLE_RAW.parent
    assert main(["tiny-model", "--with-state-tokens", str(folder / "tiny-states")]) == 0
    assert main(["fit-head", "--model", str(folder / "tiny-states"), "--data", str(example / "stream_format.json"),
                 "--video-prefix", str(REPO), "--sample", str(SAMPLE), "--max-pixels", str(MAX_PIXELS),
                 "--out", str(folder / "example-fitted")]) == 0
    return folder / "example-fitted"


def example_question() -> str:
    """The demo's question: the first of sample ``SAMPLE``."""
    import json

    from streamo.protocol import parse_stream_messages

    record = json.loads((EXAMPLE_RAW.parent / "stream_format.json").read_text())[SAMPLE]
    return parse_stream_messages(record["messages"]).turns[0].questions[0]


@contextmanager
def running_server(model: StreamModel, settings: ServeSettings | None = None, window: float | None = None,
                   response_threshold: float | None = None, max_context_tokens: int | None = None,
                   name: str = "fitted-tiny"):
    settings = settings or ServeSettings()
    engine = model.with_settings(EngineSettings(window=window, response_threshold=response_threshold,
                                                max_pixels=model.max_pixels, max_context_tokens=max_context_tokens))
    state = AppState(settings, name, engine)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = build_server(state, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Running(f"http://127.0.0.1:{port}", state)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


@pytest.fixture
def server(loaded_model):
    with running_server(loaded_model) as running:
        yield running


@pytest.fixture(scope="module")
def planned_frames_dir(tmp_path_factory) -> Path:
    """The planned frames (the fitted model's plan) as lossless pictures, one per second."""
    from engine.stream_model import PLAN, frame

    folder = tmp_path_factory.mktemp("frames")
    for turn in range(len(PLAN)):
        frame(turn).save(folder / f"frame_{turn:04d}.png")
    return folder


def wait_until(condition, seconds: float = 10.0) -> None:
    """Poll ``condition`` (the server settles sessions asynchronously after a client leaves)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def example_questions(client, sample: int = 0) -> list[tuple[float, str]]:
    """The questions of raw sample ``sample`` of the shipped example, placed as ``streamo client`` places them."""
    import argparse

    from streamo.engine.command import gather_questions
    from streamo.live.client import open_video

    source = open_video(client, str(EXAMPLE_VIDEO))
    args = argparse.Namespace(at=[], question=[], questions=EXAMPLE_RAW, sample=sample, fps=1.0)
    return gather_questions(args, source)
