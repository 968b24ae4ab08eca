"""Training at real size: ``train.sh`` with DeepSpeed on random full-size Qwen2.5-VL, one JSON line per setup.

The recipe's purpose is DeepSpeed fine-tuning of Qwen2.5-VL on GPUs; this script runs that
path end to end before a user's first GPU run does. For each setup it

* builds the model from its published configuration with random weights
  (``streamo.tiny_model.build_full_size_model``, no download; ``--config tiny``: the tiny model),
  with the real Qwen2 tokenizer and without the state tokens, as the published checkpoint;
* trains ``--steps`` optimizer steps with ``train.sh`` unchanged, driven by its environment
  variables (``PRESET=gpu``: bf16, gradient checkpointing, frozen ViT; ``cpu-tiny`` on CPU) on
  synthetic streams of realistic length (``streamo synth --duration``: 200-216 s clips of
  448x224 frames, 128 visual tokens each, that the plugin cuts into two windows of 14-16.4K
  tokens each for ``MAX_LENGTH`` = 16384; frames from a filled frame cache);
* reloads the checkpoint with ``streamo.engine.load_stream_model`` (a LoRA checkpoint is
  merged first with ``swift export --merge_lora``, as a user must) and checks the three state
  tokens: single ids in the tokenizer, finite rows in the embedding and output layers;
* plays 30 s of the shipped example through it with ``streamo stream --json``.

Setups (``--config full``, the default): 3B full fine-tuning with ZeRO-3; 7B LoRA with ZeRO-2;
7B full fine-tuning with ZeRO-3 and the optimizer states offloaded to host memory
(``configs/ds_zero3_offload.json``), which runs only when the estimated host memory fits
(16 bytes per trained parameter: fp32 master weights, fp32 gradients and two Adam moments,
plus 8 GiB for the processes); otherwise its line says so and why. ``--config tiny`` runs the
same setups with the tiny model on CPU (``PRESET=cpu-tiny``, ZeRO under torchrun), the code
path the test suite runs.

Each line: setup, seconds per optimizer step (steps after the first), training tokens per
second (input tokens, ``--include_num_input_tokens_seen``), peak GPU memory (ms-swift's max
reserved), peak host memory (proportional set size summed over the training process tree,
sampled every second), loss at the first and the last step, whether the checkpoint reloads
with the state tokens intact, whether ``streamo stream`` ran 30 s of the example through it.
The exit status is 1 when a setup that ran failed any of these.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lib.models import build_model
from lib.paths import EXAMPLE_VIDEOS, REPO
from lib.system import free_port

STREAM_SECONDS = 30
QUESTION = "Tell me when a shape moves."
HOST_OVERHEAD_GIB = 8.0
"""Host memory of the training processes besides the offloaded optimizer (Python, CUDA
context, dataloader workers), for the offload estimate."""
HOST_BYTES_PER_TRAINED_PARAMETER = 16
"""ZeRO-3 optimizer offload keeps fp32 master weights, fp32 gradients and Adam's two moments
of every trained parameter in pinned host memory."""


@dataclass(frozen=True)
class Setup:
    name: str
    size: str
    """``3b``, ``7b`` or ``tiny``."""
    tuner: str
    """``TUNER`` of train.sh."""
    deepspeed: str
    """``zero2``, ``zero3`` or ``zero3-offload``."""

    @property
    def deepspeed_setting(self) -> str:
        """``DEEPSPEED`` of train.sh: a name it knows, or the offload configuration's path."""
        return str(REPO / "configs" / "ds_zero3_offload.json") if self.deepspeed == "zero3-offload" else self.deepspeed


SETUPS = {
    "full": [Setup("3b-full-zero3", "3b", "full", "zero3"), Setup("7b-lora-zero2", "7b", "lora", "zero2"),
             Setup("7b-full-zero3-offload", "7b", "full", "zero3-offload")],
    "tiny": [Setup("tiny-full-zero3", "tiny", "full", "zero3"), Setup("tiny-lora-zero2", "tiny", "lora", "zero2"),
             Setup("tiny-full-zero3-offload", "tiny", "full", "zero3-offload")],
}


@dataclass(frozen=True)
class Scale:
    """Data and budgets of one ``--config``."""

    preset: str
    max_length: int
    max_pixels: int
    frame_size: str
    duration: str
    videos: int


SCALES = {
    # 200-216 s clips: about 108 one-second turns of 128 visual tokens fill 16384 tokens, so each
    # clip becomes two windows of 14-16.4K tokens and every step trains on a sample near MAX_LENGTH.
    "full": Scale("gpu", 16384, 100352, "448x224", "200,216", 3),
    "tiny": Scale("cpu-tiny", 256, 3136, "56x56", "12,16", 1),
}


# ---------------------------------------------------------------- host memory


def _tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc's parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _pss_bytes(pid: int) -> int:
    """Proportional set size: pages shared between processes (forked workers) count once overall."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class HostMemorySampler:
    """Peak of the summed PSS of a process tree, sampled every ``interval`` seconds."""

    def __init__(self, root: int, interval: float = 1.0) -> None:
        self.root, self.interval, self.peak = root, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(_pss_bytes(pid) for pid in _tree_pids(self.root)))
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def host_memory_available() -> int:
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable")


def trained_parameters(size: str) -> int:
    """Parameters train.sh trains in full fine-tuning: everything but the frozen ViT blocks
    (the aligner, the language model and its embeddings are trained)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from streamo.tiny_model import full_config, tiny_config

    config = tiny_config() if size == "tiny" else full_config(size)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config)
    visual = model.model.visual
    frozen = sum(p.numel() for p in visual.parameters()) - sum(p.numel() for p in visual.merger.parameters())
    return sum(p.numel() for p in model.parameters()) - frozen


def offload_estimate_gib(size: str) -> float:
    return trained_parameters(size) * HOST_BYTES_PER_TRAINED_PARAMETER / 2**30 + HOST_OVERHEAD_GIB


# ---------------------------------------------------------------- data and models


def prepare_data(work: Path, scale: Scale) -> tuple[Path, Path]:
    """(stream file, frame cache): synthetic clips of realistic length, converted, frames extracted."""
    from streamo.cli import main as streamo

    data = work / "data"
    stream = data / "stream.jsonl"
    cache = work / "frames"
    if not stream.is_file():
        steps = [
            ["synth", "--out", str(data), "--videos", str(scale.videos), "--seed", "0", "--fps", "2",
             "--size", scale.frame_size, "--duration", scale.duration],
            ["convert", "--input", str(data / "raw_data.json"), "--output", str(stream), "--video-prefix", str(data),
             "--workers", "1", "--strict"],
        ]
        for argv in steps:
            if streamo(argv) != 0:
                raise SystemExit(f"train_gpu: streamo {argv[0]} failed")
    if streamo(["frames", "--input", str(stream), "--cache-dir", str(cache), "--max-pixels", str(scale.max_pixels),
                "--workers", "2"]) != 0:
        raise SystemExit("train_gpu: streamo frames failed")
    return stream, cache


def stream_frames(work: Path) -> Path:
    """A directory of the first 30 one-second frames of the shipped example (its two videos in turn)."""
    from streamo.video import sample_frames

    folder = work / "example-30s"
    if len(list(folder.glob("*.jpg"))) == STREAM_SECONDS:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for video in sorted(EXAMPLE_VIDEOS.glob("*.mp4")):
        frames.extend(sample_frames(str(video)))
    if len(frames) < STREAM_SECONDS:
        raise SystemExit(f"train_gpu: the example has only {len(frames)} seconds of video")
    for turn, image in enumerate(frames[:STREAM_SECONDS]):
        image.save(folder / f"{turn:03d}.jpg", quality=95)
    return folder


# ---------------------------------------------------------------- one setup


def train(setup: Setup, scale: Scale, model: Path, stream: Path, cache: Path, output: Path, args) -> tuple[Path, int, str]:
    """Run train.sh; (run directory, peak host bytes, log tail)."""
    env = {
        **os.environ,
        "PRESET": scale.preset, "MODEL": str(model), "DATASET": str(stream), "OUTPUT_DIR": str(output),
        "DEEPSPEED": setup.deepspeed_setting, "TUNER": setup.tuner, "MAX_LENGTH": str(scale.max_length),
        "MAX_PIXELS": str(scale.max_pixels), "GRAD_ACCUM": str(args.grad_accum), "STREAMO_FRAME_CACHE": str(cache),
        "MASTER_PORT": str(free_port()),
    }
    # Gradient checkpointing as PRESET=gpu has it, also at the tiny scale: with the ViT frozen
    # it is where a recipe breaks first (no input requiring a gradient).
    extra = ["--max_steps", str(args.steps), "--save_steps", str(args.steps), "--logging_steps", "1",
             "--save_only_model", "true", "--save_total_limit", "1", "--include_num_input_tokens_seen", "true",
             "--gradient_checkpointing", "true"]
    log = output.parent / f"{setup.name}.train.log"
    output.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as handle:
        # Its own process group: on a timeout the torchrun workers holding the GPUs go too.
        process = subprocess.Popen(["bash", str(REPO / "train.sh"), *extra], env=env, cwd=output.parent,
                                   stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = HostMemorySampler(process.pid)
        try:
            code = process.wait(timeout=args.train_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
        except BaseException:  # stopped from outside (SIGTERM, Ctrl-C): the GPUs' holders go too
            os.killpg(process.pid, signal.SIGKILL)
            raise
        peak = sampler.stop()
    tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
    if code != 0:
        raise TrainingFailed(f"train.sh {'timed out' if code is None else f'exited {code}'}; log {log}", tail)
    runs = [path for path in output.iterdir() if path.is_dir()]
    if len(runs) != 1:
        raise TrainingFailed(f"expected one run directory in {output}, found {len(runs)}", tail)
    return runs[0], peak, tail


class TrainingFailed(RuntimeError):
    def __init__(self, message: str, tail: str) -> None:
        super().__init__(message)
        self.tail = tail


def step_figures(run: Path, steps: int) -> dict:
    """Timing, tokens, memory and loss from ms-swift's ``logging.jsonl`` (one entry per step)."""
    entries = [entry for entry in map(json.loads, (run / "logging.jsonl").read_text().splitlines()) if "loss" in entry]
    if len(entries) != steps:
        raise TrainingFailed(f"{run}/logging.jsonl has {len(entries)} step entries, expected {steps}", "")
    first, last = entries[0], entries[-1]
    # train_speed(s/it) is the mean since training began: elapsed = speed x steps.
    elapsed_first = first["train_speed(s/it)"] * 1
    elapsed_last = last["train_speed(s/it)"] * steps
    tokens = [entry["num_input_tokens_seen"] for entry in entries]
    per_step = [b - a for a, b in zip([0, *tokens], tokens)]
    later = elapsed_last - elapsed_first
    memory = [entry["memory(GiB)"] for entry in entries if "memory(GiB)" in entry]
    return {
        "seconds_per_step": round(later / (steps - 1), 3) if steps > 1 else None,
        "first_step_s": round(elapsed_first, 3),
        "train_tokens_per_s": round((tokens[-1] - tokens[0]) / later, 1) if steps > 1 and later > 0 else None,
        "tokens_per_step": {"min": min(per_step), "mean": round(sum(per_step) / len(per_step)), "max": max(per_step)},
        "peak_gpu_gib": max(memory) if memory else None,
        "loss_first": first["loss"],
        "loss_last": last["loss"],
    }


def merge_lora(checkpoint: Path) -> Path:
    merged = checkpoint.with_name(checkpoint.name + "-merged")
    swift = shutil.which("swift", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    command = [swift or "swift", "export", "--adapters", str(checkpoint), "--merge_lora", "true",
               "--output_dir", str(merged)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise TrainingFailed(f"swift export --merge_lora exited {done.returncode}", (done.stdout + done.stderr)[-2000:])
    return merged


def _base_rows(model: Path, ids: list[int]) -> dict[str, object]:
    """The base model's embedding and output rows at ``ids``, read from its safetensors
    (a model with tied embeddings has no ``lm_head.weight``)."""
    from safetensors import safe_open

    rows = {}
    for file in sorted(model.glob("*.safetensors")):
        with safe_open(str(file), "pt") as tensors:
            for key in tensors.keys():
                for kind in ("embed_tokens.weight", "lm_head.weight"):
                    if key.endswith(kind) and "visual" not in key:
                        span = tensors.get_slice(key)[min(ids):max(ids) + 1]
                        rows[kind] = span[[i - min(ids) for i in ids]]
    rows.setdefault("lm_head.weight", rows.get("embed_tokens.weight"))
    return rows


def check_state_tokens(checkpoint: Path, base: Path, device: str) -> dict:
    """Reload as the engine does; the state tokens must be single ids with finite, non-zero rows."""
    import torch

    from streamo.engine.loading import ModelLoadError, load_stream_model
    from streamo.protocol import state_token_ids

    try:
        model, processor = load_stream_model(checkpoint, device=device)
    except ModelLoadError as exc:
        return {"checkpoint_reloads_with_state_tokens": False, "reload_error": str(exc)}
    ids = list(state_token_ids(processor.tokenizer).values())
    layers = {"embed_tokens.weight": model.get_input_embeddings().weight, "lm_head.weight": model.get_output_embeddings().weight}
    rows = {kind: weight[ids].detach().float().cpu() for kind, weight in layers.items()}
    intact = all(bool(torch.isfinite(r).all()) and bool(r.abs().sum(dim=1).gt(0).all()) for r in rows.values())
    # The next setup trains in other processes: this one must hand its GPU memory back.
    del layers, model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    base_rows = _base_rows(base, ids)
    changed = {kind: not torch.equal(rows[kind], base_rows[kind].float()) for kind in rows if base_rows.get(kind) is not None}
    return {"checkpoint_reloads_with_state_tokens": intact, "state_token_ids": ids,
            "state_rows_changed_from_base": changed}


def stream_30s(checkpoint: Path, frames: Path, device: str) -> dict:
    command = [sys.executable, "-m", "streamo.cli", "stream", "--model", str(checkpoint), "--video", str(frames),
               "--question", QUESTION, "--at", "0", "--json", "--max-new-tokens", "16", "--device", device]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    ran = done.returncode == 0 and len(lines) == STREAM_SECONDS and all(
        line["state"] in ("silence", "standby", "response") for line in lines)
    result = {"stream_30s": ran}
    if lines:
        result["stream_ms_per_frame"] = round(sum(line["latency_ms"] for line in lines) / len(lines), 1)
    if not ran:
        result["stream_error"] = done.stderr[-1500:]
    return result


def run_setup(setup: Setup, scale: Scale, model: Path, stream: Path, cache: Path, frames: Path, args) -> dict:
    result = {"benchmark": "train_gpu", "setup": setup.name, "model": setup.size, "tuner": setup.tuner,
              "deepspeed": setup.deepspeed, "device": args.device, "gpus": args.gpus, "steps": args.steps,
              "grad_accum": args.grad_accum, "max_length": scale.max_length, "max_pixels": scale.max_pixels}
    if setup.deepspeed == "zero3-offload":
        estimate, available = offload_estimate_gib(setup.size), host_memory_available() / 2**30
        result.update(host_memory_estimate_gib=round(estimate, 1), host_memory_available_gib=round(available, 1))
        if estimate > args.host_memory_fraction * available:
            result.update(ran=False, reason=(
                f"does not fit host memory: {trained_parameters(setup.size) / 1e9:.2f} B trained parameters x "
                f"{HOST_BYTES_PER_TRAINED_PARAMETER} B (fp32 master weights, fp32 gradients, two Adam moments) + "
                f"{HOST_OVERHEAD_GIB:g} GiB = {estimate:.1f} GiB > {args.host_memory_fraction:g} x {available:.1f} GiB available"))
            return result
    output = args.work / "runs" / setup.name
    try:
        run, peak_host, _ = train(setup, scale, model, stream, cache, output, args)
        result.update(ran=True, **step_figures(run, args.steps), peak_host_gib=round(peak_host / 2**30, 2))
        checkpoint = run / f"checkpoint-{args.steps}"
        if setup.tuner == "lora":
            checkpoint = merge_lora(checkpoint)
        result.update(check_state_tokens(checkpoint, model, args.device))
        result.update(stream_30s(checkpoint, frames, args.device))
    except TrainingFailed as exc:
        result.update(ran=result.get("ran", False), error=str(exc), log_tail=exc.tail)
    finally:
        if not args.keep:
            shutil.rmtree(output, ignore_errors=True)
    return result


def passed(result: dict) -> bool:
    return result.get("ran") is False and "reason" in result or (
        result.get("ran") is True and result.get("checkpoint_reloads_with_state_tokens") is True
        and result.get("stream_30s") is True and all(math.isfinite(result[k]) for k in ("loss_first", "loss_last")))


# ---------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=list(SETUPS), default="full",
                        help="full: random Qwen2.5-VL-3B/7B on GPUs (default); tiny: the tiny model on CPU (the tests' scale)")
    parser.add_argument("--setups", help="comma-separated setup names of the config (default: all): "
                        + "; ".join(f"{config}: {', '.join(s.name for s in setups)}" for config, setups in SETUPS.items()))
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per setup, at least 2 (default: 5)")
    parser.add_argument("--grad-accum", type=int, default=1, help="GRAD_ACCUM: samples per optimizer step and GPU (default: 1)")
    parser.add_argument("--host-memory-fraction", type=float, default=0.9,
                        help="run the offload setup only when its estimate is at most this share of MemAvailable (default: 0.9)")
    parser.add_argument("--train-timeout", type=float, default=1800, help="seconds one train.sh run may take (default: 1800)")
    parser.add_argument("--work", type=Path, help="keep models, data and logs here (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep checkpoints (default: removed after their checks, for disk space)")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    names = [s.name for s in SETUPS[args.config]]
    chosen = args.setups.split(",") if args.setups else names
    unknown = [name for name in chosen if name not in names]
    if unknown:
        parser.error(f"--setups: {', '.join(unknown)} not among {', '.join(names)}")
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is timed apart)")
    args.setups = [s for s in SETUPS[args.config] if s.name in chosen]
    return args


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    # A timeout's SIGTERM unwinds (removing checkpoints, killing train.sh's process group).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args.device = "cuda" if torch.cuda.is_available() and args.config != "tiny" else "cpu"
    args.gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    if args.config != "tiny" and args.device != "cuda":
        raise SystemExit("train_gpu: --config full needs a GPU (use --config tiny on CPU)")
    scale = SCALES[args.config]
    temporary = None
    if args.work is None:
        temporary = tempfile.TemporaryDirectory(prefix="train_gpu.")
        args.work = Path(temporary.name)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["MAX_PIXELS"] = str(scale.max_pixels)
    ok = True
    try:
        stream, cache = prepare_data(args.work, scale)
        frames = stream_frames(args.work)
        for index, setup in enumerate(args.setups):
            started = time.monotonic()
            model = build_model(args.work / "models" / setup.size, setup.size, args.device)
            result = run_setup(setup, scale, model, stream, cache, frames, args)
            result["setup_wall_s"] = round(time.monotonic() - started, 1)
            ok = ok and passed(result)
            line = json.dumps(result)
            print(line, flush=True)
            if args.out is not None:
                with open(args.out, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
            if not args.keep and setup.size not in {later.size for later in args.setups[index + 1:]}:
                shutil.rmtree(args.work / "models" / setup.size, ignore_errors=True)  # disk: a 7B model is 16 GB
    finally:
        if temporary is not None:
            temporary.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
