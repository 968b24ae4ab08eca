"""A client of the session protocol: ``LiveClient`` (async), ``stream_video`` and its
synchronous wrapper ``stream_video_sync``. ``streamo client``, the tests and the load
benchmark all use it, so what they check is what any program gets.

Frames are sent as PNG (lossless): a file played through the server gives exactly the
pixels ``streamo stream`` reads, so the same video and questions give the same decisions.
"""

from __future__ import annotations

import asyncio
import base64
import io
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .messages import KEY_SUBPROTOCOL_PREFIX, PROTOCOL, SERVER_MESSAGE, Closed, Error, Event, Ready

FRAME_ERRORS = frozenset({"frame_too_large", "frame_too_many_pixels", "not_an_image", "bad_frame", "frame_out_of_order"})
"""Errors that answer a frame instead of an event."""


class LiveError(RuntimeError):
    """The server refused the session or closed it with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class NoServerTook(ConnectionError):
    """No address given to ``LiveClient.connect_first`` took the session: ``failures`` has each one
    tried with what it answered, the last being what stopped the search."""

    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        super().__init__("; ".join(f"{url}: {_reason(exc)}" for url, exc in failures))
        self.failures = failures


def _reason(exc: BaseException) -> str:
    if isinstance(exc, LiveError):
        return f"refused: {exc}"
    return f"cannot connect: {str(exc) or type(exc).__name__}"


def encode_png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class LiveClient:
    """One live session: ``connect``, then ``ask`` / ``send_frame`` / ``configure`` /
    ``play_source`` / ``close``, reading server messages with ``receive``."""

    def __init__(self, connection: ClientConnection, ready: Ready, url: str = "") -> None:
        self.connection = connection
        self.ready = ready
        self.url = url
        """The session's ``ws(s)://…/v1/stream`` address (which replica ``connect_first`` found)."""

    @classmethod
    async def connect(cls, url: str, api_key: str | None = None, use_subprotocol_key: bool = False,
                      max_size: int | None = 2**24) -> "LiveClient":
        """``url``: ``ws://host:port/v1/stream`` (or ``http://host:port``, completed to it). The key
        goes in an ``Authorization`` header, or as a subprotocol as browsers must send it."""
        url = websocket_url(url)
        headers, protocols = {}, [PROTOCOL]
        if api_key is not None:
            if use_subprotocol_key:
                encoded = base64.urlsafe_b64encode(api_key.encode()).decode().rstrip("=")
                protocols.append(KEY_SUBPROTOCOL_PREFIX + encoded)
            else:
                headers["Authorization"] = f"Bearer {api_key}"
        # No per-message deflate: frames are JPEG/PNG already, compressing them again only costs time.
        connection = await connect(url, additional_headers=headers, subprotocols=protocols, max_size=max_size,
                                   compression=None, open_timeout=30)
        first = await _receive(connection)
        if isinstance(first, Error):
            await connection.close()
            raise LiveError(first.code, first.message)
        if not isinstance(first, Ready):
            await connection.close()
            raise LiveError("protocol", f"expected ready, got {first.type}")
        return cls(connection, first, url)

    @classmethod
    async def connect_first(cls, urls: Sequence[str], api_key: str | None = None, **options: Any) -> "LiveClient":
        """A session on the first of ``urls`` (replicas, or a balancer given more than once) that
        takes one: one that is full or shutting down (``server_full``, close code 1013) or refuses
        the connection (down, or still loading its model) is passed over for the next. Any other
        refusal (a wrong key, a failed handshake) ends the search: the next would say the same."""
        failures: list[tuple[str, BaseException]] = []
        for url in urls:
            try:
                return await cls.connect(url, api_key, **options)
            except (LiveError, OSError, asyncio.TimeoutError, InvalidHandshake, InvalidURI) as exc:
                failures.append((url, exc))
                if not (isinstance(exc, (OSError, asyncio.TimeoutError)) or getattr(exc, "code", None) == "server_full"):
                    break
        raise NoServerTook(failures)

    async def receive(self) -> Any:
        """The next server message (pydantic model); ``None`` once the connection is closed."""
        try:
            return await _receive(self.connection)
        except ConnectionClosed:
            return None

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.connection.send(orjson.dumps(message).decode())

    async def ask(self, text: str, t: float | None = None) -> None:
        await self.send_json({"type": "ask", "text": text, "t": t})

    async def send_frame(self, picture: bytes, t: float | None = None) -> None:
        """A JPEG, PNG or WebP picture; ``t`` the start of its turn (None: the next turn)."""
        await self.send_json({"type": "frame", "t": t})
        await self.connection.send(picture)

    async def configure(self, **fields: Any) -> None:
        """``response_threshold=`` and/or ``bias=``; what is not given keeps its value."""
        await self.send_json({"type": "config", **fields})

    async def play_source(self, path: str | None = None, url: str | None = None, realtime: bool = True) -> None:
        message = {"type": "source", "realtime": realtime}
        message.update({"path": path} if path is not None else {"url": url})
        await self.send_json(message)

    async def close(self) -> None:
        await self.send_json({"type": "close"})

    async def disconnect(self) -> None:
        await self.connection.close()


async def _receive(connection: ClientConnection) -> Any:
    return SERVER_MESSAGE.validate_json(await connection.recv())


def websocket_url(url: str) -> str:
    """``ws(s)://host:port/v1/stream`` from ``http(s)://host:port``, ``ws(s)://...`` or a bare
    ``host:port`` (ws://, or wss:// on port 443, TLS's port)."""
    if "://" not in url:
        url = ("wss://" if url.split("/", 1)[0].endswith(":443") else "ws://") + url
    for plain, secure in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(plain):
            url = secure + url[len(plain):]
    return url if url.rstrip("/").endswith("/v1/stream") else url.rstrip("/") + "/v1/stream"


@dataclass
class StreamResult:
    events: list[Event] = field(default_factory=list)
    errors: list[Error] = field(default_factory=list)
    closed: Closed | None = None


async def stream_video(
    client: LiveClient,
    frames: Iterable[tuple[int, Any]],
    questions: Iterable[tuple[float, str]] = (),
    realtime: bool = False,
    on_message: Callable[[Any], None] | None = None,
) -> StreamResult:
    """Ask ``questions`` ((second, text)), send ``frames`` ((turn, PIL image)), close, and
    collect every message until ``closed``. Without ``realtime`` at most the server's
    ``max_queue`` frames are in flight, so none is dropped; with it frames go at the wall
    clock's pace and the server drops what it cannot keep up with."""
    fps, limit = client.ready.fps, client.ready.limits.max_queue
    result = StreamResult()
    in_flight = 0
    room = asyncio.Event()

    async def read() -> None:
        nonlocal in_flight
        while (message := await client.receive()) is not None:
            if isinstance(message, Event):
                in_flight -= 1 + message.dropped
                result.events.append(message)
            elif isinstance(message, Error):
                result.errors.append(message)
                if message.code in FRAME_ERRORS:
                    in_flight -= 1
            if on_message is not None:
                on_message(message)
            room.set()
            if isinstance(message, Closed):
                result.closed = message
                return

    reader = asyncio.create_task(read())
    try:
        for moment, text in questions:
            await client.ask(text, moment)
        loop = asyncio.get_running_loop()
        started = loop.time()
        iterator: Iterator[tuple[int, Any]] = iter(frames)
        while (item := await asyncio.to_thread(next, iterator, None)) is not None:
            turn, image = item
            if realtime:
                await asyncio.sleep(max(0.0, started + turn / fps - loop.time()))
            else:
                while in_flight >= limit and not reader.done():
                    room.clear()
                    await room.wait()
            if reader.done():
                break
            picture = await asyncio.to_thread(encode_png, image)
            in_flight += 1
            await client.send_frame(picture, turn / fps)
        if not reader.done():
            await client.close()
        await reader
    finally:
        reader.cancel()
        await client.disconnect()
    return result


def open_video(client: LiveClient, video: str):
    """``video`` (file, frame directory, URL or ``-``) sampled at the session's fps and pixel
    budget, as ``streamo stream`` samples it; raises ``InputError``."""
    from ..video import MIN_PIXELS
    from ..video.inputs import open_input

    return open_input(video, client.ready.fps, client.ready.limits.max_pixels, MIN_PIXELS)


def stream_video_sync(url: str, video: str, questions: Iterable[tuple[float, str]] = (),
                      api_key: str | None = None, realtime: bool = False) -> StreamResult:
    """One session from connect to ``closed`` for synchronous code: ``video`` through the server."""

    async def run() -> StreamResult:
        client = await LiveClient.connect(url, api_key)
        try:
            source = open_video(client, video)
        except Exception:
            await client.disconnect()
            raise
        return await stream_video(client, source.frames, questions, realtime)

    return asyncio.run(run())
