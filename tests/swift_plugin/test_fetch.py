"""train.sh's GPU recipe on a machine it cannot run on: one line each, never a traceback.

The hubs' addresses point at a closed loopback port, so nothing here can reach the network
even if the recipe tried to download."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLOSED = "http://127.0.0.1:1"  # port 1 on loopback: refused at once


def offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "MODELSCOPE_ENDPOINT": CLOSED, "HF_ENDPOINT": CLOSED, "MODELSCOPE_CACHE": str(tmp_path / "ms"),
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO), **extra}
    for name in ("MODEL", "PRESET", "USE_HF"):
        env.pop(name, None)
    return env


def test_the_default_recipe_without_cuda_says_what_to_do_before_any_download(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the GPU recipe runs here")
    env = offline_env(tmp_path, STREAMO_VENV=str(Path(sys.executable).parents[1]))
    done = subprocess.run(["bash", str(REPO / "train.sh")], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == ["train.sh: the GPU recipe needs CUDA and torch sees no GPU here; "
                                        "on CPU run PRESET=cpu-tiny bash train.sh"]
    assert not (tmp_path / "ms").exists() and not (tmp_path / "hf").exists()  # no download was begun


def test_a_hub_that_cannot_be_reached_is_one_line(tmp_path):
    """ms-swift's own downloader from ModelScope, its default hub: the failure names the model, the hub and the way out."""
    model = "Qwen/Qwen2.5-VL-7B-Instruct"
    done = subprocess.run([sys.executable, "-m", "streamo.swift_plugin.fetch", model], env=offline_env(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"train.sh: cannot get MODEL={model} from ModelScope: "), done.stderr
    assert "Connection" in last and last.endswith("point MODEL at a local directory of the weights, "
                                                  "or try the Hugging Face hub with USE_HF=1")

