"""The ``stream_qwen2_5_vl`` template: ms-swift's Qwen2.5-VL template, fed one frame per turn.

A stream conversation names one video and puts ``<stream>`` in every user turn. This
template swaps each ``<stream>`` for the frame of that turn -- the turn is read from the
turn's own ``<Xs-Ys>`` time tag, so a window cut out of a long sample still gets the right
frames -- and passes the frames on as ordinary images, already sized by Streamo's sampling
code (multiples of 28 pixels, within the pixel budget). Everything else (ChatML, labels on
assistant turns only, M-RoPE positions, collation) is the parent template's.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Literal

from PIL import Image
from swift.template import register_template
from swift.template.templates.qwen import Qwen2_5VLTemplate, QwenTemplateMeta
from swift.utils import get_logger

from ..protocol import DEFAULT_SYSTEM_PROMPT, STREAM_PLACEHOLDER, StateTokenError, parse_time_tag, state_token_ids
from ..video import VideoError
from .frames import FrameSource

TEMPLATE_TYPE = "stream_qwen2_5_vl"
ROW_LOG_ENV = "STREAMO_ROW_LOG"
"""A directory: when set, each rank appends the key (``row_key``) of every row it trains on to
``rank<RANK>.jsonl`` there, as the batches are collated (how the tests prove that the ranks
see every row once)."""
_ROW_KEY = "streamo_row"
logger = get_logger()


def row_key(messages: list[dict[str, Any]], video: str) -> str:
    """A short key naming one training row (a sample, or one window of it) by its content."""
    text = json.dumps([[message.get("role"), message.get("content")] for message in messages] + [os.path.basename(video)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class StreamSampleError(ValueError):
    """A stream sample the template cannot turn into model inputs; the message says why."""


def stream_turns(messages: list[dict[str, Any]]) -> list[tuple[int, float, int]]:
    """(message index, fps, turn) of each user message holding ``<stream>``, from its time tag."""
    found = []
    for position, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, str) or STREAM_PLACEHOLDER not in content:
            continue
        if message.get("role") != "user":
            raise StreamSampleError(f"message {position}: {STREAM_PLACEHOLDER} outside a user turn")
        if content.count(STREAM_PLACEHOLDER) != 1:
            raise StreamSampleError(f"message {position}: more than one {STREAM_PLACEHOLDER} in a turn")
        span = parse_time_tag(content)
        if span is None or not span[1] > span[0]:
            raise StreamSampleError(f"message {position}: {STREAM_PLACEHOLDER} turn lacks a valid <Xs-Ys> time tag")
        fps = 1.0 / (span[1] - span[0])
        found.append((position, fps, int(round(span[0] * fps))))
    return found


class StreamQwen2_5VLTemplate(Qwen2_5VLTemplate):
    """Qwen2.5-VL template that expands ``<stream>`` turns into per-turn frames."""

    frame_source: FrameSource

    def init_processor(self, processor) -> None:
        if processor is None or self._processor_inited:
            return
        super().init_processor(processor)
        tokenizer = self.tokenizer
        # The parent class hard-codes Qwen's ids; a resized or re-ordered vocabulary must win.
        self.image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.video_token_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
        self.state_token_ids = list(state_token_ids(tokenizer).values())
        self.frame_source = FrameSource.from_env(self.max_pixels)

    def encode(self, inputs, *args, **kwargs):
        """The parent's encoding; with ``STREAMO_ROW_LOG`` set, tagged with the row's key for the collator."""
        key = None
        if os.environ.get(ROW_LOG_ENV) and isinstance(inputs, dict) and self.mode == "train":
            videos = inputs.get("videos") or [""]
            key = row_key(inputs["messages"], videos[0] if isinstance(videos, list) else videos)
        encoded = super().encode(inputs, *args, **kwargs)
        if key is not None:
            encoded[_ROW_KEY] = key
        return encoded

    def data_collator(self, batch, *args, **kwargs):
        """The parent's collation; logs the keys of the rows it collates (only batches that are trained are collated)."""
        keys = [item.pop(_ROW_KEY) for item in batch if isinstance(item, dict) and _ROW_KEY in item]
        if keys:
            directory = os.environ[ROW_LOG_ENV]
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, f"rank{os.environ.get('RANK', '0')}.jsonl"), "a", encoding="utf-8") as log:
                log.write("".join(json.dumps({"row": key}) + "\n" for key in keys))
        return super().data_collator(batch, *args, **kwargs)

    def _preprocess_inputs(self, inputs) -> None:
        turns = stream_turns(inputs.messages)
        if turns:
            self._expand_stream_turns(inputs, turns)
        super()._preprocess_inputs(inputs)

    def _expand_stream_turns(self, inputs, turns: list[tuple[int, float, int]]) -> None:
        if inputs.images:
            raise StreamSampleError("a stream sample takes its frames from its video, not from 'images'")
        if len(inputs.videos) != 1 or not isinstance(inputs.videos[0], str):
            raise StreamSampleError(f"a stream sample needs exactly one video path, got {len(inputs.videos)}")
        video = inputs.videos[0]
        rates = {fps for _, fps, _ in turns}
        if max(rates) - min(rates) > 1e-6 * max(rates):
            raise StreamSampleError(f"{video}: time tags mix frame rates {sorted(rates)}")
        fps = round(turns[0][1], 6)
        try:
            frames = self.frame_source.frames(video, fps, [turn for _, _, turn in turns])
        except VideoError as exc:
            logger.warning(f"stream sample removed: {exc}")
            raise
        for position, _, _ in turns:
            message = inputs.messages[position]
            message["content"] = message["content"].replace(STREAM_PLACEHOLDER, "<image>")
        inputs.images = frames
        inputs.videos = []

    def replace_tag(self, media_type: Literal["image", "video", "audio"], index: int, inputs) -> list:
        if media_type == "image" and isinstance(inputs.images[index], Image.Image) and self.mode != "lmdeploy":
            # Frames are already sized by Streamo's sampler; resizing again could change the grid.
            inputs.images[index] = inputs.images[index].convert("RGB")
            return ["<|vision_start|><|image_pad|><|vision_end|>"]
        return super().replace_tag(media_type, index, inputs)


def register_stream_template() -> None:
    """Register the template (idempotent: plugins may be imported more than once)."""
    register_template(
        QwenTemplateMeta(TEMPLATE_TYPE, template_cls=StreamQwen2_5VLTemplate, default_system=DEFAULT_SYSTEM_PROMPT),
        exist_ok=True,
    )


__all__ = [
    "ROW_LOG_ENV",
    "TEMPLATE_TYPE",
    "StateTokenError",
    "StreamQwen2_5VLTemplate",
    "StreamSampleError",
    "register_stream_template",
    "row_key",
    "stream_turns",
]
