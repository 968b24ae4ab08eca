"""vLLM as the engine behind stream sessions: batching, a paged KV cache and scale-out.

``VllmSession`` has ``StreamingSession``'s interface and shares its bookkeeping
(``context.StreamContext``: turn layout, carried questions, eviction into a training
window) and its decision rule; only the model work moves. Each second the session's whole
context (the token ids the template and the transformers engine produce, one
``<|image_pad|>`` per frame, which vLLM expands from the frame itself) goes to vLLM's
``AsyncLLM`` in this process, and vLLM's automatic prefix caching finds the turns it has
already read, so only the new turn is computed. Frames are named by a per-session id
(``multi_modal_uuids``) and sent once: later requests reference them with no data, and
only when vLLM's processor cache has let one go is the picture sent again.

The decision is one token restricted to the three state ids with their log-probabilities
(``logprob_token_ids``: raw, before the restriction), so bias and ``response_threshold``
act exactly as on the transformers engine's logits (log-probabilities differ from logits
by one constant, which the three-way softmax cancels). On ``</Response>``, a second
request decodes the answer greedily to ``<|im_end|>`` with the same tokens banned as
``AnswerDecoder`` bans; its prompt shares every full block with the decision's.

``VllmEngine`` runs ``AsyncLLM`` on an event loop of its own thread, so synchronous
callers (``streamo stream``, ``streamo eval``) and the server's worker threads submit
requests the same way, and requests of different sessions run batched together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from PIL import Image

from ..protocol import State, window_turns
from ..video.sampling import MAX_PIXELS, MIN_PIXELS, PATCH_FACTOR, fit_to_budget
from .context import ContextSession
from .decoding import AnswerDecoder
from .loading import ModelLoadError
from .session import StreamEvent

GPU_BLOCK_SIZE, CPU_BLOCK_SIZE = 16, 32
"""KV block sizes (vLLM's GPU default; the smallest its CPU attention takes): prefix caching
reuses whole blocks only, so the unfilled last block of the previous second is computed again;
a stream turn is short (tens of tokens on small frames), and vLLM's CPU default of 128 would
recompute several turns each second."""
UNBOUNDED_FRAMES = 1024
"""Frames one prompt may hold when sessions have no window (vLLM wants a bound)."""
CPU_KV_CACHE_BYTES = 4 << 30
"""KV cache on the CPU platform unless ``kv_cache_memory_bytes`` is given (vLLM's default there
reserves 92 % of the machine's memory and refuses to start when less is free)."""


class VllmUnavailable(ModelLoadError):
    """vLLM is not installed (``pip install -e .[vllm]``; see docs/serving.md)."""


@dataclass(frozen=True)
class VllmOptions:
    """How vLLM runs the model; ``engine_args`` passes anything else to ``AsyncEngineArgs``."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    max_model_len: int | None = None
    """None: the model's own limit."""
    engine_args: Mapping[str, Any] = field(default_factory=dict)


class VllmEngine:
    """One ``AsyncLLM`` shared by every session opened on it; thread-safe ``generate``."""

    def __init__(self, model_dir: str | Path, tokenizer, max_pixels: int = MAX_PIXELS, min_pixels: int = MIN_PIXELS,
                 options: VllmOptions = VllmOptions(), max_frames: int = UNBOUNDED_FRAMES) -> None:
        """``tokenizer``: the checkpoint's, holding the three state tokens (``load_stream_processor``)."""
        from vllm import SamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.SamplingParams = SamplingParams
        self.model_dir = str(model_dir)
        self.tokenizer = tokenizer
        self.max_pixels, self.min_pixels = max_pixels, min_pixels
        self.max_frames = max_frames
        cpu = _cpu_platform()
        settings: dict[str, Any] = {
            "model": self.model_dir,
            "dtype": "float32" if cpu else "bfloat16",  # as the transformers engine loads it
            "enable_prefix_caching": True,
            "block_size": CPU_BLOCK_SIZE if cpu else GPU_BLOCK_SIZE,
            "limit_mm_per_prompt": {"image": max_frames, "video": 0},
            # Frames come fitted to the budget (fit_to_budget), as the transformers engine reads them.
            "mm_processor_kwargs": {"max_pixels": max_pixels, "min_pixels": min_pixels, "do_resize": False},
            "tensor_parallel_size": options.tensor_parallel_size,
            "pipeline_parallel_size": options.pipeline_parallel_size,
            "data_parallel_size": options.data_parallel_size,
            "disable_log_stats": True,
        }
        if options.max_model_len is not None:
            settings["max_model_len"] = options.max_model_len
        if cpu and "gpu_memory_utilization" not in options.engine_args:
            settings["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        settings.update(options.engine_args)
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="streamo-vllm", daemon=True)
        self._thread.start()
        self._ids = itertools.count()

        async def start():
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**settings))

        try:
            self.llm = asyncio.run_coroutine_threadsafe(start(), self._loop).result()
        except BaseException:
            self._stop_loop()
            raise
        self.max_model_len = self.llm.model_config.max_model_len
        self.position_limit = self.max_model_len - 1  # the prompt and the one token decided after it
        self.vocab_rows = self.llm.model_config.get_vocab_size()
        self.answer_ids = AnswerDecoder(self.tokenizer, self.vocab_rows, 1).allowed_ids()
        """The ids an answer may use, once for every session (about 151,000)."""

    def generate(self, prompt: dict[str, Any], params) -> Any:
        """The final ``RequestOutput`` of one request (blocks the calling thread, not the loop)."""
        request_id = f"streamo-{next(self._ids)}"

        async def run():
            final = None
            async for output in self.llm.generate(prompt, params, request_id):
                final = output
            return final

        try:
            return asyncio.run_coroutine_threadsafe(run(), self._loop).result()
        except Exception as exc:
            cause = exc.__cause__
            if cause is None or str(exc):
                raise
            # AsyncLLM reports a refused input as a bare EngineGenerateError: say what it was.
            raise RuntimeError(f"vLLM refused the request: {type(cause).__name__}: {cause}") from exc

    def session(self, **options: Any) -> "VllmSession":
        return VllmSession(self, **options)

    def model_threads(self, max_sessions: int) -> int:
        """One per session: vLLM batches whatever requests are in flight, so every session's
        next request can be in its batch at once."""
        return max_sessions

    def close(self) -> None:
        """Stop vLLM's engine processes and the loop thread."""
        if getattr(self, "llm", None) is not None:
            # Its output handler first: otherwise it sees the engine core go and logs it as a crash.
            handler = getattr(self.llm, "output_handler", None)
            if handler is not None:
                asyncio.run_coroutine_threadsafe(_cancel(handler), self._loop).result(timeout=30)
            self.llm.shutdown()
            self.llm = None
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)


def start_engine(model_dir: str | Path, tokenizer, max_pixels: int, min_pixels: int, options: VllmOptions,
                 window: float | None, fps: float) -> VllmEngine:
    """A ``VllmEngine`` for sessions with this window, or a ``ModelLoadError`` that says why not."""
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
    except ImportError as exc:
        raise VllmUnavailable(f"the vllm backend needs vLLM, which is not importable here ({exc}); "
                              "see docs/serving.md#vllm") from None
    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    unknown = sorted(set(options.engine_args) - known)
    if unknown:
        raise ModelLoadError(f"--vllm-arg {unknown[0]}: not a vLLM engine argument (AsyncEngineArgs field)")
    turns, _ = window_turns(window, None, fps)
    # Frames per prompt: a window's worth (plus the new one), or as many as an unbounded context may hold.
    max_frames = turns + 1 if turns is not None else UNBOUNDED_FRAMES
    try:
        return VllmEngine(model_dir, tokenizer, max_pixels, min_pixels, options, max_frames)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"{model_dir}: vLLM could not start the model: {exc}") from None


def load(path: str | Path, settings, max_pixels: int, device: str | None) -> VllmEngine:
    """The ``vllm`` backend (``backend.BACKENDS``): an engine sized for ``settings``' sessions."""
    from .loading import load_stream_processor

    if device is not None:
        raise ModelLoadError("--device is the transformers backend's; vLLM places the model on its platform's "
                             "devices (CUDA_VISIBLE_DEVICES chooses GPUs)")
    processor = load_stream_processor(path)
    return start_engine(path, processor.tokenizer, max_pixels, MIN_PIXELS, VllmOptions(**settings.vllm),
                        settings.window, settings.fps)


@dataclass
class _VllmFrame:
    uuid: str
    image: Image.Image
    sent: bool = False


class VllmSession(ContextSession):
    """Feed frames (``push_frame``) and questions (``ask``); get one ``StreamEvent`` per frame,
    exactly as ``StreamingSession`` does, with vLLM doing the model work."""

    def __init__(self, engine: VllmEngine, max_pixels: int | None = None, min_pixels: int | None = None,
                 max_context_tokens: int | None = None, **options: Any) -> None:
        """``options``: ``ContextSession``'s (fps, system_prompt, window, decision ...); the pixel
        budget is the engine's unless given."""
        self.engine = engine
        # The engine's max_model_len bounds every request (the prompt and the token decided after it).
        budget = min(max_context_tokens or engine.max_model_len, engine.max_model_len - 1)
        super().__init__(engine.tokenizer, engine.vocab_rows, max_pixels=max_pixels or engine.max_pixels,
                         min_pixels=min_pixels or engine.min_pixels, max_context_tokens=budget, **options)
        if (self.max_pixels, self.min_pixels) != (engine.max_pixels, engine.min_pixels):
            raise ValueError("a vLLM session's pixel budget is its engine's (vLLM sized its engine for that budget)")
        self._state_list = [self.state_ids[state] for state in State]
        self._id = uuid.uuid4().hex
        self.last_prompt_ids: list[int] = []
        """The prompt of the latest decision as vLLM read it (image pads expanded by vLLM)."""

    def push_frame(self, image: Image.Image, t: float | None = None) -> StreamEvent:
        """Read the frame of moment ``t`` (None: the next turn) and decide."""
        started = time.perf_counter()
        turn = self.context.turn_at(t)
        image = fit_to_budget(image, self.min_pixels, self.max_pixels)
        grid = (image.height // PATCH_FACTOR, image.width // PATCH_FACTOR)  # one visual token per 28 x 28
        current = self.context.open_turn(turn, grid, _VllmFrame(f"{self._id}-{turn}", image))
        self.context.evict(current)
        ids = self.context.prompt_ids(current)
        frames = [kept.frame for kept in self.context.turns] + [current.frame]
        if len(ids) + 1 > self.engine.max_model_len or len(frames) > self.engine.max_frames:
            raise ValueError(f"the context holds {len(ids)} tokens and {len(frames)} frames, over the engine's "
                             f"max_model_len {self.engine.max_model_len} or {self.engine.max_frames} frames: "
                             "give the session a window")
        params = self.engine.SamplingParams(max_tokens=1, temperature=0.0, allowed_token_ids=self._state_list,
                                            logprob_token_ids=self._state_list, detokenize=False)
        output = self._generate(ids, frames, params)
        read = list(output.prompt_token_ids)
        if read != ids:
            raise RuntimeError(f"vLLM read {len(read)} prompt tokens where the session laid out {len(ids)}: "
                               "its image processor sized a frame differently")
        self.last_prompt_ids = read
        cached = output.num_cached_tokens or 0
        logprobs = output.outputs[0].logprobs[0]
        state_logits = torch.tensor([logprobs[token].logprob for token in self._state_list])
        state, probabilities = self.decision.decide(state_logits)
        answer = self._answer(ids, frames) if state is State.RESPONSE else ""
        self.context.close(current, state, answer)
        latency = (time.perf_counter() - started) * 1000
        return StreamEvent(turn / self.fps, turn, state, answer, latency, probabilities, current.questions,
                           context_tokens=len(ids), cached_tokens=cached)

    @property
    def cache_length(self) -> int:
        """Tokens of the latest decision's context (vLLM holds their keys and values while it can)."""
        return len(self.last_prompt_ids)

    def context_ids(self) -> list[int]:
        """Every token the model has read or will read before the next frame."""
        return self.context.system_ids + self.context.retained_ids()

    def _answer(self, ids: list[int], frames: list[_VllmFrame]) -> str:
        params = self.engine.SamplingParams(
            max_tokens=self.decoder.max_new_tokens, temperature=0.0, allowed_token_ids=self.engine.answer_ids,
            stop_token_ids=sorted(self.decoder.stop_ids), detokenize=False,
        )
        tokens = list(self._generate(ids + [self.state_ids[State.RESPONSE]], frames, params).outputs[0].token_ids)
        if tokens and tokens[-1] in self.decoder.stop_ids:
            tokens.pop()
        return self.decoder.text(tokens)

    def _generate(self, ids: list[int], frames: list[_VllmFrame], params) -> Any:
        """One request; frames vLLM has seen go by id alone, and all go again if its cache dropped one."""
        try:
            output = self.engine.generate(self._prompt(ids, frames, resend=False), params)
        except Exception as exc:
            if not _frame_cache_miss(exc):
                raise
            output = self.engine.generate(self._prompt(ids, frames, resend=True), params)
        for frame in frames:
            frame.sent = True
        return output

    def _prompt(self, ids: list[int], frames: list[_VllmFrame], resend: bool) -> dict[str, Any]:
        return {
            "prompt_token_ids": collapse_image_pads(ids, self.tokens.image_token_id),
            "multi_modal_data": {"image": [frame.image if resend or not frame.sent else None for frame in frames]},
            "multi_modal_uuids": {"image": [frame.uuid for frame in frames]},
        }


def collapse_image_pads(ids: list[int], pad: int) -> list[int]:
    """The prompt vLLM takes: each frame's run of image pads as one pad (vLLM expands it from the frame)."""
    collapsed: list[int] = []
    for token in ids:
        if token == pad and collapsed and collapsed[-1] == pad:
            continue
        collapsed.append(token)
    return collapsed


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass


def _frame_cache_miss(exc: BaseException | None) -> bool:
    """vLLM refused a frame sent by id alone: its processor cache no longer holds it (AsyncLLM
    wraps the processor's ValueError in an EngineGenerateError)."""
    while exc is not None:
        if isinstance(exc, ValueError) and "Cache miss" in str(exc):
            return True
        exc = exc.__cause__
    return False


def _cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()
