"""The ``streamo serve`` app: FastAPI routes, the API key, limits and metrics; no model logic.

One WebSocket connection is one live session (``LiveConnection``): it translates protocol
messages into scheduler work and the scheduler's results into ``event`` messages. The
model runs in the scheduler's thread, frames are decoded in worker threads, so the event
loop only moves bytes and JSON.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import logging
import uuid
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..engine.decoding import DecisionRule
from ..engine.model import StreamModel
from ..protocol import State, frame_turn
from .frames import decode_frame
from .media import media_router
from .messages import (
    CLIENT_MESSAGE,
    CLIENT_TYPES,
    KEY_SUBPROTOCOL_PREFIX,
    PROTOCOL,
    Ask,
    Close,
    Closed,
    Config,
    Error,
    Event,
    FrameHeader,
    LatencySummary,
    Limits,
    ProtocolError,
    Ready,
    Source,
    SourceEnded,
    excerpt,
)
from .scheduler import Decided, Failed, Scheduler
from .sources import list_samples, list_sources, resolve_source

log = logging.getLogger("streamo.live")

CLOSE_UNAUTHORIZED = 4401
CLOSE_SERVER_FULL = 1013
"""WebSocket's "try again later"."""
CLOSE_IDLE = 4408
CLOSE_BACKLOG = 4429
"""The client let more than the outbox's bound of messages pile up unread."""
CLOSE_SHUTDOWN = 1001
"""WebSocket's "going away", after ``closed`` with reason ``shutdown``."""
CLOSE_FORBIDDEN_ORIGIN = 4403
"""Sent before the handshake completes, so the client sees HTTP 403."""
CLOSE_CODES = {"client": 1000, "idle_timeout": CLOSE_IDLE, "shutdown": CLOSE_SHUTDOWN}
STATIC = Path(__file__).resolve().parent / "static"
PAGE_POLICY = ("default-src 'self'; connect-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
"""Content-Security-Policy of the page: its own scripts and server only, nothing from elsewhere."""
LATENCY_WINDOW = 10_000
"""Latencies kept per session for the closing summary's p95 (the last this many frames)."""


@dataclass
class ServeSettings:
    """Everything ``streamo serve`` was started with, bar the model itself."""

    api_key: str | None = None
    max_sessions: int = 8
    max_queue: int = 8
    max_message_bytes: int = 64 * 1024
    max_frame_bytes: int = 4 * 1024 * 1024
    max_frame_side: int = 4096
    max_frame_rate: float = 4.0
    """Frames a second, in multiples of fps, that may displace a waiting frame; beyond, dropped unread."""
    max_message_rate: float = 500.0
    """Messages a second a session's socket is read at, at most; beyond, the client waits (TCP backpressure)."""
    max_question_chars: int = 2000
    max_waiting_questions: int = 16
    idle_timeout: float = 60.0
    max_outbox_messages: int = 1000
    max_outbox_bytes: int = 1024 * 1024
    """Messages (and their bytes) a session may have waiting for its client to read; beyond, closed."""
    max_connections: int = 64
    """Open TCP connections, sessions and plain HTTP together; one more is closed at once."""
    handshake_timeout: float = 10.0
    """Seconds a new connection has to send its request (an HTTP request or the WebSocket upgrade)."""
    ping_interval: float = 20.0
    """Seconds between the server's WebSocket pings (uvicorn's keepalive)."""
    ping_timeout: float = 20.0
    """Seconds a pong may take once the server reads the socket again (``listener.ThrottledWebSocket``)."""
    shutdown_grace: float = 10.0
    """Seconds sessions have to decide the frames they hold when the server stops."""
    allow_origins: list[str] = field(default_factory=list)
    """Web origins (``https://host:port``) whose pages may open sessions, beside the server's own page."""
    sources: list[Path] = field(default_factory=list)
    allow_urls: bool = False

    @property
    def transport_max_bytes(self) -> int:
        """The WebSocket layer's hard cap: room for our own limits to answer with an ``error``."""
        return max(self.max_frame_bytes, self.max_message_bytes) * 2 + 64 * 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _key_matches(expected: str, offered: str | None) -> bool:
    return offered is not None and hmac.compare_digest(expected.encode(), offered.encode())


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def _subprotocol_key(offered: list[str]) -> str | None:
    for entry in offered:
        if entry.startswith(KEY_SUBPROTOCOL_PREFIX):
            encoded = entry[len(KEY_SUBPROTOCOL_PREFIX):]
            try:
                return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
    return None


class Metrics:
    """Prometheus series, in a registry of the app's own (several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions = Gauge("streamo_sessions_open", "Live sessions open", registry=self.registry)
        self.waiting = Gauge("streamo_frames_waiting", "Frames received and not yet decided, all sessions together",
                             registry=self.registry)
        self.decided = Counter("streamo_frames_decided", "Frames decided", registry=self.registry)
        self.dropped = Counter("streamo_frames_dropped", "Frames dropped because a session's queue was full",
                               registry=self.registry)
        self.responses = Counter("streamo_responses", "Frames decided as Response", registry=self.registry)
        self.latency = Histogram(
            "streamo_decision_latency_seconds", "Model time per frame (read, decide, answer)", registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.wait = Histogram(
            "streamo_frame_wait_seconds", "Time a frame waited for the model", registry=self.registry,
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.errors = Counter("streamo_errors", "Errors sent to clients", ["code"], registry=self.registry)
        self.unread = Counter("streamo_frames_unread",
                              "Of the dropped frames, those dropped before decoding (over the frame rate limit)",
                              registry=self.registry)
        self.closed = Counter("streamo_sessions_closed", "Sessions closed, by reason", ["reason"], registry=self.registry)
        self.refused = Counter("streamo_connections_refused",
                               "Connections closed before any session: over --max-connections, no request within the "
                               "handshake timeout, or an Origin not allowed", ["reason"], registry=self.registry)
        self.context_tokens = Counter("streamo_context_tokens", "Tokens attended to by decisions", registry=self.registry)
        self.cached_tokens = Counter("streamo_cached_tokens",
                                     "Of those, tokens read from the (KV or prefix) cache; the ratio is the cache hit rate",
                                     registry=self.registry)


class _Bucket:
    """A token bucket: ``rate`` a second, at most ``burst`` at once."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def wait(self, now: float) -> float:
        """Seconds until a token is there."""
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)


@dataclass
class _Drained:
    """Marker: every frame received before ``close`` (or the server's shutdown) has been decided."""

    reason: str = "client"


class LiveConnection:
    """One WebSocket session: protocol messages in, scheduler work out, events back."""

    PATH = "/v1/stream"
    SUBPROTOCOL: str | None = PROTOCOL
    """The WebSocket subprotocol selected when the client offers it."""

    def __init__(self, app_state: "AppState", websocket: WebSocket) -> None:
        self.state = app_state
        self.settings = app_state.settings
        self.ws = websocket
        self.id = uuid.uuid4().hex
        self.loop = asyncio.get_running_loop()
        self.outbox: deque[tuple[str, int | None] | None] = deque()
        """Serialized messages for the client, with the close code the last one ends with."""
        self.outbox_bytes = 0
        self.outbox_ready = asyncio.Event()
        self.backlogged = False
        self.progress = asyncio.Event()
        self.pending = 0
        """Frames submitted and neither decided nor dropped."""
        self.questions_waiting = 0
        self.last_turn = -1
        self.header_t: float | None = None
        self.header_seen = False
        self.closing = False
        self.pushed = False
        self.source_task: asyncio.Task | None = None
        self.decision = DecisionRule(response_threshold=app_state.model.settings.response_threshold)
        self.frames = 0
        self.responses = 0
        self.dropped = 0
        frame_rate = self.settings.max_frame_rate * app_state.fps
        self.frame_bucket = _Bucket(frame_rate, max(1.0, frame_rate), self.loop.time())
        self.message_bucket = _Bucket(self.settings.max_message_rate, self.settings.max_message_rate, self.loop.time())
        self.parked: tuple[bytes, float, int] | None = None
        """The newest frame over the rate limit, undecoded: decided when the queue has room, unless a newer one comes."""
        self.unparking: asyncio.Task | None = None
        self.decoding = asyncio.Lock()
        """Frames reach the scheduler in time order whether they come from the socket or the parking place."""
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.finished = asyncio.Event()
        self.end_reason: str | None = None
        self.ended = asyncio.Event()
        """``run`` has returned: the socket is closed or given up."""

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        scheduler, metrics = self.state.scheduler, self.state.metrics
        scheduler.open(self.id, self._deliver_threadsafe, self.decision)
        metrics.sessions.inc()
        sender = asyncio.create_task(self._send_loop())
        client = self.ws.client
        log.info("session %s: start (from %s)", self.id, f"{client.host}:{client.port}" if client else "?")
        try:
            self._emit(self.state.ready(self.id))
            await self._receive_loop()
        finally:
            for task in (self.source_task, self.unparking):
                if task is not None:
                    task.cancel()
            scheduler.remove(self.id)
            metrics.sessions.dec()
            log.info("session %s: end (%s): %d seconds decided, %d answers, %d dropped", self.id,
                     self.end_reason or "disconnected", self.frames, self.responses, self.dropped)
            if not self.finished.is_set():
                metrics.closed.labels("disconnect").inc()
            self._push(None)
            try:
                await asyncio.wait_for(sender, timeout=0 if self.backlogged else 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                sender.cancel()
            if self.ws.client_state is WebSocketState.CONNECTED:
                try:
                    await asyncio.wait_for(self.ws.close(CLOSE_BACKLOG if self.backlogged else 1000), timeout=1)
                except (RuntimeError, OSError, asyncio.TimeoutError):
                    pass
            self.ended.set()

    async def _receive_loop(self) -> None:
        receive: asyncio.Future | None = None
        try:
            while not self.finished.is_set():
                if receive is None:
                    # Over the message rate the socket is read no faster: TCP pushes back on the client.
                    while not self.message_bucket.take(self.loop.time()):
                        await asyncio.sleep(self.message_bucket.wait(self.loop.time()))
                    receive = asyncio.ensure_future(self.ws.receive())
                finished = asyncio.ensure_future(self.finished.wait())
                done, _ = await asyncio.wait({receive, finished}, timeout=self.settings.idle_timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                finished.cancel()
                if receive in done:
                    message, receive = receive.result(), None
                    if message["type"] == "websocket.disconnect":
                        return
                    await self._on_message(message)
                elif not self.finished.is_set() and not self._busy():
                    self._error(ProtocolError("idle_timeout", f"no message for {self.settings.idle_timeout:g} s"), closes=True)
                    self.finish("idle_timeout")
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            if receive is not None:
                receive.cancel()

    async def _on_message(self, message: dict[str, Any]) -> None:
        """One client message; whatever goes wrong becomes an ``error`` and the session goes on."""
        try:
            await self._handle(message)
        except ProtocolError as exc:
            self._error(exc)
        except Exception:  # a server fault must not end the session silently or show the client internals
            log.exception("session %s: a message could not be handled", self.id)
            self._error(ProtocolError("internal", "the server failed on this message; the session goes on"))

    async def _handle(self, message: dict[str, Any]) -> None:
        """One client message in this connection's protocol (``streamo.v1`` here)."""
        if message.get("bytes") is not None:
            await self._on_frame(message["bytes"])
        else:
            await self._on_text(message.get("text") or "")

    def _busy(self) -> bool:
        """Frames still to decide or a source playing: the session is not idle."""
        return bool(self.pending) or (self.source_task is not None and not self.source_task.done())

    def finish(self, reason: str) -> None:
        """Send ``closed`` with the session's summary; the sender closes the socket after it."""
        if self.finished.is_set():
            return
        latency = None
        if self.latencies:
            from ..metrics.scoring import latency_stats

            mean, p95, peak = latency_stats(self.latencies)
            latency = LatencySummary(mean=round(mean, 3), p95=round(p95, 3), max=round(peak, 3))
        self.end_reason = reason
        self._emit(Closed(reason=reason, frames=self.frames, responses=self.responses, dropped=self.dropped,
                          latency_ms=latency), close_code=CLOSE_CODES[reason])
        self.state.metrics.closed.labels(reason).inc()
        self.finished.set()

    def shut_down(self) -> None:
        """The server stops: take nothing more, decide what is queued, then ``closed`` (reason ``shutdown``)."""
        if self.finished.is_set():
            return
        self.closing = True
        if self.source_task is not None:
            self.source_task.cancel()
        self._drop_parked()
        self.state.scheduler.submit_marker(self.id, _Drained("shutdown"))

    # ------------------------------------------------------------ client messages

    async def _on_text(self, text: str) -> None:
        if len(text.encode()) > self.settings.max_message_bytes:
            raise ProtocolError("message_too_large", f"text message over {self.settings.max_message_bytes} bytes")
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError("bad_json", f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ProtocolError("bad_json", "a message must be a JSON object")
        if data.get("type") not in CLIENT_TYPES:
            raise ProtocolError("unknown_type", f"unknown message type {excerpt(data.get('type'))}; "
                                f"expected one of {', '.join(CLIENT_TYPES)}")
        try:
            message = CLIENT_MESSAGE.validate_python(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(excerpt(part) if isinstance(part, str) else str(part) for part in first["loc"][1:])
            raise ProtocolError("bad_message", f"{data['type']}: {where or 'message'}: {first['msg']}") from None
        if self.closing:
            raise ProtocolError("session_closing", f"{message.type} after close")
        if isinstance(message, Ask):
            self._on_ask(message)
        elif isinstance(message, FrameHeader):
            self.header_t, self.header_seen = message.t, True
        elif isinstance(message, Config):
            self._on_config(message)
        elif isinstance(message, Source):
            await self._on_source(message)
        elif isinstance(message, Close):
            await self._close()

    async def _close(self) -> None:
        """The client's ``close``: take nothing more, decide what was received, then ``closed``."""
        self.closing = True
        await self._unpark(closing=True)
        self.state.scheduler.submit_marker(self.id, _Drained())

    def _on_ask(self, message: Ask) -> None:
        limit = self.settings.max_question_chars
        if len(message.text) > limit:
            raise ProtocolError("question_too_long", f"question of {len(message.text)} characters; the limit is {limit}")
        if self.questions_waiting >= self.settings.max_waiting_questions:
            raise ProtocolError("too_many_questions", f"{self.questions_waiting} questions already wait for their frame")
        self.questions_waiting += 1
        self.state.scheduler.submit_ask(self.id, message.text, message.t)

    def _on_config(self, message: Config) -> None:
        given = message.model_fields_set
        threshold = message.response_threshold if "response_threshold" in given else self.decision.response_threshold
        bias = dict(message.bias or {}) if "bias" in given else dict(self.decision.bias)
        self.decision = DecisionRule(bias=bias, response_threshold=threshold)
        self.state.scheduler.configure(self.id, self.decision)

    async def _on_source(self, message: Source) -> None:
        if self.pushed or self.source_task is not None:
            raise ProtocolError("source_busy", "this session already has frames; open a new session for a source")
        # No other message of this session is read while the filesystem answers.
        target = await asyncio.to_thread(resolve_source, message, self.settings.sources, self.settings.allow_urls)
        self.source_task = asyncio.create_task(self._play(target, message.path or message.url or "", message.realtime))

    async def _on_frame(self, data: bytes) -> None:
        t, self.header_t, header_seen, self.header_seen = self.header_t, None, self.header_seen, False
        await self._push_frame(data, t if header_seen else None)

    def next_t(self, t: float | None) -> float:
        """A frame's time: ``t`` when given, else the turn after the last frame's."""
        return (self.last_turn + 1) / self.state.fps if t is None else t

    async def _push_frame(self, data: bytes, t: float | None) -> None:
        """A picture for the moment ``t`` (None: the next turn), within the frame rate limit."""
        if self.closing:
            raise ProtocolError("session_closing", "frame after close")
        if self.source_task is not None:
            raise ProtocolError("source_busy", "this session plays a server-side source")
        fps = self.state.fps
        t = self.next_t(t)
        turn = frame_turn(t, fps)
        if turn <= self.last_turn:
            raise ProtocolError("frame_out_of_order", f"frame at t={t:g} s is turn {turn}, but turn {self.last_turn} was already received")
        self._drop_parked()
        async with self.decoding:  # an unparked frame being decoded counts as waiting
            if not self._room():
                # Over the rate limit it would only push a waiting frame out: it waits undecoded for room,
                # and a newer frame drops it before any work is spent on it.
                self.parked, self.last_turn = (data, t, turn), turn
                return
            await self._decode_and_submit(data, t, turn)

    async def _decode_and_submit(self, data: bytes, t: float, turn: int) -> None:
        settings = self.settings
        image = await asyncio.to_thread(decode_frame, data, settings.max_frame_bytes, settings.max_frame_side,
                                        self.state.min_pixels, self.state.max_pixels)
        self.pushed = True
        self._submit(image, t, turn)

    async def _unpark(self, closing: bool = False) -> None:
        """Decide the parked frame if it no longer pushes a waiting frame out (or the session closes)."""
        async with self.decoding:
            if self.parked is None or self.finished.is_set() or not (closing or self._room()):
                return
            parked, self.parked = self.parked, None
            try:
                await self._decode_and_submit(*parked)
            except ProtocolError as exc:
                self._error(exc)

    def _drop_parked(self) -> None:
        if self.parked is None:
            return
        self.parked = None
        self.dropped += 1
        self.state.scheduler.drop_unread(self.id)
        self.state.metrics.dropped.inc()
        self.state.metrics.unread.inc()

    def _room(self) -> bool:
        """A frame may be decoded: the queue has room, or the rate limit lets it push the oldest out."""
        return (self.state.scheduler.frames_waiting(self.id) < self.state.scheduler.max_queue
                or self.frame_bucket.take(self.loop.time()))


    def _submit(self, image: Any, t: float, turn: int) -> None:
        dropped = self.state.scheduler.submit_frame(self.id, image, t)
        self.last_turn = turn
        self.pending += 1 - dropped
        self.dropped += dropped
        if dropped:
            self.state.metrics.dropped.inc(dropped)

    async def _play(self, target: str, asked: str, realtime: bool) -> None:
        from ..video import MIN_PIXELS
        from ..video.inputs import InputError, open_input

        count, reason = 0, "end"
        try:
            source = await asyncio.to_thread(open_input, target, self.state.fps, self.state.max_pixels, MIN_PIXELS)
            started = self.loop.time()
            while True:
                item = await asyncio.to_thread(next, source.frames, None)
                if item is None:
                    break
                turn, image = item
                if realtime:
                    await asyncio.sleep(max(0.0, started + turn / self.state.fps - self.loop.time()))
                else:
                    while self.pending >= self.state.scheduler.max_queue:
                        self.progress.clear()
                        await self.progress.wait()
                self._submit(image, turn / self.state.fps, turn)
                count += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a decoder fault must end the source, not leave the session waiting
            if isinstance(exc, InputError):
                log.warning("session %s: source %s: %s", self.id, target, exc)
            else:
                log.exception("session %s: source %s failed", self.id, target)
            # What the server found is its own (paths, decoder internals): the client is told which source failed.
            self._error(ProtocolError("source_failed", f"source {excerpt(asked)} could not be decoded"))
            reason = "failed"
        self.state.scheduler.submit_marker(self.id, SourceEnded(frames=count, reason=reason))

    # ------------------------------------------------------------ results and sending

    def _deliver_threadsafe(self, result: Any) -> None:
        self.loop.call_soon_threadsafe(self._on_result, result)

    def _on_result(self, result: Any) -> None:
        metrics = self.state.metrics
        if isinstance(result, Decided):
            event = result.event
            self.pending -= 1
            self.questions_waiting -= len(event.questions)
            self.frames += 1
            self.responses += event.state is State.RESPONSE
            self.latencies.append(event.latency_ms)
            metrics.decided.inc()
            metrics.responses.inc(event.state is State.RESPONSE)
            metrics.latency.observe(event.latency_ms / 1000)
            metrics.wait.observe(result.wait_ms / 1000)
            metrics.context_tokens.inc(event.context_tokens)
            metrics.cached_tokens.inc(event.cached_tokens)
            self._emit_event(result, Event(
                t=event.t, turn=event.turn, state=event.state, text=event.text, latency_ms=round(event.latency_ms, 3),
                wait_ms=round(result.wait_ms, 3), probabilities={s: round(p, 6) for s, p in event.probabilities.items()},
                questions=event.questions, waiting=result.waiting, dropped=result.dropped,
                context_tokens=event.context_tokens, cached_tokens=event.cached_tokens,
            ))
            if self.parked is not None and not self.closing and (self.unparking is None or self.unparking.done()):
                self.unparking = asyncio.create_task(self._unpark())
        elif isinstance(result, Failed):
            self.pending -= result.frame
            self.dropped += result.frame
            metrics.dropped.inc(result.frame)
            self.questions_waiting -= result.questions
            what = "frame" if result.frame else "question"
            if result.code == "context_full":
                self._error(ProtocolError("context_full", f"this {what} does not fit the context: {result.message}"))
            else:  # the exception is logged; the client learns only that its item failed
                self._error(ProtocolError("internal", f"the model failed on this {what}; the session goes on"))
        elif isinstance(result, SourceEnded):
            self._emit(result)
        elif isinstance(result, _Drained):
            self.finish(result.reason)
        self.progress.set()

    def _emit_event(self, result: Decided, event: Event) -> None:
        """Send one frame's decision (another protocol may say it otherwise)."""
        self._emit(event)

    def _error(self, exc: ProtocolError, closes: bool = False) -> None:
        self.state.metrics.errors.labels(exc.code).inc()
        self._emit(Error(code=exc.code, message=exc.message, closes=closes))

    @staticmethod
    def refusal(exc: ProtocolError) -> str:
        """The error that refuses a session before it opens (it closes)."""
        return Error(code=exc.code, message=exc.message, closes=True).model_dump_json()

    def _emit(self, message: Any, close_code: int | None = None) -> None:
        """Queue a protocol message (``messages.py``) for the client."""
        self._queue(message.model_dump_json(), close_code)

    def _queue(self, text: str, close_code: int | None = None) -> None:
        """Queue a serialized message; a client that lets the outbox's bound fill is closed (``CLOSE_BACKLOG``)."""
        if self.backlogged or self.finished.is_set():
            return
        if len(self.outbox) >= self.settings.max_outbox_messages or \
                self.outbox_bytes + len(text) > self.settings.max_outbox_bytes:
            log.warning("session %s: closed: the client leaves its messages unread (%d waiting, %d bytes)",
                        self.id, len(self.outbox), self.outbox_bytes)
            self.backlogged = True
            self.outbox.clear()
            self.outbox_bytes = 0
            self.state.metrics.closed.labels("backlog").inc()
            self.finished.set()
            self._push(None)
            return
        self.outbox_bytes += len(text)
        self._push((text, close_code))

    def _push(self, item: tuple[str, int | None] | None) -> None:
        self.outbox.append(item)
        self.outbox_ready.set()

    async def _send_loop(self) -> None:
        while True:
            while not self.outbox:
                self.outbox_ready.clear()
                await self.outbox_ready.wait()
            item = self.outbox.popleft()
            if item is None:
                return
            text, close_code = item
            self.outbox_bytes -= len(text)
            try:
                await self.ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return
            if close_code is not None:
                try:
                    await self.ws.close(close_code)
                except RuntimeError:
                    pass
                return


class AppState:
    """What every connection shares: settings, the model's facts, the scheduler and metrics."""

    def __init__(self, settings: ServeSettings, model_name: str, model: StreamModel) -> None:
        from ..video.sampling import MIN_PIXELS

        self.settings = settings
        self.model_name = model_name
        self.model = model
        """Opens every session's engine session; its settings are the served ones (fps, window, threshold)."""
        self.fps = model.settings.fps
        self.max_pixels, self.min_pixels = model.max_pixels, MIN_PIXELS
        self.model_threads = model.model_threads(settings.max_sessions)
        self.metrics = Metrics()
        self.draining = False
        self.scheduler: Scheduler | None = None
        self.connections: dict[str, LiveConnection] = {}
        self.metrics.waiting.set_function(lambda: sum(c.pending for c in list(self.connections.values())))

    def ready(self, session_id: str) -> Ready:
        s = self.settings
        return Ready(
            session=session_id, model=self.model_name, backend=self.model.backend, fps=self.fps,
            window=self.model.settings.window, response_threshold=self.model.settings.response_threshold,
            limits=Limits(
                max_message_bytes=s.max_message_bytes, max_frame_bytes=s.max_frame_bytes,
                max_frame_side=s.max_frame_side, max_frame_pixels=s.max_frame_side ** 2, max_queue=s.max_queue, max_frame_rate=s.max_frame_rate,
                max_question_chars=s.max_question_chars, max_waiting_questions=s.max_waiting_questions,
                idle_timeout_s=s.idle_timeout, max_pixels=self.max_pixels, max_context_tokens=self.model.max_context_tokens,
            ),
            sources=bool(s.sources), urls=s.allow_urls,
        )

    def unavailable(self) -> str | None:
        """Why a new session would be refused now (``full`` or ``draining``), or None: the one rule
        behind the socket's ``server_full`` refusal and ``/healthz``'s readiness."""
        if self.draining:
            return "draining"
        if len(self.connections) >= self.settings.max_sessions:
            return "full"
        return None

    async def drain(self) -> None:
        """Stop every session for a shutdown: each decides what it holds within the grace period,
        then gets ``closed`` (reason ``shutdown``, with its counts) before its socket closes."""
        self.draining = True
        connections = list(self.connections.values())
        for connection in connections:
            connection.shut_down()
        waits = [asyncio.ensure_future(connection.ended.wait()) for connection in connections]
        if waits:
            await asyncio.wait(waits, timeout=self.settings.shutdown_grace)
        late = [connection for connection in connections if not connection.ended.is_set()]
        for connection in late:
            connection.finish("shutdown")
        if late:
            await asyncio.wait([asyncio.ensure_future(connection.ended.wait()) for connection in late], timeout=2)
        for wait in waits:
            wait.cancel()

    def origin_allowed(self, origin: str | None, host: str | None, scheme: str) -> bool:
        """No Origin (not a browser), an ``--allow-origin`` one, or the server's own page. Without
        a key the server's own page must also be on a loopback name, so a DNS name rebound to
        127.0.0.1 by someone else's page is not taken for it."""
        if origin is None or origin.rstrip("/") in self.settings.allow_origins:
            return True
        if not host:
            return False
        own = f"{'https' if scheme in ('https', 'wss') else 'http'}://{host}".lower()
        if origin.lower() != own:
            return False
        return self.settings.api_key is not None or is_loopback(urlsplit(own).hostname or "")


def create_app(state: AppState, protocols: tuple[type[LiveConnection], ...] = (LiveConnection,)) -> FastAPI:
    """The ASGI app, with a WebSocket route for each session protocol (at its ``PATH``); the
    scheduler (and its model threads) lives as long as the app runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.scheduler = Scheduler(state.model.session, state.settings.max_queue, state.model_threads)
        try:
            yield
        finally:
            await state.drain()
            state.scheduler.stop()

    app = FastAPI(title="Streamo live", summary="Live streaming sessions with a Streamo model", lifespan=lifespan)
    app.state.streamo = state
    key = state.settings.api_key

    def require_key(request: Request) -> None:
        if key is not None and not _key_matches(key, _bearer(request.headers.get("authorization"))):
            raise HTTPException(status_code=401, detail="missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The live page (static, no data: the key is asked in the page and sent on the socket)."""
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/label", include_in_schema=False)
    async def label_page() -> FileResponse:
        """Label mode: annotate one's own video in the browser (nothing leaves the page)."""
        return FileResponse(STATIC / "label.html", headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/healthz", include_in_schema=True, responses={503: {"description": "full or shutting down"}})
    async def healthz() -> JSONResponse:
        """Readiness, open to all, holding no data: 200 ``ok`` while a session would be taken, 503
        ``full`` or ``draining`` while it would be refused, so a balancer's check steers new sessions
        away. While the model loads the port refuses connections (``reserve_port``)."""
        reason = state.unavailable()
        return JSONResponse({"status": reason or "ok"}, status_code=503 if reason else 200)

    @app.get("/metrics", dependencies=[Depends(require_key)], response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus text format."""
        return PlainTextResponse(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/sources", dependencies=[Depends(require_key)])
    async def sources() -> dict[str, list[Any]]:
        """Server-side videos a session may play with ``{"type": "source", "path": ...}``, and the
        raw samples annotated on them (from a ``raw_data.json`` under ``--sources``)."""
        roots = state.settings.sources
        return {"sources": await asyncio.to_thread(list_sources, roots),
                "samples": await asyncio.to_thread(list_samples, roots)}

    app.include_router(media_router(state.settings.sources, require_key))

    for kind in protocols:
        app.add_api_websocket_route(kind.PATH, _route(state, kind))
    return app


def _route(state: AppState, kind: type[LiveConnection]):
    async def session(websocket: WebSocket) -> None:
        await open_session(state, websocket, kind)

    return session


async def open_session(state: AppState, websocket: WebSocket, kind: type[LiveConnection]) -> None:
    """Every protocol's way in: the Origin rule, the key, the session bound, then ``kind``'s session."""
    if not state.origin_allowed(websocket.headers.get("origin"), websocket.headers.get("host"), websocket.url.scheme):
        # Refused in the handshake (HTTP 403): a page from elsewhere never gets a session.
        state.metrics.refused.labels("origin").inc()
        await websocket.close(CLOSE_FORBIDDEN_ORIGIN)
        return
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    await websocket.accept(subprotocol=kind.SUBPROTOCOL if kind.SUBPROTOCOL in offered else None)
    key = state.settings.api_key
    if key is not None:
        offered_key = _bearer(websocket.headers.get("authorization")) or _subprotocol_key(offered)
        if not _key_matches(key, offered_key):
            await _refuse(websocket, state, kind, "unauthorized", "missing or wrong API key", CLOSE_UNAUTHORIZED)
            return
    if state.unavailable() is not None:
        await _refuse(websocket, state, kind, "server_full",
                      f"the server holds its maximum of {state.settings.max_sessions} sessions; try again later",
                      CLOSE_SERVER_FULL)
        return
    connection = kind(state, websocket)
    state.connections[connection.id] = connection
    try:
        await connection.run()
    finally:
        del state.connections[connection.id]


async def _refuse(websocket: WebSocket, state: AppState, kind: type[LiveConnection], code: str, message: str,
                  close_code: int) -> None:
    state.metrics.errors.labels(code).inc()
    try:
        await websocket.send_text(kind.refusal(ProtocolError(code, message)))
        await websocket.close(close_code, reason=code)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass

