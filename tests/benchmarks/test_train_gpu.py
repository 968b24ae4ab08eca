"""``benchmarks/train_gpu.py`` at the tests' scale: the tiny model on CPU, the code path the GPU run takes.

The LoRA setup (DeepSpeed ZeRO-2 under torchrun, merged, reloaded, streamed) is checked where
``gpu_check.sh --config tiny`` runs it (tests/benchmarks/test_gpu_check.py). Here the offload
setup is asked to fit in no host memory at all, so its line must say it does not fit, and why,
without training.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("swift")
pytest.importorskip("deepspeed")

REPO = Path(__file__).resolve().parents[2]
STEPS = 2


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> list[dict]:
    work = tmp_path_factory.mktemp("train_gpu")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("STREAMO_FRAME_CACHE", None)
    command = [sys.executable, str(REPO / "benchmarks" / "train_gpu.py"), "--config", "tiny", "--steps", str(STEPS),
               "--setups", "tiny-full-zero3-offload", "--host-memory-fraction", "0", "--work", str(work)]
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_offload_that_does_not_fit_says_so_and_why_without_training(lines):
    offload = next(line for line in lines if line["setup"] == "tiny-full-zero3-offload")
    assert offload["ran"] is False
    assert offload["host_memory_estimate_gib"] > 8 and offload["host_memory_available_gib"] > 0
    assert "does not fit host memory" in offload["reason"] and "trained parameters x 16 B" in offload["reason"]
    assert "seconds_per_step" not in offload


def test_offload_estimate_of_7b_counts_everything_but_the_frozen_vit(monkeypatch):
    """7.66 B trained parameters (8.29 B less the ViT blocks; the aligner is trained) x 16 B + 8 GiB."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_gpu", REPO / "benchmarks" / "train_gpu.py")
    train_gpu = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_gpu", train_gpu)  # its dataclasses look their module up
    spec.loader.exec_module(train_gpu)
    assert train_gpu.trained_parameters("7b") == 8_292_166_656 - (676_550_144 - 44_574_464)
    assert round(train_gpu.offload_estimate_gib("7b"), 1) == 122.1
