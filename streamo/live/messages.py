"""Every message of the session protocol (WebSocket ``/v1/stream``), both directions.

Client to server: JSON text messages (``ask``, ``frame``, ``config``, ``source``, ``close``)
and binary messages, each one frame picture (JPEG, PNG or WebP). A ``frame`` message, when
sent, gives the time of the binary message that follows it; a binary message with no
header is the next turn after the last frame. Server to client: ``ready`` once, one
``event`` per decided frame, ``error``, ``source_ended`` and, last, ``closed``.
The server validates with these models and the page and ``streamo.live.client`` speak them,
so this module is the protocol's one definition (the README's "Live sessions" section shows
a worked exchange).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import orjson

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from ..protocol import State

PROTOCOL = "streamo.v1"
"""WebSocket subprotocol the server selects; browsers send the API key as a second one."""
KEY_SUBPROTOCOL_PREFIX = "key."
"""``key.<base64url of the API key>``: the key offered as a subprotocol (browsers cannot set headers)."""

MAX_SECONDS = 1_000_000.0
"""Latest moment a message may name (about 11.6 days): a turn number stays a short number."""
MAX_BIAS = 1000.0
"""Largest bias, either sign: far past what saturates the decision, far below what overflows
float32 (the decision rule adds it in float32 whatever the model's dtype)."""

Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------- client to server


class Ask(_Message):
    """A question, shown with the frame of moment ``t`` (seconds), or with the next frame."""

    type: Literal["ask"]
    text: str
    t: Seconds | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("empty question")
        return value


class FrameHeader(_Message):
    """Announces the binary frame that follows: the start of its turn in seconds."""

    type: Literal["frame"]
    t: Seconds | None = None


class Config(_Message):
    """Changes the decision rule live; fields left out keep their value."""

    type: Literal["config"]
    response_threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    """Answer only when P(Response) is at least this; null: the most likely state."""
    bias: dict[State, Annotated[float, Field(ge=-MAX_BIAS, le=MAX_BIAS, allow_inf_nan=False)]] | None = None
    """Added to each state's logit before deciding (e.g. ``{"response": -1}`` answers less)."""


class Source(_Message):
    """Play a server-side video instead of pushing frames: a file under one of the server's
    ``--sources`` directories (``path``, relative to it) or, where allowed, a URL."""

    type: Literal["source"]
    path: str | None = None
    url: str | None = None
    realtime: bool = True
    """Pace frames by the wall clock; false: as fast as the model decides."""

    @model_validator(mode="after")
    def _one_origin(self) -> "Source":
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path and url")
        return self


class Close(_Message):
    """Finish the frames already received, then close with a summary."""

    type: Literal["close"]


ClientMessage = Annotated[Union[Ask, FrameHeader, Config, Source, Close], Field(discriminator="type")]
CLIENT_MESSAGE = TypeAdapter(ClientMessage)
CLIENT_TYPES = ("ask", "frame", "config", "source", "close")


# ----------------------------------------------------------------- server to client


class Limits(_Message):
    max_message_bytes: int
    """Largest JSON text message."""
    max_frame_bytes: int
    """Largest frame picture in bytes."""
    max_frame_side: int
    """Largest frame picture side in pixels (width and height each), checked before decoding."""
    max_frame_pixels: int
    """``max_frame_side`` squared: the limit's older form, kept because a v1 field is never removed."""
    max_queue: int
    """Frames that may wait for the model; beyond, the oldest waiting frames are dropped."""
    max_frame_rate: float
    """Frames a second, in multiples of ``fps``, that may arrive while ``max_queue`` frames wait;
    beyond, a frame is dropped unread."""
    max_question_chars: int
    max_waiting_questions: int
    idle_timeout_s: float
    max_pixels: int
    """The model's pixel budget per frame: larger frames are resized to it."""
    max_context_tokens: int | None = None
    """Tokens a session's context may hold (system prompt, retained turns, the new turn and its
    answer); older turns are evicted to stay within it."""


class Ready(_Message):
    type: Literal["ready"] = "ready"
    session: str
    model: str
    backend: str = "transformers"
    """What runs the model: ``transformers`` or ``vllm``."""
    fps: float
    window: float | None
    """Seconds of turns the model keeps; null: the whole stream."""
    response_threshold: float | None
    limits: Limits
    sources: bool
    """Whether server-side files can be played (``source`` with ``path``)."""
    urls: bool
    """Whether ``source`` with ``url`` is allowed."""


Finite = Annotated[float, Field(allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class Event(_Message):
    """The decision for one frame."""

    type: Literal["event"] = "event"
    t: Finite
    """Start of the frame's turn in seconds."""
    turn: int
    state: State
    text: str
    """The answer for a response, empty otherwise."""
    latency_ms: Finite
    """Model time for this frame (reading it, deciding and answering)."""
    wait_ms: Finite
    """Time the frame waited for the model after it was received."""
    probabilities: dict[State, Probability]
    questions: list[str]
    """Questions shown with this frame."""
    waiting: int
    """Frames of this session still waiting for the model."""
    dropped: int
    """Frames of this session dropped (queue full) since the previous event."""
    context_tokens: int = 0
    """Tokens the model attended to for this decision."""
    cached_tokens: int = 0
    """Of those, the tokens read from the cache (the transformers engine's KV cache, vLLM's prefix cache)."""


class Error(_Message):
    type: Literal["error"] = "error"
    code: str
    """Stable, from ``ERROR_CODES``."""
    message: str
    closes: bool = False
    """True when the session ends with this error."""


class SourceEnded(_Message):
    type: Literal["source_ended"] = "source_ended"
    frames: int
    """Frames the source gave."""
    reason: Literal["end", "failed"]


class LatencySummary(_Message):
    mean: Finite
    p95: Finite
    max: Finite


class Closed(_Message):
    type: Literal["closed"] = "closed"
    reason: Literal["client", "idle_timeout", "shutdown"]
    """``shutdown``: the server is stopping; frames not decided within its grace period are not."""
    frames: int
    """Frames decided."""
    responses: int
    dropped: int
    latency_ms: LatencySummary | None


ServerMessage = Annotated[Union[Ready, Event, Error, SourceEnded, Closed], Field(discriminator="type")]
SERVER_MESSAGE = TypeAdapter(ServerMessage)

ERROR_CODES: dict[str, str] = {
    "unauthorized": "missing or wrong API key (closes)",
    "server_full": "the server holds --max-sessions sessions (closes)",
    "idle_timeout": "no message and nothing to decide for the idle timeout (closes)",
    "bad_json": "a text message that is not a JSON object",
    "unknown_type": "a JSON message whose type the route does not know (/v1/stream: ask, frame, config, source, close)",
    "bad_message": "a known message with missing or invalid fields",
    "message_too_large": "a text message over max_message_bytes",
    "frame_too_large": "a frame over max_frame_bytes",
    "frame_too_many_pixels": "a frame wider or higher than max_frame_side (checked before decoding)",
    "not_an_image": "a binary message that is not a JPEG, PNG or WebP picture",
    "bad_frame": "a picture the model cannot take (an aspect ratio over 200)",
    "frame_out_of_order": "a frame whose time is not after the previous frame's turn",
    "question_too_long": "a question over max_question_chars",
    "too_many_questions": "more than max_waiting_questions questions wait for their frame",
    "session_closing": "a message after close",
    "source_refused": "a source outside the allowed directories, missing, or a URL when URLs are not allowed",
    "source_busy": "a source is already playing, or frames are being pushed",
    "source_failed": "the source could not be decoded",
    "context_full": "a question (with those waiting for the same frame) or a frame that cannot fit the context's token budget",
    "internal": "the model failed on a frame or question; the session goes on",
    "unsupported": "(/v1/realtime) an event, field or value of the Realtime API that Streamo does not honour; param names it",
    "conversation_already_has_active_response": "(/v1/realtime) a response.create while a forced answer still waits for its frame",
    "response_cancel_not_active": "(/v1/realtime) a response.cancel with no forced answer waiting",
}



MAX_ERROR_CHARS = 300
"""Longest ``error`` message."""
EXCERPT_CHARS = 40
"""Longest piece of a client's input an ``error`` message quotes."""


def escaped(text: str) -> str:
    """``text`` on one line: control, format and separator characters written as ``\\uXXXX``."""
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)


def excerpt(value: object) -> str:
    """A client's input as an error message may quote it: short, escaped, in double quotes."""
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    cut = len(text) > EXCERPT_CHARS
    return '"' + escaped(text[:EXCERPT_CHARS]) + ('…"' if cut else '"')


class ProtocolError(Exception):
    """Something a client sent that is refused; becomes an ``error`` message with ``code``.
    The message is made one line and cut to ``MAX_ERROR_CHARS``, whatever was put in it."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        message = escaped(message)
        if len(message) > MAX_ERROR_CHARS:
            message = message[:MAX_ERROR_CHARS - 1] + "…"
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        """The field at fault (``/v1/realtime``'s ``error.param``)."""
        self.event_id: str | None = None
        """The client event it answers, where the protocol names events (``/v1/realtime``)."""
