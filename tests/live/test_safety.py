"""What a server on a network must withstand: bad input of every kind, keys, full servers,
paths out of its source directories, idle clients. Each bad message gets its own error code
and no traceback, and the session and every other session go on."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image
from websockets.asyncio.client import connect

from engine.stream_model import PLAN, QUESTION, frame
from streamo.live.client import LiveClient, LiveError, encode_png, stream_video
from streamo.live.messages import ERROR_CODES
from streamo.live.server import ServeSettings

from .conftest import running_server, wait_until

KEY = "s3cret-key"


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb() -> bytes:
    """A valid PNG claiming 20000 x 20000 pixels, a few dozen bytes long."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


BAD_INPUTS = [
    ("bad_json", "text", "{not json"),
    ("bad_json", "text", "[1, 2]"),
    ("unknown_type", "text", '{"type": "dance"}'),
    ("bad_message", "text", '{"type": "ask"}'),
    ("bad_message", "text", '{"type": "ask", "text": "   "}'),
    ("bad_message", "text", '{"type": "ask", "text": "hi", "t": -3}'),
    ("bad_message", "text", '{"type": "config", "response_threshold": 2}'),
    ("bad_message", "text", '{"type": "source", "path": "a.mp4", "url": "http://x"}'),
    ("message_too_large", "text", '{"type": "ask", "text": "' + "x" * 70_000 + '"}'),
    ("question_too_long", "text", '{"type": "ask", "text": "' + "x" * 2001 + '"}'),
    ("frame_too_large", "bytes", b"\x89PNG" + b"\0" * (4 * 1024 * 1024 + 1)),
    ("frame_too_many_pixels", "bytes", _bomb()),
    ("frame_too_many_pixels", "bytes", _png(4097, 4097)),
    ("not_an_image", "bytes", b"GIF89a but not really"),
    ("not_an_image", "bytes", encode_png(frame(0))[:60]),
    ("bad_frame", "bytes", _png(1000, 2)),
    ("source_refused", "text", '{"type": "source", "path": "clip.mp4"}'),
    ("source_refused", "text", '{"type": "source", "url": "http://127.0.0.1:9/x.mp4"}'),
]


def test_every_error_code_is_documented():
    assert {code for code, _, _ in BAD_INPUTS} <= set(ERROR_CODES)


@pytest.mark.parametrize("code, kind, payload", BAD_INPUTS, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(BAD_INPUTS)])
def test_bad_input_gets_its_error_and_the_session_goes_on(server, code, kind, payload):
    async def run():
        client = await LiveClient.connect(server.url)
        await client.connection.send(payload)
        reply = await client.receive()
        await client.send_frame(encode_png(frame(0)), 0.0)
        after = await client.receive()
        await client.disconnect()
        return reply, after

    reply, after = asyncio.run(run())
    assert reply.type == "error" and reply.code == code and not reply.closes
    assert "Traceback" not in reply.message
    assert after.type == "event" and after.turn == 0


def test_session_protocol_misuse(server):
    async def run():
        client = await LiveClient.connect(server.url)
        codes = []
        await client.send_frame(encode_png(frame(2)), 2.0)
        assert (await client.receive()).type == "event"
        await client.send_frame(encode_png(frame(1)), 1.0)  # back in time
        codes.append((await client.receive()).code)
        await client.play_source(path="x.mp4")  # frames already pushed
        codes.append((await client.receive()).code)
        for _ in range(16):
            await client.ask(QUESTION, 100.0)
        await client.ask(QUESTION, 100.0)
        codes.append((await client.receive()).code)
        await client.send_frame(encode_png(frame(3)), 3.0)  # still deciding when the ask comes
        await client.close()
        await client.ask(QUESTION)
        messages = [await client.receive() for _ in range(3)]
        codes += [m.code for m in messages if m.type == "error"]
        assert [m.type for m in messages if m.type != "error"] == ["event", "closed"]
        await client.disconnect()
        return codes

    assert asyncio.run(run()) == ["frame_out_of_order", "source_busy", "too_many_questions", "session_closing"]


def test_other_sessions_go_on_while_one_sends_garbage(server):
    frames = [(turn, frame(turn)) for turn in range(len(PLAN))]

    async def garbage():
        client = await LiveClient.connect(server.url)
        for payload in [b"junk", "{bad", '{"type": "nope"}'] * 10:
            await client.connection.send(payload)
        await client.disconnect()

    async def good():
        client = await LiveClient.connect(server.url)
        return await stream_video(client, frames, [(0.0, QUESTION)])

    async def both():
        return await asyncio.gather(garbage(), good())

    _, result = asyncio.run(both())
    assert [event.state for event in result.events] == PLAN


def test_source_paths_outside_the_roots_are_refused(loaded_model, tmp_path):
    from streamo.video.synthetic import frame_times, write_clip

    root, outside = tmp_path / "videos", tmp_path / "private"
    root.mkdir()
    outside.mkdir()
    write_clip(root / "ok.mp4", frame_times(10, 3.0), width=112, height=84)
    write_clip(outside / "secret.mp4", frame_times(10, 3.0), width=112, height=84)
    (root / "link.mp4").symlink_to(outside / "secret.mp4")
    (root / "dir").symlink_to(outside)
    attempts = ["../private/secret.mp4", str(outside / "secret.mp4"), "link.mp4", "dir/secret.mp4", "nope.mp4",
                "sub/../../private/secret.mp4", "\0.mp4"]

    async def run():
        replies = []
        for path in attempts:
            client = await LiveClient.connect(server.url)
            await client.play_source(path=path)
            replies.append(await client.receive())
            await client.disconnect()
        client = await LiveClient.connect(server.url)
        await client.play_source(path="ok.mp4", realtime=False)
        messages = []
        while (message := await client.receive()).type != "source_ended":
            messages.append(message)
        await client.disconnect()
        return replies, messages, message

    with running_server(loaded_model, ServeSettings(sources=[root.resolve()])) as server:
        replies, events, ended = asyncio.run(run())
        listing = urllib.request.urlopen(server.url + "/v1/sources").read().decode()
    assert [(r.type, r.code) for r in replies] == [("error", "source_refused")] * len(attempts)
    assert [e.turn for e in events] == [0, 1, 2] and ended.frames == 3 and ended.reason == "end"
    assert '"ok.mp4"' in listing and "secret" not in listing


def test_annotated_samples_are_offered_only_for_videos_under_the_roots(tmp_path, caplog):
    """``/v1/sources`` names the raw samples on a listed video (for the page's sample id); a
    ``video_path`` leading out of the roots offers nothing, and an unreadable raw file is logged."""
    import json

    from streamo.live.sources import list_samples

    root, outside, broken = tmp_path / "data", tmp_path / "private", tmp_path / "broken"
    for folder in (root / "videos", outside, broken):
        folder.mkdir(parents=True)
    (root / "videos" / "ok.mp4").write_bytes(b"\0")
    (outside / "secret.mp4").write_bytes(b"\0")
    (root / "videos" / "link.mp4").symlink_to(outside / "secret.mp4")
    question = [{"content": "What moves?", "time": 0}]
    (root / "raw_data.json").write_text(json.dumps([
        {"video_path": "videos/ok.mp4", "task_type": "QA", "question": question},
        {"video_path": "../private/secret.mp4", "question": question},
        {"video_path": "videos/link.mp4", "question": question},
        {"video_path": "videos/missing.mp4", "question": question},
        {"no": "video_path"},
        {"id": "mine", "video_path": "videos/ok.mp4", "question": [{"content": "x" * 5000}]},
    ]))
    (broken / "raw_data.json").write_text("[{not json")
    with caplog.at_level("WARNING", logger="streamo.live"):
        offered = list_samples([root.resolve(), broken.resolve()])
    assert offered == [
        {"source": "videos/ok.mp4", "sample": 0, "task_type": "QA", "questions": ["What moves?"]},
        {"source": "videos/ok.mp4", "sample": "mine", "task_type": "", "questions": ["x" * 2000]},
    ]
    assert "secret" not in json.dumps(offered)
    assert f"{broken / 'raw_data.json'} cannot be read" in caplog.text


def test_url_sources_only_when_allowed(loaded_model, tmp_path):
    """--allow-urls plays an http URL (a loopback file server here); without it, refused."""
    import functools
    import http.server
    import threading

    from streamo.video.synthetic import frame_times, write_clip

    write_clip(tmp_path / "clip.mp4", frame_times(10, 3.0), width=112, height=84)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{files.server_address[1]}/clip.mp4"

    async def run(server_url):
        client = await LiveClient.connect(server_url)
        await client.play_source(url=url, realtime=False)
        messages = []
        while (message := await client.receive()).type not in ("source_ended", "error"):
            messages.append(message)
        await client.disconnect()
        return messages, message

    try:
        with running_server(loaded_model, ServeSettings(allow_urls=True)) as server:
            events, ended = asyncio.run(run(server.url))
        assert ended.type == "source_ended" and ended.reason == "end" and len(events) == ended.frames == 3
        with running_server(loaded_model, ServeSettings(allow_urls=True)) as server:
            client_refused = asyncio.run(_first_reply_to_source(server.url, "file:///etc/passwd"))
        assert client_refused.code == "source_refused"
    finally:
        files.shutdown()


@pytest.mark.parametrize("url", ["https:/etc/passwd", "http:clip.mp4", "file:///etc/passwd", "udp://@:1234"])
def test_with_allow_urls_only_what_stream_calls_a_url_plays(url, tmp_path):
    """The server's rule is ``streamo stream``'s (``video.inputs.is_url``): an allowed scheme without a host
    would be opened as a path relative to the server's directory, outside every --sources root."""
    from streamo.live.messages import ProtocolError, Source
    from streamo.live.sources import resolve_source

    with pytest.raises(ProtocolError) as refused:
        resolve_source(Source(type="source", url=url), [tmp_path], allow_urls=True)
    assert refused.value.code == "source_refused"
    assert resolve_source(Source(type="source", url="rtsp://cam.local/s"), [], allow_urls=True) == "rtsp://cam.local/s"


async def _first_reply_to_source(server_url, url):
    client = await LiveClient.connect(server_url)
    await client.play_source(url=url)
    reply = await client.receive()
    await client.disconnect()
    return reply


def test_api_key_on_every_route_and_the_socket(loaded_model):
    with running_server(loaded_model, ServeSettings(api_key=KEY)) as server:
        for route in ("/metrics", "/v1/sources"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(server.url + route)
            assert refused.value.code == 401
            wrong = urllib.request.Request(server.url + route, headers={"Authorization": "Bearer nope"})
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(wrong)
            right = urllib.request.Request(server.url + route, headers={"Authorization": f"Bearer {KEY}"})
            assert urllib.request.urlopen(right).status == 200
        assert urllib.request.urlopen(server.url + "/healthz").status == 200

        async def sockets():
            outcomes = []
            for key, as_subprotocol in [(None, False), ("wrong", False), ("wrong", True)]:
                with pytest.raises(LiveError) as refused:
                    await LiveClient.connect(server.url, key, use_subprotocol_key=as_subprotocol)
                outcomes.append(refused.value.code)
            async with connect(server.url.replace("http", "ws") + "/v1/stream") as raw:
                await raw.recv()
                with pytest.raises(Exception):
                    await raw.recv()
                outcomes.append(raw.close_code)
            for as_subprotocol in (False, True):
                client = await LiveClient.connect(server.url, KEY, use_subprotocol_key=as_subprotocol)
                outcomes.append(client.ready.type)
                await client.disconnect()
            return outcomes

        assert asyncio.run(sockets()) == ["unauthorized"] * 3 + [4401, "ready", "ready"]
        wait_until(lambda: server.state.scheduler.open_sessions == 0)
        metrics = urllib.request.urlopen(urllib.request.Request(
            server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"})).read().decode()
    assert 'streamo_errors_total{code="unauthorized"} 4.0' in metrics
    assert KEY not in metrics


def test_over_max_sessions_is_refused_with_its_close_code(loaded_model):
    async def run(url):
        first = await LiveClient.connect(url)
        second = await LiveClient.connect(url)
        async with connect(url.replace("http", "ws") + "/v1/stream") as third:
            refusal = await third.recv()
            with pytest.raises(Exception):
                await third.recv()
            code = third.close_code
        await first.disconnect()
        await second.disconnect()
        return refusal, code

    with running_server(loaded_model, ServeSettings(max_sessions=2)) as server:
        refusal, code = asyncio.run(run(server.url))
    assert '"server_full"' in refusal and code == 1013


def test_idle_sessions_time_out(loaded_model):
    async def run(url):
        client = await LiveClient.connect(url)
        messages = [await client.receive(), await client.receive()]
        await asyncio.sleep(0.2)
        return messages, client.connection.close_code

    with running_server(loaded_model, ServeSettings(idle_timeout=0.5)) as server:
        started = time.monotonic()
        (error, closed), code = asyncio.run(run(server.url))
        waited = time.monotonic() - started
        wait_until(lambda: server.state.scheduler.open_sessions == 0)
    assert error.code == "idle_timeout" and error.closes and closed.type == "closed" and closed.reason == "idle_timeout"
    assert code == 4408 and waited >= 0.5


def test_serve_refuses_a_public_address_without_a_key(tmp_path, capsys):
    from streamo.cli import main

    env = dict(os.environ)
    env.pop("STREAMO_API_KEY", None)
    assert main(["serve", "--model", str(tmp_path), "--host", "0.0.0.0"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "without an API key" in message


def _frames_received(url: str) -> float:
    """Frames the server has read so far: decided plus waiting (``/metrics``; no frame is dropped here)."""
    import urllib.request

    text = urllib.request.urlopen(urllib.request.Request(
        url + "/metrics", headers={"Authorization": f"Bearer {KEY}"})).read().decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")}
    return values["streamo_frames_decided_total"] + values["streamo_frames_waiting"]


def test_serve_command_starts_answers_never_logs_the_key_and_drains_on_sigterm(stream_model, tmp_path):
    """The real `streamo serve` process: health open, metrics behind the key, a session works; the
    key is never logged, even where a client puts it in a URL; on SIGTERM an open session gets
    ``closed`` (reason ``shutdown``, with its counts) and close code 1001 before the process ends."""
    import signal
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, STREAMO_API_KEY=KEY)
    log = tmp_path / "serve.log"
    encoded = base64.urlsafe_b64encode(KEY.encode()).decode().rstrip("=")
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamo.cli", "serve", "--model", str(stream_model.directory), "--port", str(port),
             "--max-pixels", str(84 * 56)], stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/healthz")
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "streamo serve did not start"
                time.sleep(0.5)
        frames = [(turn, frame(turn)) for turn in range(len(PLAN))]

        async def run():
            client = await LiveClient.connect(url, KEY)
            return await stream_video(client, frames, [(0.0, QUESTION)])

        assert [event.state for event in asyncio.run(run()).events] == PLAN
        assert urllib.request.urlopen(url + "/docs").status == 200
        # A careless client puts the key in URLs: plain, as base64 and as a query value of the socket.
        for query in (f"?key={KEY}", f"?api_key={encoded}", f"?x=1&token={KEY}"):
            urllib.request.urlopen(urllib.request.Request(url + "/metrics" + query,
                                                          headers={"Authorization": f"Bearer {KEY}"}))
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(url + "/v1/sources" + query)

        async def query_socket():
            async with connect(f"ws://127.0.0.1:{port}/v1/stream?key={KEY}",
                               additional_headers={"Authorization": f"Bearer {KEY}"}) as raw:
                return await raw.recv()

        assert '"ready"' in asyncio.run(query_socket())

        async def interrupted():
            client = await LiveClient.connect(url, KEY)
            for turn in range(3):
                await client.send_frame(encode_png(frame(turn)), float(turn))
            events = [await client.receive() for _ in range(3)]
            for turn in (3, 4):  # still to decide when the signal comes: decided within the grace period
                await client.send_frame(encode_png(frame(turn)), float(turn))
            # Held means read off the socket: wait until the server counts both (decided or waiting).
            received = len(PLAN) + 5
            deadline = time.monotonic() + 30
            while _frames_received(url) < received:
                assert time.monotonic() < deadline, "the server never read frames 3 and 4"
                await asyncio.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            messages = []
            while (message := await client.receive()) is not None:
                messages.append(message)
                if message.type == "closed":
                    break
            await asyncio.sleep(0.2)
            return events, messages, client.connection.close_code

        events, messages, close_code = asyncio.run(interrupted())
        stopped = time.monotonic()
        process.wait(timeout=40)
        assert time.monotonic() - stopped < 20  # the grace period (10 s) bounds the drain
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert [event.type for event in events] == ["event"] * 3
    closed = messages[-1]
    assert [m.turn for m in messages if m.type == "event"] == [3, 4]
    assert closed.type == "closed" and closed.reason == "shutdown" and closed.frames == 5 and closed.dropped == 0
    assert close_code == 1001
    text = log.read_text()
    assert KEY not in text and encoded not in text, text
    assert "?[redacted]" in text  # the query strings were there, and cut
    assert "Traceback" not in text
