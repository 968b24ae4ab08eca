"""train.sh over several ranks on CPU (gloo): DDP, ZeRO-2, ZeRO-3 and two nodes on one machine.

Every run trains the tiny model on the shipped example's 8 samples cut into 16 windows
(MAX_LENGTH 640: two windows each), batch 1 per rank, for one epoch, with stream_focal and its
``running`` alpha (all-reduced over ranks, folded in per optimizer step). The reference is one
rank with gradient accumulation 2, so each optimizer step sees the same two rows either way.

The two ways differ only in the order of float32 reductions: the ranks' gradient sums (and,
under ZeRO-2/3, the partitioned, flattened buckets and the clipping norm summed from per-rank
partial sums) and the element-wise optimizer kernels run over differently laid-out tensors. For
a float32 sum of n terms the rounding error is about sqrt(n) * u relative (u = 2**-24,
random-walk bound); the largest reduction is the clipping norm over all P trainable parameters,
so each step's gradient is off by a relative rho = sqrt(P) * u at most, and so is each step's
loss (step k: k * rho, the perturbations of the steps before adding up). Adam with
(1 - beta1) <= sqrt(1 - beta2) (ms-swift's 0.9 and 0.95, checked) moves each parameter by at
most lr a step, scale-invariantly, so a relative perturbation rho of the gradient changes the
step's move, a vector of norm at most lr * sqrt(P), by at most lr * sqrt(P) * rho; over the run
the parameters stay within STEPS * lr * sqrt(P) * rho in L2 norm. The bound is on the norm, not
on each parameter: where a gradient element cancels to nearly zero its rounding error is not
small relative to it, and Adam's step there can differ by up to lr (seen under ZeRO-3 on two
embedding rows after 8 steps); such elements are few and weigh little in the norm.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from streamo.swift_plugin.dataset import StreamPreprocessor, StreamSettings, _load_tokenizer
from streamo.swift_plugin.frames import FrameSource
from streamo.swift_plugin.template import ROW_LOG_ENV, row_key

pytestmark = [pytest.mark.slow, pytest.mark.multirank]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "dataset" / "example" / "stream_format.json"
SPECIAL_TOKENS_FILE = REPO / "configs" / "special_tokens.txt"
STREAMO = Path(sys.executable).with_name("streamo")
STEPS = 8
MAX_LENGTH = 640
MAX_PIXELS = 3136
LEARNING_RATE = 2e-2
UNIT_ROUNDOFF = 2.0**-24


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(tiny_model_dir, output_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PRESET": "cpu-tiny",
        "MODEL": str(tiny_model_dir),
        "OUTPUT_DIR": str(output_dir),
        "MAX_STEPS": str(STEPS),
        "MAX_LENGTH": str(MAX_LENGTH),
        "LEARNING_RATE": str(LEARNING_RATE),
        "LOSS": "stream_focal",
        "STREAMO_FOCAL_ALPHA": "running",
        ROW_LOG_ENV: str(output_dir / "rows"),
        "MASTER_PORT": str(_free_port()),
        # Every run reads the same JPEG frames (decoded frames differ from them in the last bits);
        # a fresh cache per run, which the ranks of a run fill at once while preprocessing.
        "STREAMO_FRAME_CACHE": str(output_dir / "frames"),
        **extra,
    }
    for name in ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "RANK", "WORLD_SIZE"):
        if name not in extra:
            env.pop(name, None)
    return env


def _finish(processes: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + 900
    for process, log in zip(processes, logs):
        try:
            process.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
        assert process.returncode == 0, log.read_text()[-4000:]


def _launch(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen(["bash", str(REPO / "train.sh"), "--seed", "7", "--data_seed", "7"], env=env,
                                cwd=log.parent, stdout=handle, stderr=subprocess.STDOUT)


class Run:
    """One finished training run: its per-step losses, its checkpoint and the rows each rank trained."""

    def __init__(self, output_dir: Path):
        (self.directory,) = [path for path in output_dir.iterdir() if path.is_dir() and path.name.startswith("v")]
        entries = [json.loads(line) for line in (self.directory / "logging.jsonl").read_text().splitlines()]
        self.losses = [entry["loss"] for entry in entries if "loss" in entry]
        self.checkpoint = self.directory / f"checkpoint-{STEPS}"
        rows = output_dir / "rows"
        self.rows = {path.stem: [json.loads(line)["row"] for line in path.read_text().splitlines()]
                     for path in sorted(rows.glob("rank*.jsonl"))}

    def parameters(self):
        from safetensors.torch import load_file

        return load_file(self.checkpoint / "model.safetensors")


@pytest.fixture(scope="session")
def train_runs(tiny_model_dir, tmp_path_factory):
    """Runs each configuration once per session, on first use."""
    done: dict[str, Run] = {}

    def run(name: str) -> Run:
        if name in done:
            return done[name]
        output = tmp_path_factory.mktemp(name)
        if name == "nodes":
            port = str(_free_port())
            envs = [_environment(tiny_model_dir, output, NNODES="2", NODE_RANK=str(rank), NPROC_PER_NODE="1",
                                 MASTER_ADDR="127.0.0.1", MASTER_PORT=port) for rank in (0, 1)]
            # Each node writes its own output directory; node 0's is the run's (it logs and saves).
            envs[1]["OUTPUT_DIR"] = str(output / "node1")  # the frame cache and the row log stay shared
            logs = [output / f"node{rank}.log" for rank in (0, 1)]
            _finish([_launch(env, log) for env, log in zip(envs, logs)], logs)
        else:
            settings = {"accumulation": dict(GRAD_ACCUM="2"),
                        "ddp": dict(NPROC_PER_NODE="2", DEEPSPEED="none"),
                        "zero2": dict(NPROC_PER_NODE="2", DEEPSPEED="zero2"),
                        "zero3": dict(NPROC_PER_NODE="2", DEEPSPEED="zero3")}[name]
            log = output / "train.log"
            _finish([_launch(_environment(tiny_model_dir, output, **settings), log)], [log])
        done[name] = Run(output)
        return done[name]

    return run


@pytest.fixture(scope="session")
def example_windows(tiny_model_dir) -> list[str]:
    """The keys of every training row, made by the plugin's own preprocessor (8 samples -> 16 windows)."""
    tokens = SPECIAL_TOKENS_FILE.read_text(encoding="utf-8").split()
    settings = StreamSettings(max_length=MAX_LENGTH, tokenizer=_load_tokenizer(str(tiny_model_dir), tokens),
                              frames=FrameSource.from_env(MAX_PIXELS))
    preprocessor = StreamPreprocessor(data_file=str(EXAMPLE), settings=settings)
    keys = [row_key(part["messages"], part["videos"][0])
            for row in json.loads(EXAMPLE.read_text(encoding="utf-8")) for part in preprocessor.windows(row)]
    assert len(keys) == 2 * STEPS
    return keys


def _rho(parameters) -> float:
    return math.sqrt(sum(tensor.numel() for tensor in parameters.values())) * UNIT_ROUNDOFF


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3"])
def test_two_ranks_train_what_one_rank_with_accumulation_trains(name, train_runs):
    reference, run = train_runs("accumulation"), train_runs(name)
    assert len(reference.losses) == len(run.losses) == STEPS
    expected, trained = reference.parameters(), run.parameters()
    assert expected.keys() == trained.keys()
    args = json.loads((run.checkpoint / "args.json").read_text())
    assert (1 - args["adam_beta1"]) <= math.sqrt(1 - args["adam_beta2"])  # Adam moves at most lr a step
    rho = _rho(expected)
    for step, (a, b) in enumerate(zip(reference.losses, run.losses), 1):
        assert b == pytest.approx(a, rel=step * rho), f"step {step}"
    parameters = sum(tensor.numel() for tensor in expected.values())
    tolerance = STEPS * LEARNING_RATE * math.sqrt(parameters) * rho
    distance = math.sqrt(sum(float(((expected[key] - trained[key]).double() ** 2).sum()) for key in expected))
    assert distance <= tolerance, (distance, tolerance)


def test_the_ranks_train_every_window_once_per_epoch(train_runs, example_windows):
    for name in ("accumulation", "ddp"):
        run = train_runs(name)
        seen = [key for rows in run.rows.values() for key in rows]
        assert Counter(seen) == Counter(example_windows), name
    ranks = train_runs("ddp").rows
    assert sorted(ranks) == ["rank0", "rank1"] and [len(rows) for rows in ranks.values()] == [STEPS, STEPS]


def test_ms_swift_sampler_leaves_out_the_rows_that_do_not_fill_every_rank():
    """Pinned convention: with N rows on W ranks, ms-swift trains N - N mod W rows an epoch,
    always leaving out the last N mod W rows of the (shuffled) dataset."""
    from swift.dataloader.shard import BatchSamplerShard

    def indices(rank: int, world: int, rows: int) -> list[int]:
        class Sharded(BatchSamplerShard):
            pass

        Sharded.rank = property(lambda self: rank)
        Sharded.world_size = property(lambda self: world)
        sampler = Sharded(rows, batch_size=1, shuffle=True, drop_last=False, data_seed=7)
        return [index for batch in sampler for index in batch]

    trained = indices(0, 2, 71) + indices(1, 2, 71)
    assert sorted(trained) == list(range(70))
    assert sorted(indices(0, 2, 16) + indices(1, 2, 16)) == list(range(16))


@pytest.mark.parametrize("name", ["ddp", "zero2"])
def test_two_ranks_fill_one_frame_cache_at_once(name, train_runs):
    cache = train_runs(name).directory.parent / "frames"
    videos = {Path(video).name for row in json.loads(EXAMPLE.read_text()) for video in row["videos"]}
    markers = list(cache.glob("*/*/frames.json"))
    assert len(markers) == len(videos)
    for marker in markers:
        meta = json.loads(marker.read_text())
        assert all((marker.parent / f"{turn:06d}.jpg").is_file() for turn in range(len(meta["times"])))
    assert not [path for path in cache.rglob("*.tmp")]


def _first_frames(run: Run, video: str, count: int, directory: Path) -> Path:
    """The first ``count`` frames of ``video`` from the run's frame cache, as a frame directory."""
    (marker,) = [path for path in (run.directory.parent / "frames").glob("*/*/frames.json")
                 if json.loads(path.read_text())["video"].endswith(video)]
    directory.mkdir()
    for turn in range(count):
        shutil.copy(marker.parent / f"{turn:06d}.jpg", directory / f"{turn:06d}.jpg")
    return directory


def test_two_nodes_on_one_machine_train_and_their_checkpoint_streams_and_serves(train_runs, example_windows, tmp_path):
    reference, run = train_runs("accumulation"), train_runs("nodes")
    rho = _rho(reference.parameters())
    assert run.losses == pytest.approx(reference.losses, rel=STEPS * rho)
    assert sorted(run.rows) == ["rank0", "rank1"]
    assert Counter(key for rows in run.rows.values() for key in rows) == Counter(example_windows)
    seconds = 5  # enough to show that the checkpoint loads, decides each second and serves a session
    video = _first_frames(run, "synth_0000.mp4", seconds, tmp_path / "frames")
    question = "What is moving?"
    env = {**os.environ, "MAX_PIXELS": str(MAX_PIXELS)}
    streamed = subprocess.run([str(STREAMO), "stream", "--model", str(run.checkpoint), "--video", str(video),
                               "--question", question, "--json", "--max-pixels", str(MAX_PIXELS)],
                              env=env, capture_output=True, text=True, timeout=600)
    assert streamed.returncode == 0, streamed.stderr[-3000:]
    events = [json.loads(line) for line in streamed.stdout.splitlines() if line.startswith("{")]
    assert len(events) == seconds and all(event["state"] in ("silence", "standby", "response") for event in events)

    port = _free_port()
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen([str(STREAMO), "serve", "--model", str(run.checkpoint), "--port", str(port),
                                   "--max-pixels", str(MAX_PIXELS)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while server.poll() is None and time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        client = subprocess.run([str(STREAMO), "client", "--server", f"http://127.0.0.1:{port}", "--video", str(video),
                                 "--question", question, "--json"], env=env, capture_output=True, text=True, timeout=600)
        assert client.returncode == 0, client.stderr[-3000:]
        served = [json.loads(line) for line in client.stdout.splitlines() if line.startswith("{")]
        # Frames travel to the server as pictures, so only the session's shape is compared, not each decision.
        assert len(served) == seconds and all(event["state"] in ("silence", "standby", "response") for event in served)
    finally:
        server.terminate()
        server.wait(timeout=60)
