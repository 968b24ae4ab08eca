"""What one outside client must not be able to do to a server and its other sessions: grow its
memory by not reading, burn its CPU with frames it will drop, hold connections without a word,
open sessions from someone else's web page, or get a traceback, an internal name or a line
break into an error message. Each against a real server on a loopback port."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import socket
import statistics
import time
import urllib.request

import pytest
from PIL import Image
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from engine.stream_model import PLAN, frame
from streamo.live.client import LiveClient, encode_png
from streamo.live.messages import MAX_ERROR_CHARS
from streamo.live.server import ServeSettings

from .conftest import running_server, wait_until


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _metric(url: str, name: str) -> float:
    """One series of /metrics (0 when absent)."""
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _raw_upgrade(port: int, host: str | None = None, origin: str | None = None, receive_buffer: int | None = None,
                 path: str = "/v1/stream"):
    """A WebSocket upgrade over a bare socket: what a hand-written client controls and a library hides."""
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if origin:
        lines.append(f"Origin: {origin}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _ws_text(payload: bytes) -> bytes:
    """One masked client text frame (payloads under 126 bytes)."""
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# ---------------------------------------------------------------- memory and CPU


def test_a_client_that_never_reads_is_closed_at_its_outbox_bound(loaded_model):
    """It keeps sending bad messages (each answered by an error) and reads nothing: the server
    holds at most the outbox's bound for it, then closes it and counts it."""
    settings = ServeSettings(max_outbox_messages=100, max_outbox_bytes=16 * 1024)
    with running_server(loaded_model, settings) as server:
        sock = _raw_upgrade(_port(server.url), receive_buffer=4096)
        sock.settimeout(2)
        message = _ws_text(b"{bad")
        try:
            for _ in range(200):  # 100,000 errors of about 140 bytes: 14 MB if nothing bounded them
                sock.sendall(message * 500)
        except OSError:
            pass  # the server closed it
        wait_until(lambda: _metric(server.url, 'streamo_sessions_closed_total{reason="backlog"}') == 1.0, 60)
        wait_until(lambda: not server.state.connections and server.state.scheduler.open_sessions == 0)
        sock.settimeout(30)
        try:
            while sock.recv(65536):  # what the server had written reaches the client, then the connection ends
                pass
        except ConnectionResetError:  # the server closed with the client's messages unread: a reset
            pass
        sock.close()


FLOODER = """
import sys
from websockets.sync.client import connect
url, picture = sys.argv[1], open(sys.argv[2], "rb").read()
socket_ = connect(url, max_queue=None)
socket_.recv()
turn = 0
while True:  # until killed; events pile up unread in this process, not in the server
    socket_.send('{"type": "frame", "t": %d}' % turn)
    socket_.send(picture)
    turn += 1
"""


def test_a_flood_is_dropped_before_decoding_and_a_quiet_session_keeps_its_pace(loaded_model, tmp_path):
    """Two clients of their own (other processes) send frames as fast as the socket takes them;
    a quiet session pushes one frame at a time. Frames over the rate limit are dropped unread,
    and the quiet session's p95 round trip stays within a small multiple of its own unloaded
    p95 measured in the same run."""
    import subprocess
    import sys

    pictures = [encode_png(frame(turn % len(PLAN))) for turn in range(len(PLAN))]
    large = io.BytesIO()  # a camera's frame: decoding it is real work
    frame(0).resize((1280, 720)).save(large, format="JPEG", quality=90)
    (tmp_path / "frame.jpg").write_bytes(large.getvalue())

    async def quiet_round_trips(url: str, count: int, start: int) -> list[float]:
        client = await LiveClient.connect(url)
        times = []
        for turn in range(start, start + count):
            began = time.perf_counter()
            await client.send_frame(pictures[turn % len(pictures)], float(turn))
            event = await client.receive()
            assert event.type == "event" and event.turn == turn
            times.append(time.perf_counter() - began)
        await client.disconnect()
        return times

    with running_server(loaded_model, ServeSettings(max_queue=4)) as server:
        unloaded = asyncio.run(quiet_round_trips(server.url, 30, 0))
        url = server.url.replace("http", "ws") + "/v1/stream"
        floods = [subprocess.Popen([sys.executable, "-c", FLOODER, url, str(tmp_path / "frame.jpg")]) for _ in range(2)]
        try:
            wait_until(lambda: _metric(server.url, "streamo_frames_unread_total") > 100, 30)
            began = time.perf_counter()
            loaded = asyncio.run(quiet_round_trips(server.url, 30, 1000))
            flooded_for = time.perf_counter() - began + 2
        finally:
            for flood in floods:
                flood.kill()
                flood.wait()
        wait_until(lambda: server.state.scheduler.open_sessions == 0)
        unread = _metric(server.url, "streamo_frames_unread_total")
        dropped = _metric(server.url, "streamo_frames_dropped_total")
        decided = _metric(server.url, "streamo_frames_decided_total")
    p95 = lambda values: statistics.quantiles(values, n=20)[-1]  # noqa: E731
    assert p95(loaded) <= 8 * p95(unloaded) + 0.05, (p95(loaded), p95(unloaded))
    read = dropped + decided  # every frame the server read was decided or dropped
    assert unread > 0.7 * read, (unread, read)
    # Frames decoded only to be pushed out: at most the rate limit's (4/s a session, a second's burst).
    assert dropped - unread <= 2 * 4 * (flooded_for + 1) + 8, (dropped, unread, flooded_for)


def test_frames_over_the_rate_wait_undecoded_and_the_newest_is_decided(loaded_model):
    """Twelve frames at once into a queue of one: those over the rate limit are dropped unread,
    nothing is lost (every frame decided or counted dropped), and the newest is decided."""
    pictures = [encode_png(frame(turn % len(PLAN))) for turn in range(12)]

    async def burst(url):
        client = await LiveClient.connect(url)
        for turn, picture in enumerate(pictures):
            await client.send_frame(picture, float(turn))
        await client.close()
        events = []
        while (message := await client.receive()).type != "closed":
            events.append(message)
        await client.disconnect()
        return events, message

    with running_server(loaded_model, ServeSettings(max_queue=1)) as server:
        events, closed = asyncio.run(burst(server.url))
        unread = _metric(server.url, "streamo_frames_unread_total")
    dropped = sum(event.dropped for event in events)
    assert len(events) + dropped == len(pictures) and closed.dropped == dropped  # nothing lost
    assert events[-1].turn == len(pictures) - 1  # the newest frame waited for room and was decided
    assert unread >= 1 and unread <= dropped


def test_a_fast_sender_is_slowed_not_dropped(loaded_model):
    """Over the message rate the server reads the socket no faster: every message still gets its
    answer, only later."""
    async def run(url):
        client = await LiveClient.connect(url)
        started = time.monotonic()
        for _ in range(60):
            await client.connection.send("{bad")
        replies = [await client.receive() for _ in range(60)]
        elapsed = time.monotonic() - started
        await client.disconnect()
        return replies, elapsed

    with running_server(loaded_model, ServeSettings(max_message_rate=20)) as server:
        replies, elapsed = asyncio.run(run(server.url))
    assert [reply.code for reply in replies] == ["bad_json"] * 60
    assert elapsed >= (60 - 20) / 20 * 0.9  # a second's worth at once, then 20 a second


# ---------------------------------------------------------------- connections


def test_silent_and_surplus_connections_are_closed(loaded_model):
    settings = ServeSettings(handshake_timeout=0.5, max_connections=6)
    with running_server(loaded_model, settings) as server:
        port = _port(server.url)
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
        trickle = socket.create_connection(("127.0.0.1", port))
        trickle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        started = time.monotonic()
        closed_after = []
        for sock in silent + [trickle]:
            sock.settimeout(5)
            try:
                assert sock.recv(1024) == b""
            except ConnectionResetError:
                pass
            closed_after.append(time.monotonic() - started)
            sock.close()
        assert max(closed_after) < 3
        refused = {reason: _metric(server.url, f'streamo_connections_refused_total{{reason="{reason}"}}')
                   for reason in ("max_connections", "handshake_timeout")}

        async def session():
            client = await LiveClient.connect(server.url)
            await client.send_frame(encode_png(frame(0)), 0.0)
            event = await client.receive()
            await client.disconnect()
            return event

        assert asyncio.run(session()).type == "event"
    assert refused["max_connections"] >= 6 and refused["handshake_timeout"] >= 1, refused
    assert refused["max_connections"] + refused["handshake_timeout"] == 13


# ---------------------------------------------------------------- cross-site use


def test_only_the_servers_own_page_or_allowed_origins_open_sessions(loaded_model):
    async def attempt(url: str, origin: str | None):
        try:
            async with connect(url.replace("http", "ws") + "/v1/stream", origin=origin) as socket_:
                return (await socket_.recv())[:16]
        except InvalidStatus as exc:
            return exc.response.status_code

    settings = ServeSettings(allow_origins=["https://studio.example"])
    with running_server(loaded_model, settings) as server:
        port = _port(server.url)
        outcomes = {origin: asyncio.run(attempt(server.url, origin)) for origin in
                    [None, f"http://127.0.0.1:{port}", "https://studio.example", f"http://127.0.0.1:{port + 1}",
                     "http://evil.example", "null"]}
        # DNS rebinding: another site's name pointed at 127.0.0.1 is not the server's own page.
        rebound = _raw_upgrade(port, host=f"evil.example:{port}", origin=f"http://evil.example:{port}")
        status = rebound.recv(64).decode().split()[1]
        rebound.close()
        refused = _metric(server.url, 'streamo_connections_refused_total{reason="origin"}')
    ready = '{"type":"ready",'
    assert outcomes == {None: ready, f"http://127.0.0.1:{port}": ready, "https://studio.example": ready,
                        f"http://127.0.0.1:{port + 1}": 403, "http://evil.example": 403, "null": 403}
    assert status == "403" and refused == 4


# ---------------------------------------------------------------- bad input


def test_error_messages_are_one_short_escaped_line_without_internals(loaded_model, tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    (root / "broken.mp4").write_bytes(b"not a video at all")
    payloads = [
        ("unknown_type", '{"type": "' + "\\n\\r\\u2028" + "x" * 500 + '"}'),
        ("bad_message", '{"type": "config", "bias": {"evil\\nkey\\u0000' + "y" * 300 + '": 1}}'),
        ("bad_message", '{"type": "ask", "text": "hi", "\\nextra\\u001b[31m": 1}'),
        ("not_an_image", b"\x89PNG\r\n\x1a\n" + b"\0" * 100),
        ("source_refused", '{"type": "source", "path": "' + "a" * 300 + "/" + "b" * 300 + '.mp4"}'),
        ("source_refused", '{"type": "source", "path": "' + "c" * 4000 + '.mp4"}'),
        ("source_failed", '{"type": "source", "path": "broken.mp4"}'),
    ]

    async def run(url):
        replies = []
        for _, payload in payloads:
            client = await LiveClient.connect(url)
            await client.connection.send(payload)
            replies.append(await client.receive())
            if replies[-1].code != "source_failed":  # the session goes on
                await client.send_frame(encode_png(frame(0)), 0.0)
                assert (await client.receive()).type == "event"
            await client.disconnect()
        return replies

    with running_server(loaded_model, ServeSettings(sources=[root.resolve()])) as server:
        replies = asyncio.run(run(server.url))
    assert [(r.type, r.code) for r in replies] == [("error", code) for code, _ in payloads]
    for reply in replies:
        text = reply.message
        assert text.isprintable() and len(text) <= MAX_ERROR_CHARS, text
        assert "object at" not in text and "Error" not in text and str(tmp_path) not in text, text
    assert "\\u000a" in replies[1].message and "\\u0000" in replies[1].message
    assert "y" * 60 not in replies[1].message  # an excerpt, not the whole field name


@pytest.mark.parametrize("payload", [
    '{"type": "config", "bias": {"response": 1e39}}',
    '{"type": "config", "bias": {"silence": -1001}}',
    '{"type": "frame", "t": 1e300}',
    '{"type": "ask", "text": "hi", "t": 1e7}',
])
def test_values_past_what_the_server_can_represent_are_refused(server, payload):
    async def run():
        client = await LiveClient.connect(server.url)
        await client.connection.send(payload)
        reply = await client.receive()
        await client.configure(bias={"response": 1000.0})  # the largest bias is taken
        await client.send_frame(encode_png(frame(0)), 0.0)
        event = await client.receive()
        await client.disconnect()
        return reply, event

    reply, event = asyncio.run(run())
    assert (reply.type, reply.code) == ("error", "bad_message")
    assert event.type == "event" and event.state.value == "response" and event.probabilities["response"] == 1.0


@pytest.mark.parametrize("size, accepted", [((8192, 2048), False), ((4097, 16), False), ((4096, 64), True),
                                            ((64, 4096), True)])
def test_frame_sides_are_limited_each(server, size, accepted):
    async def run():
        client = await LiveClient.connect(server.url)
        await client.send_frame(_png(*size), 0.0)
        reply = await client.receive()
        await client.disconnect()
        return reply

    reply = asyncio.run(run())
    assert (reply.type == "event") is accepted
    if not accepted:
        assert reply.code == "frame_too_many_pixels" and "4096" in reply.message


# ---------------------------------------------------------------- every message valid


def test_every_server_message_validates_whatever_the_client_sends(loaded_model):
    """Random configs (in and out of range), questions (any text, any time) and frames: every
    message the server sends parses with the protocol's own models (no null probability, no
    infinite time), and the session always ends with ``closed``."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    from streamo.live.messages import SERVER_MESSAGE

    numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.floats(-2000, 2000))
    configs = st.fixed_dictionaries({}, optional={
        "response_threshold": st.one_of(st.none(), st.floats(0, 1), numbers),
        "bias": st.dictionaries(st.sampled_from(["silence", "standby", "response"]), numbers, max_size=3),
    })
    questions = st.lists(st.tuples(st.text(min_size=1, max_size=60), st.one_of(st.none(), st.floats(0, 20), numbers)),
                         max_size=4)
    frames = st.lists(st.tuples(st.integers(0, len(PLAN) - 1), st.one_of(st.none(), st.floats(0, 30), numbers)),
                      min_size=1, max_size=5)

    async def session(url, config, asked, pushed):
        client = await LiveClient.connect(url)
        raw = client.connection
        await client.send_json({"type": "config", **config})
        for text, moment in asked:
            await client.send_json({"type": "ask", "text": text, "t": moment})
        for index, moment in pushed:
            await client.send_json({"type": "frame", "t": moment})
            await raw.send(encode_png(frame(index)))
        await client.close()
        messages = []
        while True:
            message = SERVER_MESSAGE.validate_json(await asyncio.wait_for(raw.recv(), 60))
            messages.append(message)
            if message.type == "closed":
                break
        await client.disconnect()
        return messages

    with running_server(loaded_model) as server:
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        @given(configs, questions, frames)
        def check(config, asked, pushed):
            messages = asyncio.run(session(server.url, config, asked, pushed))
            assert messages[-1].type == "closed" and messages[-1].reason == "client"
            for message in messages:
                if message.type == "error":
                    assert message.message.isprintable() and len(message.message) <= MAX_ERROR_CHARS

        check()


# ---------------------------------------------------------------- token budget


def test_a_sessions_context_stays_within_its_token_budget(loaded_model):
    """Questions of the largest size on every frame: the context is windowed by tokens, and a
    question that cannot fit even alone is refused with its own code."""
    budget = 400
    long_question = "Describe the square's " + "position and colour " * 95  # under max_question_chars

    async def run(url):
        client = await LiveClient.connect(url)
        replies = []
        for turn in range(12):
            await client.ask(f"What happens now, at second {turn}? " * 3, float(turn))
            await client.send_frame(encode_png(frame(turn % len(PLAN))), float(turn))
            replies.append(await client.receive())
        await client.ask(long_question)
        replies.append(await client.receive())
        await client.send_frame(encode_png(frame(0)), 12.0)
        replies.append(await client.receive())
        await client.disconnect()
        return client.ready, replies

    with running_server(loaded_model, max_context_tokens=budget) as server:
        ready, replies = asyncio.run(run(server.url))
    assert ready.limits.max_context_tokens == budget
    events = [r for r in replies if r.type == "event"]
    assert len(events) == 13 and all(event.context_tokens <= budget for event in events)
    assert any(b.context_tokens < a.context_tokens for a, b in zip(events, events[1:]))  # older turns were evicted
    error = replies[12]
    assert (error.type, error.code, error.closes) == ("error", "context_full", False) and str(budget) in error.message
