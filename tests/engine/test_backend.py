"""The backend registry: a registered backend is reachable from every command and runs
through the same ``StreamModel`` path; an unknown one is a one-line error."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from streamo.cli import main
from streamo.engine.backend import BACKENDS, Session, get_backend, register_backend
from streamo.engine.loading import ModelLoadError
from streamo.engine.model import EngineSettings, StreamModel
from streamo.protocol import time_tag

from .stream_model import ANSWERS, MAX_PIXELS, PLAN, QUESTION
from .test_command import frame_dir  # noqa: F401 (the planned frames as pictures)


class RecordingEngine:
    """The transformers engine, noting what the model layer asks of it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.position_limit = inner.position_limit
        self.session_options: list[dict] = []
        self.closed = False

    def session(self, **options):
        self.session_options.append(options)
        return self.inner.session(**options)

    def model_threads(self, max_sessions: int) -> int:
        return max(1, max_sessions // 2)

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeBackend:
    name: str = "fake"
    summary: str = "a test double around the KV-cache engine"
    loaded: list[RecordingEngine] = field(default_factory=list)

    def load(self, path, settings, max_pixels, device):
        engine = RecordingEngine(BACKENDS["transformers"].load(path, settings, max_pixels, device))
        self.loaded.append(engine)
        return engine


@pytest.fixture
def fake():
    backend = register_backend(FakeBackend())
    yield backend
    del BACKENDS[backend.name]


def test_a_registered_backend_plays_a_stream_through_the_command(fake, stream_model, frame_dir, capsys):
    with pytest.raises(SystemExit):
        main(["stream", "--help"])
    assert "fake (a test double around the KV-cache engine)" in " ".join(capsys.readouterr().out.split())

    code = main(["stream", "--model", str(stream_model.directory), "--max-pixels", str(MAX_PIXELS),
                 "--video", str(frame_dir), "--question", QUESTION, "--at", "0", "--backend", "fake"])
    assert code == 0
    expected = []
    for turn, state in enumerate(PLAN):
        line = f"{time_tag(turn):<11}  {state.value:<8}"
        expected.append(f"{line}  {ANSWERS[turn]}" if turn in ANSWERS else line.rstrip())
    assert capsys.readouterr().out.splitlines() == expected
    [engine] = fake.loaded
    [options] = engine.session_options
    assert options["window"] is None and options["max_pixels"] == MAX_PIXELS
    assert engine.closed


def test_the_backend_chooses_the_servers_model_threads(fake, stream_model):
    from streamo.live.server import AppState, ServeSettings

    model = StreamModel(stream_model.directory, EngineSettings(backend="fake", max_pixels=MAX_PIXELS), "cpu")
    state = AppState(ServeSettings(max_sessions=6), "fitted-tiny", model)
    assert state.model_threads == 3
    assert state.ready("s").backend == "fake"
    assert isinstance(model.session(), Session)


def test_an_unknown_backend_is_a_one_line_error(stream_model, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["stream", "--model", str(stream_model.directory), "--video", "x", "--question", "Q", "--backend", "nope"])
    assert exited.value.code == 2
    assert "argument --backend: invalid choice: 'nope' (choose from 'transformers', 'vllm')" in capsys.readouterr().err
    with pytest.raises(ModelLoadError, match=r"^unknown backend 'nope' \(choose from transformers, vllm\)$"):
        StreamModel(stream_model.directory, EngineSettings(backend="nope"))
    with pytest.raises(ModelLoadError):
        get_backend("nope")


def test_a_name_is_registered_once(fake):
    with pytest.raises(ValueError, match="already registered"):
        register_backend(FakeBackend())
