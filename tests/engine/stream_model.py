"""A tiny stream model that answers sometimes: the tiny random Qwen2.5-VL with the three
state tokens, whose output rows are fitted so that, reading a planned conversation, it
produces the planned states and answers (so Silence, Standby and Response paths all run).

Only output rows change (the head is untied from the input embeddings), so the hidden
states of a conversation do not depend on the fit: greedy decoding of the planned stream
reproduces the plan exactly, and unplanned frames give whatever the model makes of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from streamo.fitting import fit_output_rows
from streamo.protocol import DEFAULT_SYSTEM_PROMPT, State, assistant_text, user_text

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "dataset" / "example"
FRAME_SIZE = (84, 56)  # width, height: 2x3 merged patches, a non-square M-RoPE grid
MAX_PIXELS = FRAME_SIZE[0] * FRAME_SIZE[1]
QUESTION = "What happens to the square?"
PLAN = [State.SILENCE, State.STANDBY, State.STANDBY, State.RESPONSE, State.SILENCE,
        State.STANDBY, State.RESPONSE, State.SILENCE]
ANSWERS = {3: "It turned red.", 6: "It moved to the left."}


def frame(seed: int) -> Image.Image:
    """A small picture that differs from seed to seed."""
    rng = np.random.default_rng(seed)
    width, height = FRAME_SIZE
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = rng.integers(0, 256, 3)
    top, left = rng.integers(0, height - 20), rng.integers(0, width - 20)
    pixels[top:top + 20, left:left + 20] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels)


def planned_messages(turns: int = len(PLAN)) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
    for turn in range(turns):
        messages.append({"role": "user", "content": user_text(turn, 1.0, [QUESTION] if turn == 0 else [])})
        messages.append({"role": "assistant", "content": assistant_text(PLAN[turn], ANSWERS.get(turn, ""))})
    return messages


@dataclass
class StreamModel:
    model: object
    processor: object
    directory: Path
    """A saved copy (checkpoint layout) for the command-line tests."""


def fitted_stream_model(directory: Path, messages=None, frames=None, steps: int = 400, margin: float = 0.0,
                        hidden_size: int = 64):
    """The tiny random Qwen2.5-VL with state tokens, its output rows fitted to reply as ``messages``
    does over ``frames`` (default: the plan of ``engine/stream_model.py``), saved in ``directory``.
    ``hidden_size`` 256 gives 64-wide heads, the narrowest vLLM's CPU attention takes."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from streamo.tiny_model import TinyModelSpec, build_tiny_model

    spec = TinyModelSpec(hidden_size=hidden_size, with_state_tokens=True)
    base = build_tiny_model(directory.parent / f"tiny-state-{hidden_size}", spec)
    processor = AutoProcessor.from_pretrained(base)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32).eval()
    if messages is None:
        messages, frames = planned_messages(), [frame(turn) for turn in range(len(PLAN))]
    fit_output_rows(model, processor, [(messages, frames)], steps, margin)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return StreamModel(model, processor, directory)


def example_fitted_model(directory: Path, sample: int = 2, hidden_size: int = 64) -> StreamModel:
    """A tiny model fitted with wide margins to play stream sample ``sample`` of the shipped example
    (default: the Narration sample on synth_0000: silence, standby and responses with answers), so
    that small numeric differences (a browser's decoder, another engine's kernels) flip no decision."""
    import json

    from streamo.video import MIN_PIXELS, iter_frames

    record = json.loads((EXAMPLE / "stream_format.json").read_text(encoding="utf-8"))[sample]
    video = REPO / record["videos"][0]
    frames = [sampled.image for sampled in iter_frames(video, 1.0, MAX_PIXELS, MIN_PIXELS)]
    return fitted_stream_model(directory, record["messages"], frames, steps=3000, margin=3.0, hidden_size=hidden_size)
