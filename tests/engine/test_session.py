"""The incremental engine against whole-conversation inference on the same stream."""

from __future__ import annotations

import pytest
import torch
from .stream_model import ANSWERS, MAX_PIXELS, PLAN, QUESTION, frame

from streamo.engine import DecisionRule, StreamingSession
from streamo.protocol import StateTokenError
from streamo.engine.reference import ReencodeSession, encode_conversation
from streamo.protocol import State, parse_stream_messages


def _frames(count: int) -> list:
    """The planned frames first, then frames the model was never fitted on."""
    return [frame(turn) if turn < len(PLAN) else frame(1000 + turn) for turn in range(count)]


def _session(stream_model, cls=StreamingSession, **options):
    return cls(stream_model.model, stream_model.processor, max_pixels=MAX_PIXELS, max_new_tokens=12, **options)


def _ask_all(session) -> None:
    session.ask(QUESTION, 0)
    session.ask("Is it still there?", 5.5)  # shown with the frame <5s-6s>
    session.ask("What colour is it?", 9)  # two questions in one turn
    session.ask("How many squares?", 9)


def test_incremental_engine_matches_whole_conversation_inference(stream_model):
    frames = _frames(12)
    engine, reference = _session(stream_model), _session(stream_model, ReencodeSession)
    _ask_all(engine)
    _ask_all(reference)
    for turn, picture in enumerate(frames):
        ours, theirs = engine.push_frame(picture, turn), reference.push_frame(picture, turn)
        assert (ours.turn, ours.state, ours.text) == (theirs.turn, theirs.state, theirs.text)
        for state in State:
            assert ours.probabilities[state] == pytest.approx(theirs.probabilities[state], abs=1e-4)
        if turn < len(PLAN):
            assert (ours.state, ours.text) == (PLAN[turn], ANSWERS.get(turn, ""))
    # The engine's context is token for token the chat-template encoding of the conversation.
    assert engine.context_messages() == reference.messages
    encoded = encode_conversation(stream_model.processor, reference.messages, reference.frames, generation_prompt=False)
    assert engine.context_ids() == encoded["input_ids"][0].tolist()
    assert engine.cache_length == len(engine.context_ids()) - 3  # the last "</Silence><|im_end|>\n" waits


def test_questions_land_on_their_turns(stream_model):
    session = _session(stream_model)
    _ask_all(session)
    for turn, picture in enumerate(_frames(11)):
        session.push_frame(picture, turn)
    timeline = parse_stream_messages(session.context_messages())
    asked = {turn.index: turn.questions for turn in timeline.turns if turn.questions}
    assert asked == {0: [QUESTION], 5: ["Is it still there?"], 8: ["What colour is it?", "How many squares?"]}


def test_late_question_goes_to_the_next_frame(stream_model):
    session = _session(stream_model)
    session.push_frame(frame(0), 0)
    session.push_frame(frame(1), 1)
    assert session.ask("Anything new?", 0.5) == 2
    session.push_frame(frame(2), 2)
    assert parse_stream_messages(session.context_messages()).turns[2].questions == ["Anything new?"]


def test_truncated_answers_are_re_tokenized_as_training_writes_them(stream_model):
    session = _session(stream_model)
    session.decoder.max_new_tokens = 2
    reference = _session(stream_model, ReencodeSession)
    reference.decoder.max_new_tokens = 2
    session.ask(QUESTION, 0)
    reference.ask(QUESTION, 0)
    events = [session.push_frame(picture, turn) for turn, picture in enumerate(_frames(8))]
    assert [(e.state, e.text) for e in events] == [
        (e.state, e.text) for e in (reference.push_frame(p, turn) for turn, p in enumerate(_frames(8)))
    ]
    assert any(e.state is State.RESPONSE and e.text for e in events)
    encoded = encode_conversation(stream_model.processor, reference.messages, reference.frames, generation_prompt=False)
    assert session.context_ids() == encoded["input_ids"][0].tolist()


def test_window_bounds_the_cache_and_stays_a_training_window(stream_model):
    window, block = 4, 2
    session = _session(stream_model, window=window, eviction_block=block)
    reference = _session(stream_model, ReencodeSession)
    _ask_all(session)
    frames = _frames(14)
    for turn, picture in enumerate(frames):
        event = session.push_frame(picture, turn)
        messages = session.context_messages()
        timeline = parse_stream_messages(messages)
        kept = [round(t.start) for t in timeline.turns]  # Turn.index counts from the window start
        assert kept == list(range(kept[0], turn + 1)) and len(kept) <= window
        # The decision is the one whole-conversation inference makes on exactly this window.
        state, answer, _ = reference.reply(messages[:-1], [frames[index] for index in kept])
        assert (event.state, event.text) == (state, answer)
        encoded = encode_conversation(stream_model.processor, messages, [frames[i] for i in kept], generation_prompt=False)
        assert session.context_ids() == encoded["input_ids"][0].tolist()
        # Questions asked before the window are repeated by its first turn, once each, in order.
        asked_before = [q for t, qs in ((0, [QUESTION]), (5, ["Is it still there?"]),
                                        (8, ["What colour is it?", "How many squares?"])) if t < kept[0] for q in qs]
        own = {0: [QUESTION], 5: ["Is it still there?"], 8: ["What colour is it?", "How many squares?"]}.get(kept[0], [])
        assert timeline.turns[0].questions == asked_before + own
        assert session.cache_length <= _prefix_length(session) + window * _turn_token_bound(session)
    assert kept[0] > 0  # evictions happened


def _prefix_length(session) -> int:
    return len(session.tokens.system(session.system_prompt))


def _turn_token_bound(session) -> int:
    # Header, all questions, tag and frame tokens, plus the longest possible reply.
    user = len(session.tokens.user(99, [QUESTION, "Is it still there?", "What colour is it?", "How many squares?"], 6))
    return user + 1 + session.decoder.max_new_tokens + 2


def test_response_threshold_trades_answers_for_silence(stream_model):
    frames = _frames(14)

    def responses(rule):
        session = _session(stream_model, decision=rule)
        session.ask(QUESTION, 0)
        return [session.push_frame(p, turn).state is State.RESPONSE for turn, p in enumerate(frames)]

    free = responses(DecisionRule())
    strict = responses(DecisionRule(response_threshold=0.999999))
    eager = responses(DecisionRule(response_threshold=0.0))
    assert any(free) and not all(free)
    assert sum(strict) < sum(free) and all(eager)


def test_decision_rule():
    logits = torch.tensor([2.0, 1.0, 1.5])
    assert DecisionRule().decide(logits)[0] is State.SILENCE
    assert DecisionRule(bias={State.RESPONSE: 1.0}).decide(logits)[0] is State.RESPONSE
    state, probabilities = DecisionRule(response_threshold=0.3).decide(logits)
    assert probabilities[State.RESPONSE] == pytest.approx(torch.softmax(logits, 0)[2].item())
    assert state is State.RESPONSE  # P(Response) = 0.31
    assert DecisionRule(response_threshold=0.4).decide(torch.tensor([1.0, 2.0, 1.5]))[0] is State.STANDBY
    with pytest.raises(ValueError):
        DecisionRule(response_threshold=1.5)


def test_bad_calls_raise_clear_errors(stream_model):
    session = _session(stream_model)
    with pytest.raises(ValueError, match="empty question"):
        session.ask("   ", 0)
    session.push_frame(frame(0), 0)
    session.push_frame(frame(1), 1)
    with pytest.raises(ValueError, match="already read"):
        session.push_frame(frame(2), 0.5)
    with pytest.raises(ValueError, match="window"):
        _session(stream_model, window=1)


def test_missing_state_tokens_are_refused(tiny_model_dir):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    with pytest.raises(StateTokenError, match="single token id"):
        StreamingSession(model, AutoProcessor.from_pretrained(tiny_model_dir))
