"""``streamo serve --max-batch``: the server and its scheduler unchanged over batched decisions.

Over real sockets, eight sessions at once on a batching engine each get their exact planned
stream; at the scheduler, a session closed while its frame is in a pass is forgotten while the
pass goes on, and sessions keep their round-robin turns when frames exceed the batch.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from engine.stream_model import ANSWERS, MAX_PIXELS, PLAN, QUESTION, frame
from streamo.engine.decoding import DecisionRule
from streamo.engine.model import EngineSettings, StreamModel
from streamo.engine.transformers_backend import TransformersEngine
from streamo.live.client import LiveClient, stream_video
from streamo.live.scheduler import Decided, Scheduler
from streamo.protocol import State

from .conftest import running_server, wait_until


@pytest.fixture(scope="module")
def batched_model(stream_model) -> StreamModel:
    """The fitted stream model loaded as ``streamo serve --max-batch 8`` loads it."""
    return StreamModel(stream_model.directory, EngineSettings(window=None, max_pixels=MAX_PIXELS, max_batch=8), "cpu")


def test_eight_sessions_in_shared_passes_each_get_their_own_exact_stream(batched_model):
    frames = [(turn, frame(turn)) for turn in range(len(PLAN))]

    async def one():
        client = await LiveClient.connect(server.url)
        return await stream_video(client, frames, ((0.0, QUESTION),))

    async def many():
        return await asyncio.gather(*(one() for _ in range(8)))

    with running_server(batched_model) as server:
        assert server.state.model_threads == 8
        results = asyncio.run(many())
        for result in results:
            assert [event.state for event in result.events] == PLAN
            assert [event.text for event in result.events if event.state is State.RESPONSE] == [ANSWERS[3], ANSWERS[6]]
            assert result.closed.frames == len(PLAN) and result.closed.dropped == 0 and not result.errors
        batcher = batched_model.engine.batcher
        assert batcher.calls / batcher.passes > 1.5
        wait_until(lambda: server.state.scheduler.open_sessions == 0)


def _scheduler(stream_model, max_batch: int, threads: int):
    engine = TransformersEngine(stream_model.model, stream_model.processor, max_batch=max_batch)
    scheduler = Scheduler(lambda: engine.session(max_pixels=MAX_PIXELS, max_new_tokens=12), max_queue=8, threads=threads)
    return engine, scheduler


def _wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_session_closed_while_its_frame_is_in_a_pass_is_forgotten_and_the_pass_goes_on(stream_model):
    engine, scheduler = _scheduler(stream_model, max_batch=3, threads=3)
    delivered: dict[str, list] = {name: [] for name in "abc"}
    in_pass, go_on = threading.Event(), threading.Event()
    chunks = engine.batcher._chunks

    def held_frame_pass(calls):
        """The pass that reads the three frames waits, inside, until "b" has been closed."""
        if any(call.frames for call in calls):
            in_pass.set()
            assert go_on.wait(60)
        chunks(calls)

    engine.batcher._chunks = held_frame_pass
    try:
        with engine.batcher.step():  # held: passes start only when all three sessions' calls wait
            for name in "abc":
                scheduler.open(name, delivered[name].append, DecisionRule())
                scheduler.submit_frame(name, frame(0), 0.0)
            assert in_pass.wait(60)
            scheduler.remove("b")
            go_on.set()
        _wait_for(lambda: len(delivered["a"]) == len(delivered["c"]) == 1)
        for name in "ac":
            scheduler.submit_frame(name, frame(1), 1.0)
        _wait_for(lambda: len(delivered["a"]) == len(delivered["c"]) == 2)
        assert all(isinstance(result, Decided) for name in "ac" for result in delivered[name])
        assert delivered["b"] == [] and scheduler.open_sessions == 2
    finally:
        go_on.set()
        scheduler.stop()


def test_frames_beyond_the_batch_keep_their_round_robin_turns(stream_model):
    """Six sessions with four frames each, two in flight at a time: at every moment no session
    has more than one batch of decisions over another."""
    engine, scheduler = _scheduler(stream_model, max_batch=3, threads=2)
    names = [f"s{index}" for index in range(6)]
    order: list[str] = []
    lock = threading.Lock()

    def deliver(name):
        def record(result):
            assert isinstance(result, Decided)
            with lock:
                order.append(name)
        return record

    try:
        with engine.batcher.step():  # held: every frame is queued before the first pass
            for name in names:
                scheduler.open(name, deliver(name), DecisionRule())
            for turn in range(4):
                for name in names:
                    scheduler.submit_frame(name, frame(turn), float(turn))
        _wait_for(lambda: len(order) == 24)
    finally:
        scheduler.stop()
    counts = dict.fromkeys(names, 0)
    for name in order:
        counts[name] += 1
        assert max(counts.values()) - min(counts.values()) <= 2, order
    assert engine.batcher.calls / engine.batcher.passes > 1.3


def test_max_batch_on_vllm_is_refused_in_one_line_before_anything_loads(tmp_path, capsys):
    from streamo.cli import main

    assert main(["serve", "--model", str(tmp_path), "--backend", "vllm", "--max-batch", "4"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "--max-batch" in message and "vllm" in message
