"""``--executor ray`` on a real Ray cluster: a head and a second node started on this machine,
one CPU each, shared by the whole module (Ray's start-up is most of its time).

Every address is a loopback one: Ray replaces 127.0.0.1 given as a node's address by the
machine's network address, so the head is 127.0.0.2, and the second node and the driver,
reaching it from 127.0.0.1, are 127.0.0.1. Every process the cluster starts carries a marker
in its environment, so teardown stops exactly those by their process ids (``ray stop`` would
stop any cluster on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from streamo.cli import main
from streamo.video.synthetic import frame_times, write_clip

from instruct.replica import build as build_replica

psutil = pytest.importorskip("psutil")

EXAMPLE = Path(__file__).resolve().parents[1] / "dataset" / "example"
MARKER_VARIABLE = "STREAMO_TEST_RAY_CLUSTER"
OBJECT_STORE_BYTES = str(80 * 2**20)
DRIVER_SECONDS = 180
HEAD = "127.0.0.2"
SECOND = "127.0.0.1"
NODES = {HEAD, SECOND}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    marker: str

    def processes(self) -> list:
        """Every process this cluster started: its marker is in their environment (read as bytes:
        a retitled Ray process's title may overwrite part of it), and their descendants."""
        needle = f"{MARKER_VARIABLE}={self.marker}".encode()
        found = {}
        for pid in psutil.pids():
            try:
                with open(f"/proc/{pid}/environ", "rb") as environ:
                    if needle not in environ.read():
                        continue
                process = psutil.Process(pid)
                found[pid] = process
                found.update((child.pid, child) for child in process.children(recursive=True))
            except (psutil.Error, OSError):
                continue
        return list(found.values())

    @staticmethod
    def second_node_task(cache: Path):
        """A worker of the second node in the middle of a task that has noted its attempt
        (each attempt appends "NODE PID" to its file in the shared directory), or None."""
        for path in cache.glob(".streamo-attempts-*/*"):
            try:
                node, pid = path.read_text(encoding="utf-8").split()[-2:]
                worker = psutil.Process(int(pid))
                if node == SECOND and " ".join(worker.cmdline()).startswith("ray::_run_batch"):
                    return worker
            except (OSError, ValueError, psutil.Error):
                continue
        return None

    def driver(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "streamo.cli", *args, "--executor", "ray", "--ray-address",
                                 self.address], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        driver = self.driver(*args)
        stdout, stderr = driver.communicate(timeout=DRIVER_SECONDS)
        return subprocess.CompletedProcess(driver.args, driver.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("ray")
    temp = tmp_path_factory.mktemp("ray")
    own_temp = None
    if len(str(temp)) > 40:  # Ray's sockets live below it; a Unix socket path holds at most 107 bytes
        temp = own_temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    marker = secrets.token_hex(8)
    env = {**os.environ, MARKER_VARIABLE: marker, "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),  # its own, not ~/.ray's
           "PYTHONPATH": os.pathsep.join(sys.path)}
    port = _free_port()
    common = ["--num-cpus", "1", "--object-store-memory", OBJECT_STORE_BYTES, "--temp-dir", str(temp),
              "--disable-usage-stats", "--include-log-monitor", "false"]
    ray = [sys.executable, "-m", "ray.scripts.scripts", "start"]
    state = Cluster(f"{HEAD}:{port}", env, marker)
    try:
        for command in (
            [*ray, "--head", "--node-ip-address", HEAD, "--port", str(port), "--include-dashboard", "false",
             "--dashboard-port", str(_free_port()), "--ray-client-server-port", str(_free_port()), *common],
            [*ray, "--address", state.address, *common],
        ):
            started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            assert started.returncode == 0, started.stdout + started.stderr
        yield state
    finally:
        processes = state.processes()
        for process in processes:
            process.terminate()
        _, alive = psutil.wait_procs(processes, timeout=5)
        for process in alive:
            process.kill()
        psutil.wait_procs(alive, timeout=5)
        if own_temp is not None:
            shutil.rmtree(own_temp, ignore_errors=True)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Raw annotations over the shipped example, generated clips, a corrupt and a missing video."""
    directory = tmp_path_factory.mktemp("cluster_videos")
    records = []
    for record in json.loads((EXAMPLE / "raw_data.json").read_text()):
        records.append({**record, "video_path": str(EXAMPLE / record["video_path"])})
    for number in range(6):
        path = directory / f"clip{number}.mp4"
        write_clip(path, frame_times(4 * 30, 30), width=192, height=144)
        records.append({"video_path": str(path), "duration": 4, "source": "generated"})
    (directory / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + secrets.token_bytes(4000))
    records.insert(3, {"video_path": str(directory / "corrupt.mp4"), "duration": 4, "source": "generated"})
    records.insert(5, {"video_path": str(directory / "missing.mp4"), "duration": 4, "source": "lost"})
    raw = directory / "raw.json"
    raw.write_text(json.dumps(records))
    return raw


@pytest.fixture(scope="module")
def one_machine(videos, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("one_machine") / "frames"
    assert main(["frames", "--input", str(videos), "--cache-dir", str(cache), "--workers", "2"]) == 1  # 2 failed
    return cache


def files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def rows(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_two_nodes_write_the_bytes_one_machine_writes(cluster, videos, one_machine, tmp_path):
    cache = tmp_path / "frames"
    done = cluster.run("frames", "--input", str(videos), "--cache-dir", str(cache))
    assert done.returncode == 1, done.stderr  # the corrupt and the missing video failed
    assert "10 videos: 8 extracted, 0 already cached, 2 failed" in done.stderr

    ledger = rows(cache / "raw.ledger.jsonl")
    written = files(cache)
    del written["raw.ledger.jsonl"]
    assert written == files(one_machine)
    assert not list(cache.glob(".streamo-*"))  # the marker and the attempt counts are gone

    failures = {row["video"]: row["reason"] for row in rows(one_machine / "raw.failures.jsonl")}
    assert [row["video"] for row in ledger] == [str(videos.parent / "corrupt.mp4"), str(videos.parent / "missing.mp4")]
    for row in ledger:
        assert row["reason"] == failures[row["video"]]
        assert row["attempts"] == 1 and row["node"] in NODES
    assert [row["source"] for row in ledger] == ["generated", "lost"]


def test_a_worker_killed_mid_task_is_retried_and_the_run_completes(cluster, videos, one_machine, tmp_path):
    cache = tmp_path / "frames"
    driver = cluster.driver("frames", "--input", str(videos), "--cache-dir", str(cache))
    killed = None
    deadline = time.monotonic() + DRIVER_SECONDS
    while killed is None and driver.poll() is None and time.monotonic() < deadline:
        task = cluster.second_node_task(cache)
        if task is not None:
            task.send_signal(signal.SIGKILL)  # as a crash in the decoder would
            killed = task.pid
        time.sleep(0.01)
    stdout, stderr = driver.communicate(timeout=DRIVER_SECONDS)
    assert killed is not None, "no task ran on the second node"
    assert driver.returncode == 1, stderr  # the corrupt and the missing video failed
    assert "8 extracted, 0 already cached, 2 failed, 1 retried after a worker died" in stderr, stderr
    assert len(rows(cache / "raw.ledger.jsonl")) == 2  # only the corrupt and the missing video
    assert {name: data for name, data in files(cache).items() if name != "raw.ledger.jsonl"} == files(one_machine)


def test_a_rerun_after_the_driver_was_killed_does_only_what_is_missing(cluster, videos, tmp_path):
    cache = tmp_path / "frames"
    driver = cluster.driver("frames", "--input", str(videos), "--cache-dir", str(cache))
    deadline = time.monotonic() + DRIVER_SECONDS
    while not list(cache.glob("*/*/frames.json")) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    driver.kill()
    driver.communicate(timeout=DRIVER_SECONDS)
    assert not (cache / "raw.manifest.jsonl").exists()

    again = cluster.run("frames", "--input", str(videos), "--cache-dir", str(cache))
    assert again.returncode == 1, again.stderr  # the corrupt and the missing video failed
    statuses = [row["status"] for row in rows(cache / "raw.manifest.jsonl")]
    assert len(statuses) == 8 and "cached" in statuses
    assert sum(status == "extracted" for status in statuses) == 8 - statuses.count("cached")
    assert len(list(cache.glob("*/*/frames.json"))) == 8


def test_instruct_prepare_checks_videos_on_ray_as_on_one_machine(cluster, tmp_path):
    replica = build_replica(tmp_path / "replica")
    common = ["instruct", "prepare", "--annotations", str(replica.annotations), *replica.video_root_args()]
    assert main([*common, "--out", str(tmp_path / "local"), "--workers", "1"]) == 0
    done = cluster.run(*common, "--out", str(tmp_path / "ray"))
    assert done.returncode == 0, done.stderr

    local, ray = tmp_path / "local", tmp_path / "ray"
    for name in ("videos.jsonl", "rejects.jsonl", "stream.jsonl"):
        assert (ray / name).read_bytes() == (local / name).read_bytes(), name
    summaries = [json.loads((out / "summary.json").read_text()) for out in (local, ray)]
    assert summaries[0]["by_source"] == summaries[1]["by_source"]
    unreadable = [row for row in rows(local / "videos.jsonl") if row["status"] == "unreadable"]
    ledger = rows(ray / "ledger.jsonl")
    assert sorted(row["video"] for row in ledger) == sorted(row["path"] for row in unreadable) != []
    for row in ledger:
        known = next(video for video in unreadable if video["path"] == row["video"])
        assert (row["source"], row["reason"], row["attempts"]) == (known["source"], known["reason"], 1)
        assert row["node"] in NODES
    assert summaries[1]["files"]["ledger"] == str((ray / "ledger.jsonl").resolve())


def test_ray_is_imported_only_for_the_ray_executor(videos, tmp_path):
    """The default path never imports Ray; without Ray installed, --executor ray is one line."""
    script = ("import sys; from streamo.cli import main; code = main(sys.argv[1:]); "
              "assert 'ray' not in sys.modules, 'ray imported'; sys.modules['ray'] = None; "
              "sys.exit(main(sys.argv[1:] + ['--executor', 'ray']) * 10 + code)")
    done = subprocess.run([sys.executable, "-c", script, "frames", "--input", str(videos), "--cache-dir",
                           str(tmp_path / "frames"), "--workers", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 21, done.stderr  # 2 for the missing Ray, then 1: the local run had failures
    assert done.stderr.strip().splitlines()[-1] == (
        "streamo: error: --executor ray needs Ray: install the cluster extra (pip install 'streamo[cluster]')")
