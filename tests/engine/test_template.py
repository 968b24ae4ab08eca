"""The engine's context is token for token what the training template encodes.

The engine plays the shipped example video with the example's questions (states follow the
example, answers are the model's own); the ``stream_qwen2_5_vl`` template then encodes the
engine's conversation from the same video, and both must agree on every id, every frame's
grid and pixels, and every M-RoPE position.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from streamo.engine import StreamingSession, chunk_positions
from streamo.protocol import State, parse_stream_messages
from streamo.video import iter_frames

pytest.importorskip("swift")

from .templates import stream_template  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "dataset" / "example" / "stream_format.json"
SMALL_FRAMES = 56 * 84


class ScriptedStates:
    """Decides the states of a given timeline in turn (answers stay the model's)."""

    def __init__(self, states):
        self.states = list(states)

    def decide(self, state_logits):
        return self.states.pop(0), {state: 1.0 / 3 for state in State}


@pytest.fixture(scope="module")
def example():
    if not EXAMPLE.is_file():
        pytest.skip("dataset/example is absent")
    row = json.loads(EXAMPLE.read_text(encoding="utf-8"))[0]
    video = str(REPO / row["videos"][0])
    return parse_stream_messages(row["messages"]), video


@pytest.fixture(scope="module")
def template(stream_model):
    return stream_template(stream_model.directory, SMALL_FRAMES)


def _play(stream_model, timeline, video, **options):
    frames = [sampled.image for sampled in iter_frames(video, timeline.fps, SMALL_FRAMES)]
    session = StreamingSession(
        stream_model.model, stream_model.processor, fps=timeline.fps, system_prompt=timeline.system,
        decision=ScriptedStates(timeline.states()), max_new_tokens=6, max_pixels=SMALL_FRAMES, **options,
    )
    for turn in timeline.turns:
        for question in turn.questions:
            session.ask(question, turn.end)
    for turn, frame in enumerate(frames[: len(timeline.turns)]):
        session.push_frame(frame, turn / timeline.fps)
    return session, frames


def _check_against_template(session, template, video, frames, monkeypatch):
    monkeypatch.delenv("STREAMO_FRAME_CACHE", raising=False)
    messages = session.context_messages()
    encoded = template.encode({"messages": [dict(m) for m in messages], "videos": [video]})
    assert session.context_ids() == encoded["input_ids"]

    kept = [round(turn.start * session.fps) for turn in parse_stream_messages(messages).turns]
    ours = session.processor.image_processor(images=[frames[k] for k in kept], return_tensors="pt", do_resize=False)
    assert torch.equal(ours["image_grid_thw"], encoded["image_grid_thw"])
    assert torch.equal(ours["pixel_values"], encoded["pixel_values"])

    ids = torch.tensor([encoded["input_ids"]])
    expected, _ = session.model.model.get_rope_index(
        ids, mm_token_type_ids=encoded["mm_token_type_ids"][None], image_grid_thw=encoded["image_grid_thw"]
    )
    grids = [(int(h) // 2, int(w) // 2) for _, h, w in encoded["image_grid_thw"]]
    positions, _ = chunk_positions(encoded["input_ids"], session.tokens.image_token_id, grids, 0)
    assert torch.equal(positions, expected[:, 0])


def test_engine_context_equals_template_encoding(stream_model, template, example, monkeypatch):
    timeline, video = example
    session, frames = _play(stream_model, timeline, video)
    assert any(turn.state is State.RESPONSE and turn.answer for turn in parse_stream_messages(session.context_messages()).turns)
    _check_against_template(session, template, video, frames, monkeypatch)


def test_windowed_context_equals_template_encoding_of_that_window(stream_model, template, example, monkeypatch):
    timeline, video = example
    session, frames = _play(stream_model, timeline, video, window=6, eviction_block=4)
    first = parse_stream_messages(session.context_messages()).turns[0]
    assert first.start > 0 and first.questions  # evicted, and the question is carried
    _check_against_template(session, template, video, frames, monkeypatch)
