"""Per-second latency and memory of the streaming engine vs re-encoding the whole conversation.

The original approach answers each second by encoding the whole conversation again (every
frame through the vision encoder, every token through the language model).
``StreamingSession`` prefills only the new second on top of its KV cache. This script plays
a synthetic stream (one generated frame a second, one question at 0 s, an answer every
``--answer-every`` seconds, Silence otherwise) and measures, side by side in one run:

* ``ours_ms``: the engine's decision latency at stream seconds 30, 120 and 600 (median of
  the ``--samples`` silent seconds ending there) with ``--window`` seconds in the cache, the
  setting for long streams; ``ours_full_context_ms`` without a window (every second since 0
  in the cache: attention over it grows with the stream);
* ``reencode_ms``: the same decision made by re-encoding the whole conversation up to that
  second (chat template + processor on all frames + one full forward), median of
  ``--reencode-samples`` runs; ``reencode_forward_wall_ms`` counts the model forward alone;
* ``peak_rss_mb`` and the resident memory sampled every second of the windowed run, to show
  it stays flat once the window is full (each run is its own subprocess, so runs do not
  inflate each other's peaks); on CUDA also the peak GPU memory.

Latencies are process CPU time on CPU (steady on a shared machine; ``*_wall_ms`` too) and
wall time on GPU (``--clock``).

Default: the tiny CPU model with 56x56 frames (4 visual tokens). On a GPU, a randomly
initialised full-size Qwen2.5-VL (``--config 3b`` / ``7b``, ``streamo.tiny_model.FULL_CONFIGS``,
no download) with 448x224 frames (128 visual tokens): ``--config 7b --device cuda``.
Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lib.models import build_model
from lib.report import print_json_line
from lib.system import peak_rss_mb, rss_bytes
from streamo.tiny_model import FULL_CONFIGS, full_config

QUESTION = "Tell me when the square changes colour."


def load(args):
    """(model, processor): the tiny model, or a random full-size one sharing its processor."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    tiny = build_model(args.workdir / "tiny-state", "tiny", with_state_tokens=True)
    processor = AutoProcessor.from_pretrained(tiny)
    if args.config == "tiny":
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny, dtype=torch.float32)
    else:
        torch.manual_seed(0)
        dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
        with torch.device(args.device):
            model = Qwen2_5_VLForConditionalGeneration._from_config(
                full_config(args.config), dtype=dtype, attn_implementation="sdpa"
            )
    return model.to(args.device).eval(), processor


def frame(turn: int, width: int, height: int):
    """A synthetic picture that changes every second."""
    import numpy as np
    from PIL import Image

    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = (40 + turn * 7) % 256, 90, 160
    side = max(8, min(width, height) // 4)
    left = (turn * 5) % max(1, width - side)
    pixels[height // 3: height // 3 + side, left:left + side] = (230, (turn // 10 * 60) % 256, 30)
    return Image.fromarray(pixels)


class ScriptedStates:
    """Answers every ``every`` seconds and stays silent otherwise, whatever the random model
    prefers, so both approaches do the same work and the marks fall on silent seconds."""

    def __init__(self, every: int) -> None:
        self.every, self.turn = every, 0

    def decide(self, state_logits):
        from streamo.protocol import State

        state_logits.float().cpu()  # the decision waits for the logits, as a real one does
        answering = self.every > 0 and self.turn % self.every == 0
        self.turn += 1
        return (State.RESPONSE if answering else State.SILENCE), {}


def _median_at(latencies: list[float], mark: int, samples: int) -> float:
    """Median latency of the ``samples`` seconds ending with stream second ``mark`` (turn mark-1)."""
    return statistics.median(latencies[max(0, mark - samples):mark])


def _gpu_peak_mb(torch) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def phase_engine(args, window: float | None) -> dict:
    import torch

    from streamo.engine import StreamingSession

    model, processor = load(args)
    width, height = args.frame_size
    session = StreamingSession(
        model, processor, window=window, decision=ScriptedStates(args.answer_every),
        max_new_tokens=args.answer_tokens, max_pixels=width * height,
    )
    session.ask(QUESTION, 0)
    latencies, cpu, rss, cache = [], [], [], []
    for turn in range(args.seconds):
        picture = frame(turn, width, height)
        started = time.process_time()
        latencies.append(session.push_frame(picture, turn).latency_ms)
        cpu.append((time.process_time() - started) * 1000)
        rss.append(rss_bytes() / 2**20)
        cache.append(session.cache_length)
    if args.conversation is not None:
        args.conversation.write_text(json.dumps(session.context_messages()), encoding="utf-8")
    return {"latencies": latencies, "cpu": cpu, "rss": rss, "cache": cache, "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": _gpu_peak_mb(torch)}


def phase_reencode(args) -> dict:
    import torch

    from streamo.engine.reference import encode_conversation

    model, processor = load(args)
    width, height = args.frame_size
    messages = json.loads(args.conversation.read_text(encoding="utf-8"))
    result = {}
    for mark in args.marks:
        # The conversation up to the user turn of stream second ``mark`` (turn mark-1).
        history = messages[: 1 + 2 * (mark - 1) + 1]
        frames = [frame(turn, width, height) for turn in range(mark)]
        totals, forwards, cpu = [], [], []
        for _ in range(args.reencode_samples):
            started, cpu_started = time.perf_counter(), time.process_time()
            inputs = encode_conversation(processor, history, frames, generation_prompt=True).to(args.device)
            encoded = time.perf_counter()
            with torch.inference_mode():
                model.model.rope_deltas = None
                logits = model(**inputs, use_cache=False, logits_to_keep=1).logits[0, -1]
                logits.float().cpu()
            done = time.perf_counter()
            cpu.append((time.process_time() - cpu_started) * 1000)
            totals.append((done - started) * 1000)
            forwards.append((done - encoded) * 1000)
        result[str(mark)] = {"total": statistics.median(totals), "forward": statistics.median(forwards),
                             "cpu": statistics.median(cpu),
                             "tokens": int(inputs["input_ids"].shape[1])}
    return result


def _run_phase(args, phase: str, extra: list[str]) -> dict:
    command = [sys.executable, __file__, "--phase", phase, *_forwarded(args), *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"phase {phase} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _forwarded(args) -> list[str]:
    return ["--config", args.config, "--device", args.device, "--seconds", str(args.seconds),
            "--marks", ",".join(map(str, args.marks)), "--frame-size", f"{args.frame_size[0]}x{args.frame_size[1]}",
            "--answer-every", str(args.answer_every), "--answer-tokens", str(args.answer_tokens),
            "--reencode-samples", str(args.reencode_samples), "--workdir", str(args.workdir),
            *(["--threads", str(args.threads)] if args.threads else [])]


def orchestrate(args) -> dict:
    conversation = args.workdir / "conversation.json"
    windowed = _run_phase(args, "engine-window", ["--window", str(args.window)])
    whole = _run_phase(args, "engine", ["--conversation", str(conversation)])
    reencode = _run_phase(args, "reencode", ["--conversation", str(conversation)])

    marks = [str(mark) for mark in args.marks]
    # On a shared CPU, process CPU time measures the work without other users' noise; a GPU
    # works asynchronously, so there only wall time counts.
    engine_clock = "cpu" if args.clock == "cpu" else "latencies"

    def at_marks(series: list[float]) -> dict[str, float]:
        return {str(m): round(_median_at(series, m, args.samples), 3) for m in args.marks}

    ours, full = at_marks(windowed[engine_clock]), at_marks(whole[engine_clock])
    reencode_ms = {m: round(reencode[m]["cpu" if args.clock == "cpu" else "total"], 3) for m in marks}
    first, last = marks[0], marks[-1]
    # Memory once the window is full (after its first eviction) against the end of the stream.
    filled = min(len(windowed["rss"]) - 1, int(args.window) + 1)
    after_fill, end = max(windowed["rss"][filled:filled + 5]), max(windowed["rss"][-5:])
    steady = windowed["latencies"][filled:]
    result = {
        "benchmark": "stream_latency",
        "config": args.config,
        "device": args.device,
        "clock": args.clock,
        "frame_size": f"{args.frame_size[0]}x{args.frame_size[1]}",
        "seconds": args.seconds,
        "window_s": args.window,
        "ours_ms": ours,
        "reencode_ms": reencode_ms,
        "reencode_over_ours": {m: round(reencode_ms[m] / ours[m], 2) for m in marks},
        f"ours_{last}_over_{first}": round(ours[last] / ours[first], 3),
        "ours_full_context_ms": full,
        "reencode_over_ours_full_context": {m: round(reencode_ms[m] / full[m], 2) for m in marks},
        f"ours_full_context_{last}_over_{first}": round(full[last] / full[first], 3),
        "ours_wall_ms": at_marks(windowed["latencies"]),
        "ours_full_context_wall_ms": at_marks(whole["latencies"]),
        "reencode_wall_ms": {m: round(reencode[m]["total"], 3) for m in marks},
        "reencode_forward_wall_ms": {m: round(reencode[m]["forward"], 3) for m in marks},
        "reencode_tokens": {m: reencode[m]["tokens"] for m in marks},
        "ours_wall_max_ms": round(max(windowed["latencies"]), 3),
        "ours_frames_per_s": round(1000 * len(steady) / sum(steady), 2) if steady else None,
        "peak_rss_mb": round(windowed["peak_rss_mb"], 1),
        "rss_mb_after_window_fill": round(after_fill, 1),
        "rss_mb_end": round(end, 1),
        "rss_growth_after_fill_mb": round(end - after_fill, 1),
        "cache_tokens_max": max(windowed["cache"]),
        "full_context_peak_rss_mb": round(whole["peak_rss_mb"], 1),
        "full_context_cache_tokens_end": whole["cache"][-1],
        "targets_met": {
            f"ours_{last}_le_1.5x_ours_{first}": ours[last] <= 1.5 * ours[first],
            f"reencode_ge_20x_ours_at_{last}": reencode_ms[last] >= 20 * ours[last],
            f"reencode_ge_20x_ours_full_context_at_{last}": reencode_ms[last] >= 20 * full[last],
        },
    }
    if whole["peak_gpu_mb"] is not None:
        result["peak_gpu_mb"] = round(windowed["peak_gpu_mb"], 1)
        result["full_context_peak_gpu_mb"] = round(whole["peak_gpu_mb"], 1)
    return result


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["tiny", *FULL_CONFIGS], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=int, default=600, help="stream length (default: 600)")
    parser.add_argument("--marks", default="30,120,600", help="stream seconds to report (default: 30,120,600)")
    parser.add_argument("--frame-size", type=_size, help="WxH (default: 56x56 tiny, 448x224 = 128 tokens full-size)")
    parser.add_argument("--window", type=float, default=60.0, help="window of the memory run in seconds (default: 60)")
    parser.add_argument("--samples", type=int, default=5, help="silent seconds per mark for the engine's median (default: 5)")
    parser.add_argument("--reencode-samples", type=int, default=3, help="re-encode runs per mark (default: 3)")
    parser.add_argument("--clock", choices=["cpu", "wall"], help="latency measure (default: cpu on CPU, wall on GPU)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: 1 on CPU, steadier on shared machines; torch's choice on GPU)")
    parser.add_argument("--answer-every", type=int, default=10, help="answer every N seconds, 0: never (default: 10)")
    parser.add_argument("--answer-tokens", type=int, default=16, help="answer length in tokens (default: 16)")
    parser.add_argument("--phase", choices=["engine", "engine-window", "reencode"], help=argparse.SUPPRESS)
    parser.add_argument("--conversation", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.marks = sorted({int(mark) for mark in args.marks.split(",")})
    if not args.marks or args.marks[0] < 1 or args.marks[-1] > args.seconds:
        parser.error(f"--marks must lie in 1..{args.seconds}")
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    if args.clock is None:
        args.clock = "cpu" if args.device == "cpu" else "wall"
    if args.frame_size is None:
        args.frame_size = (56, 56) if args.config == "tiny" else (448, 224)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.phase is not None:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        if args.phase == "reencode":
            result = phase_reencode(args)
        else:
            result = phase_engine(args, args.window if args.phase == "engine-window" else None)
        print_json_line(result)
        return 0
    with tempfile.TemporaryDirectory(prefix="stream_latency.") as workdir:
        args.workdir = Path(workdir)
        print_json_line(orchestrate(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
