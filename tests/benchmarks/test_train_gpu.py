"""``benchmarks/train_gpu.py`` at the tests' scale: the tiny model on CPU, the code path the GPU run takes.

One invocation trains the LoRA setup with DeepSpeed ZeRO-2 under torchrun (``train.sh``
unchanged), merges and reloads the checkpoint and streams 30 s through it; the offload setup
is asked to fit in no host memory at all, so its line must say it does not fit, and why,
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
               "--setups", "tiny-lora-zero2,tiny-full-zero3-offload", "--host-memory-fraction", "0", "--work", str(work)]
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (work / "runs" / "tiny-lora-zero2").exists()  # checkpoints are removed after their checks
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_lora_zero2_trains_reloads_with_its_state_tokens_and_streams(lines):
    lora = next(line for line in lines if line["setup"] == "tiny-lora-zero2")
    assert lora["ran"] is True and lora["deepspeed"] == "zero2" and lora["steps"] == STEPS
    assert lora["seconds_per_step"] > 0 and lora["train_tokens_per_s"] > 0
    # Windows of whole turns filled up to MAX_LENGTH: every step trains on one near-full sample.
    assert 0.8 * lora["max_length"] <= lora["tokens_per_step"]["min"] <= lora["tokens_per_step"]["max"] <= lora["max_length"]
    assert lora["loss_first"] > 0 and lora["loss_last"] > 0
    assert lora["peak_host_gib"] > 0.1 and lora["peak_gpu_gib"] is None
    assert lora["checkpoint_reloads_with_state_tokens"] is True and len(set(lora["state_token_ids"])) == 3
    # The new tokens' rows are trained through LoRA's modules_to_save and survive the merge.
    assert lora["state_rows_changed_from_base"] == {"embed_tokens.weight": True, "lm_head.weight": True}
    assert lora["stream_30s"] is True and lora["stream_ms_per_frame"] > 0


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
