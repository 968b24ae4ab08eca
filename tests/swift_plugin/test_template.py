"""The stream template: one frame per <stream> turn, ids from the tokenizer, labels on assistant turns only."""

import copy

import pytest

from streamo.protocol import STATE_TOKENS, STREAM_PLACEHOLDER, State
from streamo.swift_plugin.frames import FrameSource
from streamo.swift_plugin.template import StateTokenError
from streamo.swift_plugin.windows import ChatMLCounter, frame_tokens

SMALL_FRAMES = 56 * 56  # the conftest's MAX_PIXELS: 4 visual tokens per frame


def _spans(ids, start, end):
    """(first, last) index of each vision span."""
    spans, opened = [], None
    for position, token in enumerate(ids):
        if token == start:
            opened = position
        elif token == end:
            spans.append((opened, position))
    return spans


def test_each_stream_turn_becomes_one_image_span_and_only_assistant_turns_are_labelled(make_template, example_rows):
    template = make_template()
    tokenizer = template.tokenizer
    row = example_rows[0]
    encoded = template.encode(copy.deepcopy(row))
    ids, labels = encoded["input_ids"], encoded["labels"]

    image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    start, end = (tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>"))
    turns = sum(STREAM_PLACEHOLDER in m["content"] for m in row["messages"])
    spans = _spans(ids, start, end)
    assert len(spans) == turns == len(encoded["image_grid_thw"])
    per_frame = [int(thw.prod()) // 4 for thw in encoded["image_grid_thw"]]
    assert all(ids[a + 1 : b] == [image_id] * n for (a, b), n in zip(spans, per_frame))
    frame = FrameSource(max_pixels=SMALL_FRAMES).frames(row["videos"][0], 1.0, [0])[0]
    assert per_frame == [frame_tokens(frame.height, frame.width)] * turns
    assert sum(per_frame) == ids.count(image_id)

    assistant = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
    # ms-swift supervises each reply with its end token and the newline after it.
    expected = [t for text in assistant for t in tokenizer.encode(text + "<|im_end|>\n", add_special_tokens=False)]
    assert [t for t in labels if t != -100] == expected
    supervised = [i for i, t in enumerate(labels) if t != -100]
    assert all(not (a <= i <= b) for i in supervised for a, b in spans)

    state_ids = {state: tokenizer.convert_tokens_to_ids(token) for state, token in STATE_TOKENS.items()}
    silences = sum(text.startswith(STATE_TOKENS[State.SILENCE]) for text in assistant)
    assert [t for t in labels if t == state_ids[State.SILENCE]] == [state_ids[State.SILENCE]] * silences


def test_a_window_cut_from_the_middle_gets_the_frames_of_its_time_tags(make_template, example_rows):
    template = make_template()
    row = copy.deepcopy(example_rows[0])
    row["messages"] = row["messages"][:1] + row["messages"][11:17]  # turns 5, 6 and 7
    encoded = template.encode(row)
    frames = FrameSource(max_pixels=SMALL_FRAMES).frames(row["videos"][0], 1.0, [5, 6, 7])
    reference = template.processor.image_processor(images=frames, return_tensors="pt", do_resize=False)
    assert encoded["pixel_values"].shape == reference["pixel_values"].shape
    assert (encoded["pixel_values"] - reference["pixel_values"]).abs().max().item() == 0.0
    other = FrameSource(max_pixels=SMALL_FRAMES).frames(row["videos"][0], 1.0, [0, 1, 2])
    shifted = template.processor.image_processor(images=other, return_tensors="pt", do_resize=False)
    assert (encoded["pixel_values"] - shifted["pixel_values"]).abs().max().item() > 0


def test_window_token_count_is_exact(make_template, example_rows):
    template = make_template()
    row = copy.deepcopy(example_rows[4])
    frame = FrameSource(max_pixels=SMALL_FRAMES).frames(row["videos"][0], 1.0, [0])[0]
    counter = ChatMLCounter(template.tokenizer, frame_tokens(frame.height, frame.width))
    counted = sum(counter(m["role"], m["content"]) for m in row["messages"])
    actual = len(template.encode(row)["input_ids"])
    assert counted == actual


def test_missing_state_tokens_fail_at_start_up_with_the_fix(make_template, tiny_model_dir):
    from swift.model import get_model_processor

    _, plain = get_model_processor(str(tiny_model_dir), load_model=False)
    with pytest.raises(StateTokenError, match="--new_special_tokens"):
        make_template(processor=plain)
