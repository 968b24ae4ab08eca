"""The original approach, kept as a yardstick: re-encode the whole conversation every second.

``ReencodeSession`` has the engine's interface but, for each frame, renders the whole
conversation with the processor's chat template, runs the vision encoder on every frame
so far and the language model over every token (transformers' own M-RoPE position
code), then applies the same decision and answer rules. Its cost grows with the stream;
tests use it to check that the incremental engine decides and answers exactly the same,
and ``benchmarks/stream_latency.py`` times it against the engine.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
from PIL import Image
from transformers import DynamicCache

from ..protocol import DEFAULT_SYSTEM_PROMPT, STREAM_PLACEHOLDER, State, assistant_text, frame_turn, state_token_ids, turn_of, user_text
from ..video.sampling import MAX_PIXELS, MIN_PIXELS, fit_to_budget
from .decoding import AnswerDecoder, DecisionRule
from .session import StreamEvent


def multimodal_messages(messages: Sequence[dict[str, str]]) -> list[dict]:
    """Stream-format messages with each ``<stream>`` as an image item, for chat templates."""
    converted = []
    for message in messages:
        content = message["content"]
        if STREAM_PLACEHOLDER not in content:
            converted.append({"role": message["role"], "content": content})
            continue
        before, after = content.split(STREAM_PLACEHOLDER, 1)
        items = [{"type": "text", "text": before}] if before else []
        items.append({"type": "image"})
        if after:
            items.append({"type": "text", "text": after})
        converted.append({"role": message["role"], "content": items})
    return converted


def encode_conversation(processor, messages: Sequence[dict[str, str]], frames: Sequence[Image.Image], generation_prompt: bool):
    """Model inputs for a whole stream conversation, built the way transformers users would:
    the processor's chat template, then the processor on the text and all frames."""
    text = processor.apply_chat_template(multimodal_messages(messages), tokenize=False, add_generation_prompt=generation_prompt)
    return processor(text=[text], images=list(frames) or None, return_tensors="pt", do_resize=False)


class ReencodeSession:
    """Whole-conversation inference each second (slow; a reference, not for live use)."""

    def __init__(
        self,
        model,
        processor,
        fps: float = 1.0,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        decision: DecisionRule | None = None,
        max_new_tokens: int = 128,
        max_pixels: int = MAX_PIXELS,
        min_pixels: int = MIN_PIXELS,
    ) -> None:
        self.model = model
        self.processor = processor
        self.fps = fps
        self.decision = decision or DecisionRule()
        self.max_pixels, self.min_pixels = max_pixels, min_pixels
        self.state_ids = state_token_ids(processor.tokenizer)
        self.decoder = AnswerDecoder(processor.tokenizer, model.lm_head.out_features, max_new_tokens)
        self.messages: list[dict[str, str]] = [{"role": "system", "content": system_prompt}]
        self.frames: list[Image.Image] = []
        self._waiting: list[tuple[int, str]] = []
        self._next_turn = 0

    def ask(self, text: str, t: float | None = None) -> int:
        turn = self._next_turn if t is None else max(turn_of(t, self.fps), self._next_turn)
        self._waiting.append((turn, text.strip()))
        return turn

    def load_history(self, messages: Sequence[dict[str, str]], frames: Sequence[Image.Image], next_turn: int) -> None:
        """Start from an existing conversation (stream format, one frame per ``<stream>``)."""
        if sum(message["content"].count(STREAM_PLACEHOLDER) for message in messages) != len(frames):
            raise ValueError("one frame per <stream> turn is needed")
        self.messages = [dict(message) for message in messages]
        self.frames = list(frames)
        self._next_turn = next_turn

    def push_frame(self, image: Image.Image, t: float | None = None) -> StreamEvent:
        started = time.perf_counter()
        turn = self._next_turn if t is None else frame_turn(t, self.fps)
        questions = [question for at, question in self._waiting if at <= turn]
        self._waiting = [(at, question) for at, question in self._waiting if at > turn]
        self.frames.append(fit_to_budget(image, self.min_pixels, self.max_pixels))
        self.messages.append({"role": "user", "content": user_text(turn, self.fps, questions)})
        state, answer, probabilities = self.reply(self.messages, self.frames)
        self.messages.append({"role": "assistant", "content": assistant_text(state, answer)})
        self._next_turn = turn + 1
        latency = (time.perf_counter() - started) * 1000
        return StreamEvent(turn / self.fps, turn, state, answer, latency, probabilities)

    def reply(
        self, messages: Sequence[dict[str, str]], frames: Sequence[Image.Image]
    ) -> tuple[State, str, dict[State, float]]:
        """The next assistant message of a conversation that ends with a user turn."""
        with torch.inference_mode():
            inputs = encode_conversation(self.processor, messages, frames, generation_prompt=True)
            cache = DynamicCache(config=self.model.config)
            self.model.model.rope_deltas = None
            output = self.model(**inputs.to(self.model.device), past_key_values=cache, use_cache=True, logits_to_keep=1)
            state, probabilities = self.decision.decide(output.logits[0, -1][[self.state_ids[s] for s in State]])
            answer = self._answer(cache) if state is State.RESPONSE else ""
        return state, answer, probabilities

    def _answer(self, cache: DynamicCache) -> str:
        token = self.state_ids[State.RESPONSE]
        answer: list[int] = []
        while True:
            output = self.model(input_ids=torch.tensor([[token]], device=self.model.device), past_key_values=cache, use_cache=True)
            token = self.decoder.pick(output.logits[0, -1])
            if token in self.decoder.stop_ids:
                break
            answer.append(token)
            if len(answer) == self.decoder.max_new_tokens:
                break
        return self.decoder.text(answer)
