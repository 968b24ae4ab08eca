"""``benchmarks/gpu_check.sh --config tiny``: the GPU check end to end on CPU, without PyAV.

The kit's data (clips, stream file, frame cache, pictures, serve frames) is made with PyAV
and packed by ``gpu_kit.py``, then deleted; the check runs where ``import av`` fails, so it
can only succeed from the unpacked tar with its frame cache still warm (same paths, same
mtimes). One run also checks ``train_gpu.py``'s LoRA setup at the tests' scale: DeepSpeed
ZeRO-2 under torchrun (``train.sh`` unchanged), merged, reloaded, streamed 30 s.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("swift")
pytest.importorskip("deepspeed")

REPO = Path(__file__).resolve().parents[2]
STEPS = 2
NO_PYAV = "import sys\nsys.modules['av'] = None  # import av raises ImportError\n"


@pytest.fixture(scope="module")
def check(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("gpu_check")
    data, kit, out, shim = work / "data", work / "kit", work / "out", work / "no-pyav"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("STREAMO_FRAME_CACHE", None)
    made = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_kit.py"), "--out", str(kit), "--config", "tiny",
                           "--no-wheels", "--data-root", str(data)], env=env, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-3000:]
    kit_line = json.loads(made.stdout.strip().splitlines()[-1])
    shutil.rmtree(data)  # only the kit's tar can bring it back
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(NO_PYAV, encoding="utf-8")
    env.update(PYTHONPATH=os.pathsep.join([str(shim), env["PYTHONPATH"]]), OUT=str(out), KIT=str(kit),
               PYTHON=sys.executable, STEPS=str(STEPS))
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--config", "tiny"], env=env, cwd=work,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    logs = "\n".join(f"{path.name}: {path.read_text()[-1500:]}" for path in out.glob("*.log"))
    return {"kit": kit_line, "lines": lines, "logs": logs, "out": out}


def test_every_step_ran_without_pyav_from_the_unpacked_kit(check):
    env = next(line for line in check["lines"] if line.get("benchmark") == "gpu_check_env")
    assert env["av"] is None and env["swift"] and env["deepspeed"]
    steps = {line["step"]: line for line in check["lines"] if "step" in line}
    assert [steps[name].get("exit") for name in ("train", "latency", "serve")] == [0, 0, 0], check["logs"]
    assert steps["ranks"]["skipped"].startswith("needs 2 GPUs") and steps["ranks"]["gpus"] == 0
    assert check["kit"]["fits"] is True and check["kit"]["data_bytes"] > 0 and check["kit"]["wheel_bytes"] == 0


def test_lora_zero2_trains_reloads_with_its_state_tokens_and_streams(check):
    lora = next(line for line in check["lines"] if line.get("setup") == "tiny-lora-zero2")
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


def test_stream_latency_and_serve_load_report_from_the_kit_frames(check):
    latency = next(line for line in check["lines"] if line.get("benchmark") == "stream_latency")
    assert latency["config"] == "tiny" and all(ms > 0 for ms in latency["ours_ms"].values())
    serve = next(line for line in check["lines"] if "backends" in line)["backends"]["transformers"]
    # How many sessions a loaded 2-core machine sustains is not the point here; that nothing is lost is.
    assert serve["lost"] == 0 and serve["frames_sent"] > 0 and serve["round_trip_ms"] > 0 and "sustained_sessions" in serve
