"""Server videos for the page's player (media tokens, range requests), and the command-line
rough edges: a taken port, a server address without a scheme, session log lines."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

from streamo.live.client import LiveClient, websocket_url
from streamo.live.media import MediaTokens
from streamo.live.server import ServeSettings

from .conftest import EXAMPLE_VIDEO, REPO, running_server

KEY = "media-test-key-7f3a"


@pytest.fixture
def sources(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    shutil.copy(EXAMPLE_VIDEO, root / "clip.mp4")
    (tmp_path / "secret.mp4").write_bytes(b"not for sessions")
    return root


def test_a_media_token_serves_its_file_with_range_requests_and_nothing_else(loaded_model, sources):
    data = (sources / "clip.mp4").read_bytes()
    with running_server(loaded_model, ServeSettings(api_key=KEY, sources=[sources.resolve()])) as server:
        with httpx.Client(base_url=server.url) as http:
            assert http.post("/v1/media", json={"path": "clip.mp4"}).status_code == 401  # no key
            wrong = http.post("/v1/media", json={"path": "clip.mp4"}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            auth = {"Authorization": f"Bearer {KEY}"}
            for outside in ("../secret.mp4", str(sources.parent / "secret.mp4"), "missing.mp4"):
                assert http.post("/v1/media", json={"path": outside}, headers=auth).status_code == 403, outside
            grant = http.post("/v1/media", json={"path": "clip.mp4"}, headers=auth).json()
            url = grant["url"]
            assert url.startswith("/v1/media/") and KEY not in url and len(url) > len("/v1/media/") + 30
            whole = http.get(url)
            assert whole.status_code == 200 and whole.content == data
            assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
            part = http.get(url, headers={"Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == data[100:200]
            assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
            assert http.get("/v1/media/" + "x" * 43).status_code == 404  # a guessed token
            assert http.get("/v1/media").status_code == 405  # no token: nothing to read


def test_tokens_expire_and_are_bounded(tmp_path):
    clock = [0.0]
    tokens = MediaTokens(ttl=10, limit=3, clock=lambda: clock[0])
    first = tokens.issue(tmp_path / "a.mp4")
    assert tokens.lookup(first) == tmp_path / "a.mp4"
    clock[0] = 10.5
    assert tokens.lookup(first) is None
    issued = [tokens.issue(tmp_path / f"{n}.mp4") for n in range(5)]
    assert len(tokens.grants) == 3 and tokens.lookup(issued[0]) is None and tokens.lookup(issued[-1]) is not None


def test_a_server_address_without_a_scheme_is_a_websocket_url():
    assert websocket_url("127.0.0.1:8000") == "ws://127.0.0.1:8000/v1/stream"
    assert websocket_url("example.org:443") == "wss://example.org:443/v1/stream"
    assert websocket_url("https://example.org") == "wss://example.org/v1/stream"
    assert websocket_url("ws://h:1/v1/stream") == "ws://h:1/v1/stream"


def test_the_client_command_takes_host_and_port(loaded_model, capsys):
    from streamo.cli import main

    with running_server(loaded_model) as server:
        address = server.url.removeprefix("http://")
        assert main(["client", "--server", address, "--video", str(EXAMPLE_VIDEO), "--question", "What now?"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 26


def test_the_log_records_each_session_start_and_end_never_the_key(loaded_model, caplog):
    import asyncio

    caplog.set_level(logging.INFO, logger="streamo.live")
    with running_server(loaded_model, ServeSettings(api_key=KEY)) as server:
        async def one_session() -> str:
            client = await LiveClient.connect(server.url, KEY)
            await client.disconnect()
            return client.ready.session

        session = asyncio.run(one_session())
        deadline = time.monotonic() + 10
        while not any("end" in r.getMessage() and session in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.05)
    lines = [record.getMessage() for record in caplog.records if record.name == "streamo.live"]
    assert any(f"session {session}: start" in line for line in lines), lines
    assert any(f"session {session}: end" in line for line in lines), lines
    assert not any(KEY in line for line in lines)


def test_serve_on_a_taken_port_stops_before_loading_the_model(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "streamo.cli", "serve", "--model", str(tmp_path / "no-such-model"),
                               "--port", str(port)], capture_output=True, text=True, timeout=120, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        holder.close()
    assert done.returncode == 2, done.stderr  # docs/serving.md's exit code: an unusable argument
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "port is taken" in errors[0], done.stderr
    assert "no-such-model" not in done.stderr  # the model was never looked at
    assert time.monotonic() - started < 60
