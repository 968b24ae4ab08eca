"""A client that sends frames faster than the server reads them (``max_message_rate``), for
longer than the WebSocket keepalive's ping interval plus timeout, while answering every ping:
its pong waits behind its own unread frames, yet it is slowed, not cut off. Every frame it
sent is decided or reported dropped, and it gets its ``closed``.

The keepalive here is 1 s + 1 s instead of the production 20 s + 20 s (``ServeSettings``), so
that sending for 5 s spans it with room to spare: 60 s at the production settings would prove
the same at 12 times the cost of the suite's time."""

from __future__ import annotations

import asyncio
import time

from engine.stream_model import frame
from streamo.live.client import LiveClient, encode_png
from streamo.live.server import ServeSettings

from .conftest import running_server

RATE = 1000.0
"""Frames a second the client offers: twice what the server reads."""
SECONDS = 5.0


async def _fast_sender(url: str) -> tuple[int, list, object]:
    client = await LiveClient.connect(url)
    picture = encode_png(frame(0))
    events: list = []
    closed = None

    async def read() -> None:
        nonlocal closed
        while (message := await client.receive()) is not None:
            if message.type == "event":
                events.append(message)
            elif message.type == "closed":
                closed = message
            else:
                raise AssertionError(message)

    reader = asyncio.create_task(read())
    sent, started = 0, time.monotonic()
    while (elapsed := time.monotonic() - started) < SECONDS:
        while sent < elapsed * RATE:
            await client.connection.send(picture)  # the next second each: no header
            sent += 1
        await asyncio.sleep(0.001)
    await client.close()
    await asyncio.wait_for(reader, timeout=60)
    return sent, events, closed


def test_a_fast_sender_answering_pings_is_slowed_not_cut_off(loaded_model):
    settings = ServeSettings(ping_interval=1.0, ping_timeout=1.0)
    with running_server(loaded_model, settings) as server:
        sent, events, closed = asyncio.run(_fast_sender(server.url))
    assert sent > SECONDS * settings.max_message_rate  # the server read slower than the client sent
    assert closed is not None and closed.reason == "client"
    assert closed.frames == len(events) and closed.frames + closed.dropped == sent
    assert closed.frames >= 1 and sum(event.dropped for event in events) <= closed.dropped
