"""Real `swift sft` runs of train.sh's CPU preset on the tiny model: plain and under DeepSpeed ZeRO-2.

Each run trains a few steps on the shipped example, then the checkpoint is reloaded and
`swift infer --model CKPT` (no plugin flag: ms-swift re-imports it from args.json) must answer
with a state token.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streamo.protocol import SPECIAL_TOKENS

REPO = Path(__file__).resolve().parents[2]
SWIFT = Path(sys.executable).with_name("swift")
STEPS = 80


def _free_port() -> int:
    """A port no other process (another test run, say) is listening on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _train(tiny_model_dir, output_dir: Path, deepspeed: str) -> Path:
    env = {
        **os.environ,
        "PRESET": "cpu-tiny",
        "MODEL": str(tiny_model_dir),
        "OUTPUT_DIR": str(output_dir),
        "DEEPSPEED": deepspeed,
        "MAX_STEPS": str(STEPS),
        "MAX_LENGTH": "256",
        "LEARNING_RATE": "2e-2",
        "LOSS": "cross_entropy",
        "MASTER_PORT": str(_free_port()),
    }
    env.pop("STREAMO_FRAME_CACHE", None)
    result = subprocess.run(["bash", str(REPO / "train.sh")], env=env, cwd=output_dir.parent, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = [path for path in output_dir.iterdir() if path.is_dir()]
    return run


def _infer(checkpoint: Path, rows: list[dict], tmp_path: Path) -> list[str]:
    data = tmp_path / "infer.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    results = tmp_path / "replies.jsonl"
    env = {**os.environ, "MAX_PIXELS": "3136"}
    command = [str(SWIFT), "infer", "--model", str(checkpoint), "--val_dataset", str(data), "--max_new_tokens", "4",
               "--temperature", "0", "--result_path", str(results)]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads(line)["response"] for line in results.read_text().splitlines()]


@pytest.mark.parametrize("deepspeed", ["none", "zero2"])
def test_swift_sft_learns_saves_and_answers_with_a_state_token(deepspeed, tiny_model_dir, example_rows, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    run = _train(tiny_model_dir, tmp_path / "output", deepspeed)
    losses = [entry["loss"] for entry in map(json.loads, (run / "logging.jsonl").read_text().splitlines()) if "loss" in entry]
    assert len(losses) == STEPS
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 * 0.6

    report = json.loads((run / "streamo_data_report.json").read_text())[0]
    assert report["samples"] == len(example_rows) and report["removed_samples"] == 0
    checkpoint = run / f"checkpoint-{STEPS}"
    args = json.loads((checkpoint / "args.json").read_text())
    assert args["template"] == "stream_qwen2_5_vl" and args["external_plugins"] == [str(REPO / "plugin" / "streamo_plugin.py")]

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids = [tokenizer.encode(token, add_special_tokens=False) for token in SPECIAL_TOKENS]
    assert all(len(token_ids) == 1 for token_ids in ids)
    trained = AutoModelForImageTextToText.from_pretrained(checkpoint).get_input_embeddings().weight
    initial = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).get_input_embeddings().weight
    rows = [token_ids[0] for token_ids in ids]
    assert not torch.allclose(trained[rows], initial[rows])  # the new tokens' embeddings were trained and saved

    sample = dict(example_rows[0], messages=example_rows[0]["messages"][:9])
    (reply,) = _infer(checkpoint, [sample], tmp_path)
    assert reply.startswith(SPECIAL_TOKENS), reply
