"""A session's context bounded in tokens: older turns evicted (as a training window) to keep the
context, with room for the longest answer, within the budget; what cannot fit even alone refused
with ``ContextBudgetError``. The bookkeeping is ``StreamContext``'s, shared by both backends."""

from __future__ import annotations

import pytest

from streamo.engine import StreamingSession
from streamo.engine.context import ContextBudgetError, StreamContext
from streamo.engine.prompt import PromptTokens
from streamo.engine.reference import ReencodeSession, encode_conversation
from streamo.protocol import DEFAULT_SYSTEM_PROMPT, State, parse_stream_messages

from .stream_model import MAX_PIXELS, PLAN, QUESTION, frame

FRAME_TOKENS = MAX_PIXELS // 28 ** 2


def _context(stream_model, budget, window=None, **options) -> StreamContext:
    tokens = PromptTokens(stream_model.processor.tokenizer, 1.0)
    return StreamContext(tokens, DEFAULT_SYSTEM_PROMPT, window, None, budget, 12, FRAME_TOKENS, **options)


@pytest.mark.parametrize("window", [None, 30.0])
def test_context_stays_within_its_token_budget_and_evicts_rarely(stream_model, window):
    """The shared logic alone (what the vLLM backend runs too): every prompt plus the room for a
    reply fits; evictions bring the context to three quarters of the budget, so they are rare."""
    budget = 600
    context = _context(stream_model, budget, window)
    context.ask(QUESTION, 0)
    evictions = 0
    for turn in range(60):
        if turn % 7 == 3:
            context.ask(f"What happened at second {turn}?", turn)
        current = context.open_turn(turn, (2, 3))
        evicted = context.evict(current)
        evictions += evicted
        size = len(context.prompt_ids(current)) + context.reserve
        assert size <= budget
        if evicted:
            assert size <= len(context.system_ids) + len(current.user_ids) + context.reserve + (budget - len(
                context.system_ids) - len(current.user_ids) - context.reserve) * 3 // 4
        state = State.RESPONSE if turn % 5 == 0 else State.SILENCE
        context.close(current, state, "It moved." if state is State.RESPONSE else "")
    assert 3 <= evictions <= 20
    # The first retained turn repeats the questions asked before it: the window is a training window.
    assert context.first_questions(context.turns[0])[0] == QUESTION


def test_engine_under_a_token_budget_is_the_training_window_token_for_token(stream_model):
    budget = 330
    session = StreamingSession(stream_model.model, stream_model.processor, max_pixels=MAX_PIXELS, max_new_tokens=12,
                               max_context_tokens=budget)
    reference = ReencodeSession(stream_model.model, stream_model.processor, max_pixels=MAX_PIXELS, max_new_tokens=12)
    session.ask(QUESTION, 0)
    frames = [frame(turn) for turn in range(len(PLAN))] + [frame(1000 + turn) for turn in range(6)]
    for turn, picture in enumerate(frames):
        event = session.push_frame(picture, turn)
        assert event.context_tokens + session.context.reserve <= budget
        messages = session.context_messages()
        kept = [round(t.start) for t in parse_stream_messages(messages).turns]
        state, answer, _ = reference.reply(messages[:-1], [frames[index] for index in kept])
        assert (event.state, event.text) == (state, answer)
        encoded = encode_conversation(stream_model.processor, messages, [frames[i] for i in kept], generation_prompt=False)
        assert session.context_ids() == encoded["input_ids"][0].tolist()
    assert kept[0] > 0  # turns were evicted for tokens (there is no window)


def test_what_cannot_fit_is_refused_and_the_session_goes_on(stream_model):
    budget = 330
    session = StreamingSession(stream_model.model, stream_model.processor, max_pixels=MAX_PIXELS, max_new_tokens=12,
                               max_context_tokens=budget)
    with pytest.raises(ContextBudgetError, match="budget is 330"):
        session.ask("Describe " + "every small detail " * 60, 0)
    session.ask(QUESTION, 0)
    for _ in range(10):  # together these would not fit one turn: the one over is refused
        try:
            session.ask("Where is it now? " * 8, 0)
        except ContextBudgetError:
            break
    else:
        pytest.fail("questions piled on one frame past the budget were all taken")
    event = session.push_frame(frame(0), 0)
    assert event.context_tokens + session.context.reserve <= budget and event.questions[0] == QUESTION
    with pytest.raises(ContextBudgetError):
        StreamingSession(stream_model.model, stream_model.processor, max_pixels=MAX_PIXELS, max_context_tokens=100)


def test_streamo_stream_says_in_one_line_what_does_not_fit(stream_model, planned_frames, capsys):
    from streamo.cli import main

    base = ["stream", "--model", str(stream_model.directory), "--video", str(planned_frames), "--max-pixels", str(MAX_PIXELS)]
    assert main(base + ["--max-context-tokens", "100", "--question", QUESTION]) == 2
    assert "budget is 100" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(base + ["--max-context-tokens", "330", "--question", "Describe " + "every small detail " * 60]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]  # after the loader's progress bar
    assert message.startswith("streamo: error: question at 0 s") and message.endswith("(--max-context-tokens)")


@pytest.fixture
def planned_frames(tmp_path):
    for turn in range(3):
        frame(turn).save(tmp_path / f"frame_{turn:04d}.png")
    return tmp_path
