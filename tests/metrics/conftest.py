"""Hand-made timelines: one character per turn, S(ilence), B (standby), R(esponse)."""

import pytest

from streamo.protocol import State, Timeline, Turn

_CODES = {"S": State.SILENCE, "B": State.STANDBY, "R": State.RESPONSE, ".": None}


def build_timeline(codes: str, answers=(), fps: float = 1.0) -> Timeline:
    """``answers`` are the texts of the R turns in order (default: "answer k")."""
    answers = list(answers)
    turns, answer_number = [], 0
    for index, code in enumerate(codes):
        turn = Turn(index=index, start=index / fps, end=(index + 1) / fps, state=_CODES[code])
        if code == "R":
            turn.answer = answers[answer_number] if answer_number < len(answers) else f"answer {answer_number}"
            answer_number += 1
        turns.append(turn)
    return Timeline(system=None, turns=turns, fps=fps)


@pytest.fixture
def timeline():
    return build_timeline
