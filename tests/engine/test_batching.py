"""Batched decisions (``--max-batch``): every session's states, answers, context and cache equal
the unbatched engine's, whatever else shares its passes.

Sessions run in threads as the live server's model threads run them; the unbatched reference
runs the same streams one after the other on ``max_batch`` 1. Probabilities agree within
``PROBABILITY_TOLERANCE`` (docs/streaming.md derives it: float32, a changed summation order).
"""

from __future__ import annotations

import threading
import time

import pytest

from streamo.engine.transformers_backend import TransformersEngine
from streamo.protocol import State

from .stream_model import MAX_PIXELS, QUESTION, frame

PROBABILITY_TOLERANCE = 1e-4
FRAMES = 10


def _plan(index: int) -> dict:
    """Session ``index``'s stream: its own frames (square ones, fewer visual tokens, on every
    third), a different length, a window that evicts at its own seconds on every other session,
    a token budget on one, and questions asked in the middle."""
    size = (56, 56) if index % 3 == 1 else None
    pictures = [frame(turn + 31 * index) for turn in range(FRAMES - index % 3)]
    return {
        "frames": [picture.resize(size) for picture in pictures] if size else pictures,
        "window": 4.0 if index % 2 else None,
        "max_context_tokens": 230 if index % 4 == 2 else None,
        "questions": {0: QUESTION, 3 + index % 4: "Is it still there?", 5: "What colour is it?"},
    }


def _play(session, plan: dict) -> list:
    events = []
    for turn, picture in enumerate(plan["frames"]):
        if turn in plan["questions"]:
            session.ask(plan["questions"][turn], turn)
        events.append(session.push_frame(picture, turn))
    return events


def _open(engine, plan: dict):
    return engine.session(max_pixels=MAX_PIXELS, max_new_tokens=12, window=plan["window"],
                          max_context_tokens=plan["max_context_tokens"])


def _threads(targets) -> None:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a batched session never finished"


@pytest.fixture(scope="module")
def reference(stream_model) -> dict:
    """Each of 8 sessions' stream on the unbatched engine: events, context and cache length."""
    engine = TransformersEngine(stream_model.model, stream_model.processor)
    played = {}
    for index in range(8):
        plan = _plan(index)
        session = _open(engine, plan)
        played[index] = (_play(session, plan), session.context_ids(), session.cache_length)
    return played


def _same(ours, theirs) -> None:
    assert (ours.turn, ours.state, ours.text, ours.questions, ours.context_tokens, ours.cached_tokens) == (
        theirs.turn, theirs.state, theirs.text, theirs.questions, theirs.context_tokens, theirs.cached_tokens)
    for state in State:
        assert ours.probabilities[state] == pytest.approx(theirs.probabilities[state], abs=PROBABILITY_TOLERANCE)


@pytest.mark.parametrize("count", [1, 2, 8])
def test_batched_sessions_decide_as_the_unbatched_engine(stream_model, reference, count):
    engine = TransformersEngine(stream_model.model, stream_model.processor, max_batch=8)
    assert engine.model_threads(count) == count
    sessions = {index: _open(engine, _plan(index)) for index in range(count)}
    played = {}

    def run(index):
        played[index] = _play(sessions[index], _plan(index))

    _threads([lambda index=index: run(index) for index in range(count)])
    for index in range(count):
        events, context, cache_length = reference[index]
        assert len(played[index]) == len(events)
        for ours, theirs in zip(played[index], events):
            _same(ours, theirs)
        assert sessions[index].context_ids() == context and sessions[index].cache_length == cache_length
    every = [event for index in range(count) for event in played[index]]
    assert any(event.state is State.RESPONSE and event.text for event in every)
    evicted = [index for index in range(count) if any(  # the window re-read: only the system prompt came from the cache
        later.cached_tokens < earlier.context_tokens for earlier, later in zip(played[index], played[index][1:]))]
    assert evicted == [index for index in range(count) if _plan(index)["window"] or _plan(index)["max_context_tokens"]]
    batcher = engine.batcher
    if count == 1:
        assert batcher.calls == batcher.passes
    else:  # the sessions did share passes
        assert batcher.calls / batcher.passes > 1.3


def test_a_call_that_fails_fails_only_its_session(stream_model):
    """Three frames in one pass, one of them broken: the pass is rolled back, the two others are
    decided as the unbatched engine decides them, the broken session's cache is as before its
    frame and its next frame is decided as an unbatched session that met the same fault."""
    engine = TransformersEngine(stream_model.model, stream_model.processor, max_batch=3)
    alone = TransformersEngine(stream_model.model, stream_model.processor)
    plans = [_plan(index) for index in range(3)]
    sessions = [_open(engine, plan) for plan in plans]
    references = [_open(alone, plan) for plan in plans]
    for pair in zip(sessions, references):
        for session in pair:
            session.ask(QUESTION, 0)
            session.push_frame(frame(0), 0)
    for session in (sessions[1], references[1]):
        _break_next_forward(session, stream_model.model.config.text_config.vocab_size)
    before = sessions[1].cache_length
    errors, events = {}, {}

    def push(index):
        try:
            events[index] = sessions[index].push_frame(plans[index]["frames"][1], 1)
        except Exception as exc:  # what the scheduler would report as this session's failure
            errors[index] = exc

    start_passes, start_calls = engine.batcher.passes, engine.batcher.calls
    with engine.batcher.step():  # held: no pass starts until all three frames wait
        threads = [threading.Thread(target=push, args=(index,)) for index in range(3)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while engine.batcher.passes < start_passes + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (engine.batcher.passes - start_passes, engine.batcher.calls - start_calls) == (2, 6)
    for thread in threads:
        thread.join(timeout=60)
    assert set(errors) == {1} and isinstance(errors[1], IndexError)
    with pytest.raises(IndexError):
        references[1].push_frame(plans[1]["frames"][1], 1)
    assert sessions[1].cache_length == before == references[1].cache_length
    for index in (0, 2):
        _same(events[index], references[index].push_frame(plans[index]["frames"][1], 1))
    for session, reference in zip(sessions, references):  # every session goes on
        _same(session.push_frame(frame(77), 2), reference.push_frame(frame(77), 2))
        assert session.context_ids() == reference.context_ids()


def _break_next_forward(session, vocab_size: int) -> None:
    """Session's next prefill carries a token id past the vocabulary (the embedding raises)."""
    forward = session._forward

    def broken(ids, frames, grids, *args, **kwargs):
        session._forward = forward
        return forward(ids + [vocab_size], frames, grids, *args, **kwargs)

    session._forward = broken
