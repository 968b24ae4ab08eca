"""How the app is put on a socket: uvicorn, with the guards an open port needs.

uvicorn alone keeps a connection that never sends a byte open forever, takes any number of
connections, prints query strings (where a careless client may put a key) in its log, and on
SIGTERM closes sessions with 1012 before the app can say goodbye. Here a connection must
send its request within the handshake timeout, connections beyond ``max_connections`` are
closed at once, every ``uvicorn`` and ``streamo`` log line loses query strings and the key,
a client the server reads slowly on purpose is not taken for a dead one (``ThrottledWebSocket``),
and a shutdown first drains the sessions (``AppState.drain``).
"""

from __future__ import annotations

import base64
import logging
import re
import socket
from typing import Any
from urllib.parse import quote

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from .realtime import RealtimeConnection
from .server import AppState, LiveConnection, Metrics, ServeSettings, create_app

PROTOCOLS = (LiveConnection, RealtimeConnection)
"""The session protocols ``streamo serve`` speaks, each at its own path: ``/v1/stream``, ``/v1/realtime``."""
_QUERY = re.compile(r"\?[^\s\"']*")
REDACTED = "[redacted]"


def guarded_http(settings: ServeSettings, metrics: Metrics) -> type[H11Protocol]:
    """uvicorn's HTTP protocol with a connection bound and a handshake timeout."""

    class GuardedHTTP(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._upgraded = False
            self._handshake_timer = None
            if len(self.connections) > settings.max_connections:
                metrics.refused.labels("max_connections").inc()
                transport.close()
                return
            self._handshake_timer = self.loop.call_later(settings.handshake_timeout, self._handshake_expired)

        def handle_websocket_upgrade(self, event: Any) -> None:
            self._upgraded = True
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
            super().connection_lost(exc)

        def _handshake_expired(self) -> None:
            """No complete request yet (nothing, or headers trickled): the connection is closed."""
            if self.cycle is None and not self._upgraded and not self.transport.is_closing():
                metrics.refused.labels("handshake_timeout").inc()
                self.transport.close()

    return GuardedHTTP


class ThrottledWebSocket(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket with a keepalive that waits for the server's own reading.

    A session's socket is read at most ``max_message_rate`` messages a second, and uvicorn stops
    reading the connection until the app takes the message it holds. A client sending faster
    has its pong behind its own unread frames; uvicorn would close it with 1011 (no ``closed``,
    frames neither decided nor dropped). While the server holds a message unread, the pong
    deadline is pushed back: only a client whose pong is missing once the server reads it again
    is dead. A silent client is never held back, so its deadline is uvicorn's."""

    def keepalive_timeout(self) -> None:
        if self.read_paused and not self.transport.is_closing():
            self.pong_timer = self.loop.call_later(self.ping_timeout, self.keepalive_timeout)
            return
        super().keepalive_timeout()


class Redact(logging.Filter):
    """Takes query strings out of uvicorn's lines and the key, in every form a client may send it, out of all."""

    def __init__(self, key: str | None) -> None:
        super().__init__()
        self.secrets: list[str] = []
        if key:
            encoded = base64.urlsafe_b64encode(key.encode()).decode()
            self.secrets = sorted({key, quote(key, safe=""), encoded, encoded.rstrip("=")}, key=len, reverse=True)

    def clean(self, value: Any, strip_query: bool) -> Any:
        if not isinstance(value, str):
            return value
        if strip_query:
            value = _QUERY.sub("?" + REDACTED, value)
        for secret in self.secrets:
            value = value.replace(secret, REDACTED)
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        strip = record.name.startswith("uvicorn")
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # uvicorn's access formatter unpacks the arguments: clean them in place.
            record.args = tuple(self.clean(arg, strip) for arg in record.args)
            return True
        message = record.getMessage()
        cleaned = self.clean(message, strip)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and self.secrets:
            record.exc_text = self.clean(logging.Formatter().formatException(record.exc_info), False)
            record.exc_info = None
        return True


LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "streamo", "streamo.live")


def install_redaction(key: str | None) -> Redact:
    """Every logger that may see a request or a session: loggers filter only their own records."""
    redact = Redact(key)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, Redact)]:
            logger.removeFilter(old)
        logger.addFilter(redact)
    return redact


class DrainingServer(uvicorn.Server):
    """On shutdown: stop listening, drain the sessions, then let uvicorn close what is left."""

    def __init__(self, config: uvicorn.Config, state: AppState) -> None:
        super().__init__(config)
        self.state = state

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await self.state.drain()
        await super().shutdown(sockets)


def build_server(state: AppState, log_level: str = "info", **config: Any) -> DrainingServer:
    """The uvicorn server for ``state``'s app (``config``: host, port, TLS files)."""
    settings = state.settings
    # No per-message deflate: frames are JPEG/PNG already, compressing them again only costs time.
    uvicorn_config = uvicorn.Config(create_app(state, PROTOCOLS), http=guarded_http(settings, state.metrics), ws=ThrottledWebSocket,
                                    ws_max_size=settings.transport_max_bytes, ws_per_message_deflate=False,
                                    ws_ping_interval=settings.ping_interval, ws_ping_timeout=settings.ping_timeout,
                                    log_level=log_level, lifespan="on", **config)
    install_redaction(settings.api_key)
    return DrainingServer(uvicorn_config, state)
