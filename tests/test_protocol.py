import pytest

from streamo.protocol import (
    ConversationError,
    State,
    assistant_text,
    format_seconds,
    parse_assistant,
    parse_stream_messages,
    parse_time_tag,
    time_tag,
    turn_count,
    turn_of,
    user_text,
)


@pytest.mark.parametrize(
    ("moment", "fps", "turn"),
    [(5, 1, 4), (5.0, 1, 4), (4.5, 1, 4), (4.0001, 1, 4), (0, 1, 0), (0.2, 1, 0), (1, 1, 0), (1.0000001, 1, 0),
     (0.5, 2, 0), (0.6, 2, 1), (3, 2, 5), (0.3, 10, 2), (0.7, 10, 6)],
)
def test_turn_of_follows_ceil_minus_one(moment, fps, turn):
    assert turn_of(moment, fps) == turn


@pytest.mark.parametrize(("duration", "fps", "count"), [(76, 1, 76), (76.9, 1, 76), (0.99, 1, 0), (10, 2, 20), (2.9999999, 1, 3), (0.3, 10, 3)])
def test_turn_count_is_floor(duration, fps, count):
    assert turn_count(duration, fps) == count


def test_time_tags_at_several_fps():
    assert time_tag(0) == "<0s-1s>"
    assert time_tag(75) == "<75s-76s>"
    assert time_tag(5000) == "<5000s-5001s>"
    assert time_tag(1, 2.0) == "<0.5s-1s>"
    assert time_tag(3, 4.0) == "<0.75s-1s>"
    assert time_tag(1, 0.5) == "<2s-4s>"
    assert format_seconds(1 / 3) == "0.333333"
    assert parse_time_tag("Q?\n<0.5s-1s>\n<stream>") == (0.5, 1.0)
    assert parse_time_tag("nothing") is None


def test_user_and_assistant_text_layout():
    assert user_text(4, 1.0, ["Q1", "Q2"]) == "Q1\nQ2\n<4s-5s>\n<stream>"
    assert user_text(0) == "<0s-1s>\n<stream>"
    assert assistant_text(State.SILENCE) == "</Silence>"
    assert assistant_text(State.RESPONSE, "It rains.") == "</Response> It rains."
    assert parse_assistant("</Response> It rains.") == (State.RESPONSE, "It rains.")
    assert parse_assistant("</Standby>") == (State.STANDBY, "")
    assert parse_assistant("hello")[0] is None


def test_parse_stream_messages_round_trip():
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": user_text(0, 2.0, ["Where?"])},
        {"role": "assistant", "content": "</Standby>"},
        {"role": "user", "content": user_text(1, 2.0)},
        {"role": "assistant", "content": "</Response> Here."},
    ]
    timeline = parse_stream_messages(messages)
    assert timeline.system == "sys"
    assert timeline.fps == 2.0
    assert timeline.states() == [State.STANDBY, State.RESPONSE]
    assert timeline.turns[0].questions == ["Where?"]
    assert timeline.turns[1].answer == "Here."
    assert timeline.duration == 1.0


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "<0s-1s>\n<stream>"}, {"role": "user", "content": "<1s-2s>\n<stream>"}],
        [{"role": "user", "content": "<0s-1s>"}],
        [{"role": "user", "content": "<stream>"}],
        [{"role": "assistant", "content": "</Silence>"}],
        [{"role": "user", "content": "<0s-1s>\n<stream>"}, {"role": "assistant", "content": "maybe"}],
        [{"role": "user", "content": "<0s-1s>\n<stream>"}, {"role": "system", "content": "late"}],
    ],
)
def test_parse_stream_messages_rejects_broken_conversations(messages):
    with pytest.raises(ConversationError, match="message"):
        parse_stream_messages(messages)


def test_carried_questions_keep_order_once_and_skip_own():
    from streamo.protocol import carried_questions

    assert carried_questions(["B?"], ["A?", "B?", "A?", "C?"]) == ["A?", "C?"]
    assert carried_questions([], []) == []


def test_state_token_ids_need_single_tokens():
    from streamo.protocol import StateTokenError, state_token_ids

    class Splitting:
        def encode(self, text, add_special_tokens=False):
            return [1, 2] if "Standby" in text else [len(text)]

    class Whole:
        def encode(self, text, add_special_tokens=False):
            return [hash(text) % 1000]

    with pytest.raises(StateTokenError, match=r"</Standby> -> 2 tokens.*--new_special_tokens"):
        state_token_ids(Splitting())
    assert list(state_token_ids(Whole())) == [State.SILENCE, State.STANDBY, State.RESPONSE]
