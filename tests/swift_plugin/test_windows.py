"""Long-clip windows: every turn kept exactly once, in order, each window within budget, questions carried."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamo.protocol import State, assistant_text, parse_stream_messages, user_text
from streamo.swift_plugin.windows import WindowError, split_windows

SYSTEM = {"role": "system", "content": "sys"}


def conversation(questions_at: dict[int, str], turns: int) -> list[dict]:
    messages = [SYSTEM]
    for turn in range(turns):
        asked = [questions_at[turn]] if turn in questions_at else []
        messages.append({"role": "user", "content": user_text(turn, 1.0, asked)})
        messages.append({"role": "assistant", "content": assistant_text(State.SILENCE)})
    return messages


def characters(role: str, content: str) -> int:
    """A stand-in tokenizer: one token per character plus the ChatML frame."""
    return len(content) + 4


def test_a_conversation_that_fits_is_returned_whole():
    messages = conversation({0: "What happens?"}, 5)
    assert split_windows(messages, 10_000, characters) == [messages]


def test_windows_carry_the_questions_asked_before_them():
    messages = conversation({0: "Where is the ball?", 3: "Which colour?"}, 8)
    windows = split_windows(messages, 120, characters)
    assert len(windows) > 2
    for window in windows:
        assert window[0] == SYSTEM
        assert sum(characters(m["role"], m["content"]) for m in window) <= 120
    later = windows[-1][1]["content"]
    assert later.startswith("Where is the ball?\nWhich colour?\n")
    assert parse_stream_messages(windows[-1]).turns[0].questions == ["Where is the ball?", "Which colour?"]


@settings(max_examples=60, deadline=None)
@given(
    turns=st.integers(1, 30),
    budget=st.integers(60, 400),
    asked=st.dictionaries(st.integers(0, 29), st.sampled_from(["Q one?", "Question two?", "Three?"]), max_size=4),
)
def test_windows_partition_the_turns_and_fit_the_budget(turns, budget, asked):
    messages = conversation(asked, turns)
    try:
        windows = split_windows(messages, budget, characters)
    except WindowError as exc:
        # Only allowed when that turn, with every question asked so far, exceeds the budget alone.
        turn = int(str(exc).split()[1])
        carried = list(dict.fromkeys(asked[k] for k in sorted(asked) if k <= turn))
        alone = [SYSTEM, {"role": "user", "content": user_text(turn, 1.0, carried)}, messages[2 * turn + 2]]
        assert sum(characters(m["role"], m["content"]) for m in alone) > budget
        return
    starts = []
    for window in windows:
        assert sum(characters(m["role"], m["content"]) for m in window) <= budget
        timeline = parse_stream_messages(window)
        starts.extend(turn.start for turn in timeline.turns)
        assert all(turn.state is State.SILENCE for turn in timeline.turns)
    assert starts == [float(k) for k in range(turns)]


def test_a_turn_too_long_alone_is_an_error_not_a_silent_drop():
    messages = conversation({0: "x" * 200}, 3)
    with pytest.raises(WindowError, match="turn 0 needs"):
        split_windows(messages, 100, characters)
