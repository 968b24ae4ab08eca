"""Load on ``streamo serve``: how many live 1-fps sessions one server holds, and what it adds
to the engine's own time. Measured side by side in one run:

* ``engine_only_ms``: the same frames through one ``StreamingSession`` in this process (mean
  decision time, no server);
* ``round_trip_ms``: one session over a real loopback socket, one frame at a time (send the
  JPEG, wait for its event): ``server_overhead_ratio`` = (round trip - engine) / engine;
* ``sustained_sessions``: the most sessions that, each sending one frame a second of its own
  video for ``--seconds`` (``--rate`` frames a second compresses time), all get every frame
  decided (nothing dropped) with a 95th-percentile decision latency (frame sent to event
  received) under one second; trials go up from 1 session, doubling, then bisect;
* the trial at that count: ``frames_sent``, ``events_received``, ``frames_dropped`` and
  ``lost`` (neither decided nor reported dropped: must be 0), latency p50/p95/max;
* ``batched_forward_speedup``: whether batching sessions would pay here: ``--batch`` sessions'
  next turns (one frame's tokens each, on a KV cache of ``--batch-context`` tokens) read in one
  forward pass of batch ``--batch`` against as many forward passes of batch 1 (equal lengths, no
  padding: an upper bound on the gain);
* a soak of ``--soak-sessions`` sessions for ``--soak-seconds``: the server's resident memory
  (RSS) sampled every 5 s; ``rss_growth`` is the end against the first sample 30 s after the
  sessions' windows (120 s) are full, when every cache has reached its bound.

The server is the real ``streamo serve`` command in its own process; clients are asyncio
sessions of ``streamo.live.client`` in this one. Default model: the tiny random
Qwen2.5-VL with state tokens (built locally, nothing downloaded) and 56x56 frames from the
shipped example videos; ``--config 7b`` builds a random full-size Qwen2.5-VL-7B (for a GPU,
with 128 visual tokens a frame). Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER_WINDOW_S = 120
"""streamo serve's default window: each session's cache stops growing once it holds this much."""
VIDEOS = sorted((REPO / "dataset" / "example" / "videos").glob("*.mp4"))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: a random model of --config with state tokens)")
    parser.add_argument("--config", choices=["tiny", "3b", "7b"], default="tiny",
                        help="random model built locally when --model is not given (default: tiny)")
    parser.add_argument("--device", help="torch device (default: cpu for tiny, cuda otherwise)")
    parser.add_argument("--max-pixels", type=int,
                        help="pixel budget per frame (default: 3136 = 4 visual tokens for tiny, 100352 = 128 otherwise)")
    parser.add_argument("--seconds", type=float, default=20.0, help="stream seconds per trial (default: 20)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="frames a second each session sends; above 1 compresses time (default: 1)")
    parser.add_argument("--max-sessions", type=int, default=64, help="largest trial (default: 64)")
    parser.add_argument("--soak-sessions", type=int, default=8, help="sessions in the soak (default: 8)")
    parser.add_argument("--soak-seconds", type=float, default=600.0, help="soak length; 0 skips it (default: 600)")
    parser.add_argument("--engine-frames", type=int, default=40, help="frames timed for engine_only_ms (default: 40)")
    parser.add_argument("--batch", type=int, default=8, help="sessions batched in batched_forward_speedup (default: 8)")
    parser.add_argument("--batch-context", type=int, default=600,
                        help="cached tokens per session in that comparison (default: 600)")
    return parser.parse_args(argv)


def _model(args) -> Path:
    if args.model is not None:
        return args.model
    from streamo.tiny_model import TinyModelSpec, build_full_size_model, build_tiny_model

    if args.config == "tiny":
        return build_tiny_model(REPO / ".cache" / "tiny-qwen2.5-vl-state", TinyModelSpec(with_state_tokens=True))
    return build_full_size_model(REPO / ".cache" / f"qwen2.5-vl-{args.config}-state", args.config, args.device,
                                 with_state_tokens=True)


def _frames(max_pixels: int) -> list[list[bytes]]:
    """Each example video's frames as JPEG bytes (what a camera or the page sends)."""
    from streamo.video import MIN_PIXELS, iter_frames

    videos = []
    for video in VIDEOS:
        pictures = []
        for sampled in iter_frames(video, 1.0, max_pixels, MIN_PIXELS):
            buffer = io.BytesIO()
            sampled.image.save(buffer, format="JPEG", quality=90)
            pictures.append(buffer.getvalue())
        videos.append(pictures)
    return videos


def _engine_only_ms(model_dir: Path, args, videos: list[list[bytes]]) -> float:
    from PIL import Image

    from streamo.model_eval import EngineSettings, StreamModel

    model = StreamModel(model_dir, EngineSettings(window=120.0, max_pixels=args.max_pixels), args.device)
    session = model.session()
    pictures = [picture for video in videos for picture in video]
    times = []
    for turn in range(args.engine_frames + 2):
        image = Image.open(io.BytesIO(pictures[turn % len(pictures)])).convert("RGB")
        times.append(session.push_frame(image, float(turn)).latency_ms)
    return statistics.mean(times[2:])  # the first frames warm up kernels


def _batched_forward_speedup(model_dir: Path, args, new_tokens: int) -> float:
    import torch
    from transformers import DynamicCache

    from streamo.engine.loading import load_stream_model

    model, _ = load_stream_model(model_dir, args.device)
    language = model.model.language_model
    hidden = model.config.text_config.hidden_size
    generator = torch.Generator().manual_seed(0)

    def cached(batch: int) -> DynamicCache:
        cache = DynamicCache()
        context = torch.randn(batch, args.batch_context, hidden, generator=generator).to(model.device, model.dtype)
        language(inputs_embeds=context, past_key_values=cache, use_cache=True)
        return cache

    def timed(batch: int, repeats: int = 5) -> float:
        step = torch.randn(batch, new_tokens, hidden, generator=generator).to(model.device, model.dtype)
        best = float("inf")
        for _ in range(repeats):
            cache = cached(batch)
            started = time.perf_counter()
            language(inputs_embeds=step, past_key_values=cache, use_cache=True)
            best = min(best, time.perf_counter() - started)
        return best

    with torch.inference_mode():
        timed(1)
        one = timed(1)
        together = timed(args.batch)
    return one * args.batch / together


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _start_server(model_dir: Path, args, port: int, max_sessions: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "streamo.cli", "serve", "--model", str(model_dir), "--port", str(port),
         "--max-pixels", str(args.max_pixels), "--device", args.device, "--max-sessions", str(max_sessions),
         "--idle-timeout", "120"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("streamo serve did not start")
            time.sleep(0.5)


async def _session(url: str, pictures: list[bytes], count: int, rate: float, start_at: float, stats: dict) -> None:
    from streamo.live.client import LiveClient

    client = await LiveClient.connect(url)
    sent_at: dict[int, float] = {}
    loop = asyncio.get_running_loop()

    async def read():
        while (message := await client.receive()) is not None:
            if message.type == "event":
                stats["events"] += 1
                stats["dropped"] += message.dropped
                stats["latencies"].append((loop.time() - sent_at.pop(message.turn)) * 1000)
            elif message.type == "closed":
                stats["dropped_total"] += message.dropped
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    began = loop.time()
    for turn in range(count):
        await asyncio.sleep(max(0.0, began + turn / rate - loop.time()))
        sent_at[turn] = loop.time()
        await client.send_frame(pictures[turn % len(pictures)], float(turn))
        stats["sent"] += 1
    await client.close()
    await reader
    await client.disconnect()


def _trial(url: str, videos: list[list[bytes]], sessions: int, seconds: float, rate: float) -> dict:
    stats = {"sent": 0, "events": 0, "dropped": 0, "dropped_total": 0, "latencies": []}
    count = max(1, int(seconds * rate))

    async def run():
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.5
        # Sessions start spread over one frame interval, as independent cameras would.
        await asyncio.gather(*(
            _session(url, videos[index % len(videos)], count, rate, start + index / (rate * sessions), stats)
            for index in range(sessions)
        ))

    asyncio.run(run())
    latencies = sorted(stats["latencies"])
    p95 = latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)] if latencies else math.inf
    return {
        "sessions": sessions, "frames_sent": stats["sent"], "events_received": stats["events"],
        "frames_dropped": stats["dropped"], "lost": stats["sent"] - stats["events"] - stats["dropped"],
        "latency_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "latency_p95_ms": round(p95, 1), "latency_max_ms": round(latencies[-1], 1) if latencies else None,
    }


def _held(trial: dict) -> bool:
    return trial["frames_dropped"] == 0 and trial["lost"] == 0 and trial["latency_p95_ms"] < 1000


def _round_trip_ms(url: str, pictures: list[bytes], frames: int) -> float:
    from streamo.live.client import LiveClient

    async def run():
        client = await LiveClient.connect(url)
        times = []
        for turn in range(frames + 2):
            started = time.perf_counter()
            await client.send_frame(pictures[turn % len(pictures)], float(turn))
            message = await client.receive()
            assert message.type == "event", message
            times.append((time.perf_counter() - started) * 1000)
        await client.disconnect()
        return statistics.mean(times[2:])

    return asyncio.run(run())


def main(argv=None) -> None:
    args = parse_args(argv)
    args.device = args.device or ("cpu" if args.config == "tiny" else "cuda")
    args.max_pixels = args.max_pixels or (3136 if args.config == "tiny" else 100352)
    model_dir = _model(args)
    videos = _frames(args.max_pixels)
    engine_ms = _engine_only_ms(model_dir, args, videos)
    from PIL import Image

    width, height = Image.open(io.BytesIO(videos[0][0])).size
    turn_tokens = width * height // (28 * 28) + 12  # visual tokens, time tag and chat markers
    batching = _batched_forward_speedup(model_dir, args, turn_tokens)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start_server(model_dir, args, port, max(args.max_sessions, args.soak_sessions))
    try:
        round_trip = _round_trip_ms(url, [p for video in videos for p in video], args.engine_frames)
        trials, best, low, high = [], None, 0, None
        sessions = 1
        while True:  # double while held, then bisect between the last held and the first failed count
            trial = _trial(url, videos, sessions, args.seconds, args.rate)
            trials.append(trial)
            if _held(trial):
                low, best = sessions, trial
            else:
                high = sessions
            if high is None:
                if sessions >= args.max_sessions:
                    break
                sessions = min(sessions * 2, args.max_sessions)
            elif high - low <= 1:
                break
            else:
                sessions = (low + high) // 2
        soak = {}
        if args.soak_seconds > 0:
            _trial(url, videos, args.soak_sessions, 5, args.rate)  # warm-up: allocator pools, kernels
            samples: list[tuple[float, float]] = []
            done = threading.Event()

            def sample() -> None:
                started = time.monotonic()
                while not done.wait(5.0 if samples else 0.0):
                    samples.append((time.monotonic() - started, _rss_mb(server.pid)))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            soak_trial = _trial(url, videos, args.soak_sessions, args.soak_seconds, args.rate)
            done.set()
            sampler.join()
            samples.append((args.soak_seconds, _rss_mb(server.pid)))
            # Each session's KV cache grows until its window (120 s) is full; growth counts from then.
            full = next((rss for at, rss in samples if at >= SERVER_WINDOW_S + 30), samples[-1][1])
            soak = {"soak_sessions": args.soak_sessions, "soak_seconds": args.soak_seconds,
                    "soak_lost": soak_trial["lost"], "soak_dropped": soak_trial["frames_dropped"],
                    "rss_start_mb": round(samples[0][1], 1), "rss_window_full_mb": round(full, 1),
                    "rss_end_mb": round(samples[-1][1], 1), "rss_max_mb": round(max(r for _, r in samples), 1),
                    "rss_growth": round(samples[-1][1] / full - 1, 4)}
    finally:
        server.terminate()
        server.wait(timeout=60)
    capacity = 1000 / engine_ms * (1 / args.rate)
    sustained = low
    print(json.dumps({
        "model": str(model_dir.name), "device": args.device, "max_pixels": args.max_pixels, "rate": args.rate,
        "seconds_per_trial": args.seconds, "cpus": os.cpu_count(),
        "engine_only_ms": round(engine_ms, 2), "round_trip_ms": round(round_trip, 2),
        "server_overhead_ratio": round((round_trip - engine_ms) / engine_ms, 4),
        "sustained_sessions": sustained, "engine_capacity_sessions": round(capacity, 2),
        "sustained_over_capacity": round(sustained / capacity, 3),
        "batched_forward_speedup": round(batching, 3), "batch": args.batch, "batch_context": args.batch_context,
        **(best or trials[-1]), "trials": [(t["sessions"], _held(t), t["latency_p95_ms"], t["frames_dropped"]) for t in trials],
        **soak,
    }))


if __name__ == "__main__":
    main()
