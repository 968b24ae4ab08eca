"""Several replicas of ``streamo serve``: two real servers behind Debian's nginx, run with the
nginx block of docs/serving.md ("Many GPUs and machines"), and ``streamo client`` given several
servers. What a balancer needs from a replica: it refuses connections while its model loads,
``/healthz`` says when it is full, and a full one refuses a session with close code 1013."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from engine.stream_model import MAX_PIXELS, PLAN, QUESTION, frame
from streamo.cli import main
from streamo.live.client import LiveClient, NoServerTook, encode_png
from streamo.live.messages import Event
from streamo.live.server import ServeSettings

from .conftest import running_server, wait_until

REPO = Path(__file__).resolve().parents[2]
SERVING_DOC = REPO / "docs" / "serving.md"


def _nginx() -> str:
    found = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is missing: CI installs Debian's nginx (apt-get install nginx)")
        pytest.skip("nginx is not installed (Debian: apt-get install nginx; CI installs it)")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def documented_nginx_config(replicas: list[int], port: int, folder: Path) -> str:
    """docs/serving.md's nginx block with its two replicas and its port replaced by loopback ones,
    inside the main context a foreground nginx needs (its own pid, logs and temp paths)."""
    section = SERVING_DOC.read_text(encoding="utf-8").split("## Many GPUs and machines", 1)[1]
    block = re.search(r"```nginx\n(.*?)```", section, re.S).group(1)
    for placeholder, real in (("10.0.0.1:8000", f"127.0.0.1:{replicas[0]}"), ("10.0.0.2:8000", f"127.0.0.1:{replicas[1]}"),
                              ("listen 8080;", f"listen 127.0.0.1:{port};")):
        assert placeholder in block, f"the documented nginx block lost {placeholder!r}"
        block = block.replace(placeholder, real)
    # Run as root (a CI container), nginx's workers would become "nobody", who cannot enter pytest's folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"daemon off;\n{user}worker_processes 1;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} notice;\n"
            f"events {{ worker_connections 128; }}\nhttp {{\n    access_log {folder / 'access.log'};\n{temp}\n{block}}}\n")


@contextmanager
def running_nginx(replicas: list[int], folder: Path):
    """nginx in the foreground on a free loopback port, in a process group of its own (stopped at the end)."""
    binary = _nginx()
    port = _free_port()
    folder.mkdir()
    config = folder / "nginx.conf"
    config.write_text(documented_nginx_config(replicas, port, folder))
    process = subprocess.Popen([binary, "-p", str(folder), "-c", str(config), "-e", str(folder / "error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class ServeProcess:
    """A real ``streamo serve`` process, its standard error read line by line as it comes."""

    def __init__(self, model_dir: Path, port: int, max_sessions: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamo.cli", "serve", "--model", str(model_dir), "--port", str(port),
             "--max-pixels", str(MAX_PIXELS), "--max-sessions", str(max_sessions)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self.reader.start()

    def wait_for_line(self, text: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, f"no line with {text!r}: {''.join(self.lines)}"
            time.sleep(0.02)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def health(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def metric(url: str, series: str) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def decide_next(client: LiveClient) -> Event:
    while not isinstance(message := await client.receive(), Event):
        assert message is not None, "the session closed before its event"
    return message


def test_two_replicas_behind_nginx(loaded_model, stream_model, tmp_path):
    """B (a real ``streamo serve``, 2 sessions) is listed first, A (1 session) second. While B
    loads, nginx is refused by it and the session lands on A. Then, on a fresh nginx (the first
    one skips B for its ``fail_timeout``), least connections spreads two sessions over both; with
    A full, a third is refused by A (1013) and the client's next try is taken by B; with both
    full, nginx passes A's 1013 on to the client."""
    _nginx()
    replica_b = ServeProcess(stream_model.directory, _free_port(), max_sessions=2)
    try:
        with running_server(loaded_model, ServeSettings(max_sessions=1), name="replica-a") as replica_a:
            replicas = [replica_b.port, int(replica_a.url.rsplit(":", 1)[1])]
            with running_nginx(replicas, tmp_path / "loading") as proxy:
                # B has reserved its port and says it is loading: held there, it refuses connections.
                replica_b.wait_for_line("refuses connections until it is loaded")
                replica_b.process.send_signal(signal.SIGSTOP)
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", replica_b.port), timeout=2)

                async def while_b_loads() -> None:
                    client = await LiveClient.connect(proxy)
                    assert len(replica_a.state.connections) == 1
                    await client.disconnect()

                asyncio.run(while_b_loads())
                replica_b.process.send_signal(signal.SIGCONT)
                log = (tmp_path / "loading" / "error.log").read_text()
                assert "Connection refused) while connecting to upstream" in log and f":{replica_b.port}/" in log, log
            wait_until(lambda: not replica_a.state.connections)
            replica_b.wait_for_line("Application startup complete")
            assert health(replica_b.url) == (200, '{"status":"ok"}')

            with running_nginx(replicas, tmp_path / "ready") as proxy:
                async def spread_then_full() -> None:
                    first, second = await LiveClient.connect(proxy), await LiveClient.connect(proxy)
                    assert len(replica_a.state.connections) == 1 and metric(replica_b.url, "streamo_sessions_open") == 1
                    for client in (first, second):  # the upgraded connection carries a frame and its event
                        await client.send_frame(encode_png(frame(0)), 0.0)
                        assert (await decide_next(client)).turn == 0
                    assert health(replica_a.url) == (503, '{"status":"full"}')
                    assert health(replica_b.url) == (200, '{"status":"ok"}')

                    third = await LiveClient.connect_first([proxy] * 3)  # tied 1-1: round robin, A then B
                    assert metric(replica_a.url, 'streamo_errors_total{code="server_full"}') == 1
                    assert metric(replica_b.url, "streamo_sessions_open") == 2 and len(replica_a.state.connections) == 1
                    assert health(replica_b.url) == (503, '{"status":"full"}')

                    async with connect(proxy.replace("http", "ws") + "/v1/stream") as raw:  # both full
                        assert '"server_full"' in await raw.recv()
                        with pytest.raises(ConnectionClosed):
                            await raw.recv()
                        assert raw.close_code == 1013
                    for client in (first, second, third):
                        await client.disconnect()

                asyncio.run(spread_then_full())
    finally:
        replica_b.stop()


def test_the_client_opens_its_session_on_the_first_replica_that_takes_it(loaded_model, planned_frames_dir, capsys):
    """``streamo client --server`` with a port that refuses, a full replica and a free one plays
    the video on the free one; with none free it stops with one line naming each."""
    closed = f"127.0.0.1:{_free_port()}"
    arguments = ["--video", str(planned_frames_dir), "--question", QUESTION, "--at", "0"]
    with running_server(loaded_model, ServeSettings(max_sessions=1)) as full, running_server(loaded_model) as free:
        async def hold():
            return await LiveClient.connect(full.url)

        loop = asyncio.new_event_loop()
        holder = loop.run_until_complete(hold())
        try:
            assert main(["client", "--server", closed, full.url, free.url, *arguments]) == 0
            lines = capsys.readouterr().out.splitlines()
            assert [line.split()[1] for line in lines] == [state.value for state in PLAN]
            assert full.state.metrics.errors.labels("server_full")._value.get() == 1

            assert main(["client", "--server", closed, full.url, *arguments]) == 2
            errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
            assert len(errors) == 1 and closed in errors[0] and "cannot connect" in errors[0], errors
            assert "server_full" in errors[0] and full.url in errors[0]
        finally:
            loop.run_until_complete(holder.disconnect())
            loop.close()
        wait_until(lambda: not full.state.connections)


def test_connect_first_stops_at_a_refusal_the_next_replica_would_repeat(loaded_model):
    with running_server(loaded_model, ServeSettings(api_key="k-1")) as keyed, running_server(loaded_model) as open_:
        with pytest.raises(NoServerTook) as none:
            asyncio.run(LiveClient.connect_first([keyed.url, open_.url], api_key=None))
    assert [url for url, _ in none.value.failures] == [keyed.url] and "unauthorized" in str(none.value)


def test_metrics_count_the_frames_waiting_for_the_model(loaded_model):
    """``streamo_frames_waiting``, what a replica's scaling rule reads: frames received and not
    yet decided. The model is held on the first frame while three are sent."""
    gate = threading.Event()

    def held_engine():
        engine = loaded_model.session()
        open_turn = engine.context.open_turn

        def held(*args, **kwargs):
            gate.wait(timeout=30)
            return open_turn(*args, **kwargs)

        engine.context.open_turn = held
        return engine

    with running_server(loaded_model) as server:
        server.state.scheduler._open_engine = held_engine

        async def run() -> tuple[list[int], float]:
            client = await LiveClient.connect(server.url)
            for turn in range(3):
                await client.send_frame(encode_png(frame(turn)), float(turn))
            await asyncio.to_thread(wait_until, lambda: metric(server.url, "streamo_frames_waiting") == 3)
            gate.set()
            turns = [(await decide_next(client)).turn for _ in range(3)]
            after = await asyncio.to_thread(metric, server.url, "streamo_frames_waiting")
            await client.disconnect()
            return turns, after

        assert asyncio.run(run()) == ([0, 1, 2], 0)


def test_a_draining_replica_is_not_ready_and_refuses_sessions(loaded_model):
    """The first step of a shutdown (``AppState.drain``) marks the replica draining: a balancer's
    check on a kept-alive connection reads 503 ``draining``, and a new session gets 1013."""
    with running_server(loaded_model) as server:
        assert health(server.url) == (200, '{"status":"ok"}')
        server.state.draining = True
        assert health(server.url) == (503, '{"status":"draining"}')
        with pytest.raises(NoServerTook) as refused:
            asyncio.run(LiveClient.connect_first([server.url]))
        assert "server_full" in str(refused.value)
