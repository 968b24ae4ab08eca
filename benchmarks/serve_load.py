"""Load on ``streamo serve``: how many live 1-fps sessions one server holds on each backend
(``--backend transformers vllm``: both, one after the other, in the same run on the same machine
and model), and what the server adds to the engine's own time. Measured side by side in one run,
per backend:

* ``engine_only_ms``: the same frames through one ``StreamingSession`` in this process (mean
  decision time, no server);
* ``round_trip_ms``: one session over a real loopback socket, one frame at a time (send the
  JPEG, wait for its event): ``server_overhead_ratio`` = (round trip - engine) / engine;
* fairness under a flood: ``quiet_p95_ms`` is one session's 95th-percentile round trip (one
  frame at a time, as above) alone, ``quiet_p95_flooded_ms`` the same while ``--flood-sessions``
  clients in other processes send frames as fast as their sockets take them (without reading
  their events), measured in the same run; ``flood_frames_unread`` is how many of their frames
  the server dropped before decoding (over the frame rate limit);
* ``sustained_sessions``: the most sessions that, each sending one frame a second of its own
  video for ``--seconds`` (``--rate`` frames a second compresses time), all get every frame
  decided (nothing dropped) with a 95th-percentile decision latency (frame sent to event
  received) under ``--p95-limit-ms`` (default one second); trials go up from 1 session, doubling, then bisect;
* the trial at that count: ``frames_sent``, ``events_received``, ``frames_dropped`` and
  ``lost`` (neither decided nor reported dropped: must be 0), latency p50/p95/max;
* batched decisions (``--max-batch``, the transformers backend): the figures above are taken at
  the first ``--max-batch`` (default 1, one frame at a time); for each further one (default 4
  and 16) a server of its own gives ``sustained_sessions`` and its p95, ``load_p95_ms`` (the p95
  with as many sessions as the first sustained: the same offered load) and ``decisions_per_s``
  at saturation, in ``batches``. ``batch_speedup`` is decisions/s at the best batch over batch
  1's (``--saturation-sessions``, default 32: the issue asks for 8 or more), and
  ``batch_p95_ratio`` that batch's ``load_p95_ms`` over batch 1's;
* ``batched_forward_speedup``: whether batching sessions would pay here: ``--batch`` sessions'
  next turns (one frame's tokens each, on a KV cache of ``--batch-context`` tokens) read in one
  forward pass of batch ``--batch`` against as many forward passes of batch 1 (equal lengths, no
  padding: an upper bound on the gain); ``packed_forward_speedup``: the engine's own batched pass
  (``engine.batching.Batcher``) over ``--batch`` sessions' turns on caches of different lengths
  against one pass each, and ``padded_copy_ms``: what a padded batch would copy first (every
  session's keys and values into one left-padded tensor a layer), over that pass's time in
  ``padded_copy_over_packed_pass``;
* saturation: ``--saturation-sessions`` sessions each send ``--saturation-frames`` frames as
  fast as the server takes them (``max_queue`` in flight, nothing dropped):
  ``decisions_per_s`` is events over wall time; with the default 130 frames every session's
  120-s window has filled and evicted once, and ``rss_per_session_mb`` is the server's memory
  (its process and children: vLLM's engine core holds the KV cache) then, less before the
  first session, over the sessions;
* the cache: every event says how many of the tokens the decision attended to came from the
  cache (the transformers engine's KV cache, vLLM's prefix cache). ``prefix_hit_rate`` is
  cached over context tokens, summed over every decision but each session's first and the
  eviction seconds (when the window is laid out anew); ``prefix_hit_rate_min`` and
  ``decisions_at_95`` (the share of those decisions at 95 % or more) per decision;
  ``reused_of_read`` is cached over what the session had read by the second before (1.0: only
  the new turn is computed; below, the unfilled last KV block is recomputed);
* a soak of ``--soak-sessions`` sessions for ``--soak-seconds``: the server's resident memory
  (RSS) sampled every 5 s; ``rss_growth`` is the end against the first sample 30 s after the
  sessions' windows (120 s) are full, when every cache has reached its bound.

With two backends the line also holds ``vllm_over_transformers``: the ratios of sustained
sessions and of decisions per second at saturation, whichever way they go.

The server is the real ``streamo serve`` command in its own process; clients are asyncio
sessions of ``streamo.live.client`` in this one. Default model: the tiny random Qwen2.5-VL with
state tokens and 64-wide heads (hidden size 256: vLLM's CPU attention takes no narrower; built
locally, nothing downloaded) and 56x56 frames from the shipped example videos; ``--config 7b``
builds a random full-size Qwen2.5-VL-7B (for a GPU, with 128 visual tokens a frame). The
engine-only time and the batching bound are the transformers engine's. Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from lib.models import build_model
from lib.paths import EXAMPLE_VIDEOS, REPO
from lib.report import print_json_line
from lib.system import free_port

SERVER_WINDOW_S = 120
"""streamo serve's default window: each session's cache stops growing once it holds this much."""
VIDEOS = sorted(EXAMPLE_VIDEOS.glob("*.mp4"))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: a random model of --config with state tokens)")
    parser.add_argument("--config", choices=["tiny", "3b", "7b"], default="tiny",
                        help="random model built locally when --model is not given (default: tiny)")
    parser.add_argument("--backend", nargs="+", choices=["transformers", "vllm"], default=["transformers"],
                        help="backends to measure, one after the other in this run (default: transformers)")
    parser.add_argument("--kv-cache-gib", type=float, default=4.0,
                        help="vLLM's KV cache on a CPU (kv_cache_memory_bytes; default: 4)")
    parser.add_argument("--max-model-len", type=int, default=8192,
                        help="vLLM's longest context in tokens (default: 8192, over a 120-s window of small frames)")
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
    parser.add_argument("--saturation-sessions", type=int, default=32,
                        help="sessions sending as fast as they may (default: 32)")
    parser.add_argument("--saturation-frames", type=int, default=130,
                        help="frames each of them sends (default: 130, past a full 120-s window)")
    parser.add_argument("--flood-sessions", type=int, default=2,
                        help="flooding clients beside the quiet session; 0 skips it (default: 2)")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 4, 16], metavar="N",
                        help="serve --max-batch values, one server each, the first with every figure (default: 1 4 16)")
    parser.add_argument("--p95-limit-ms", type=float, default=1000.0,
                        help="p95 decision latency a sustained trial stays under (default: 1000)")
    parser.add_argument("--batch", type=int, default=8, help="sessions batched in batched_forward_speedup (default: 8)")
    parser.add_argument("--batch-context", type=int, default=600,
                        help="cached tokens per session in that comparison (default: 600)")
    parser.add_argument("--frames", type=Path,
                        help="send these JPEGs instead of decoding the example videos (no PyAV needed): one folder per "
                             "video, frames in name order, already at the pixel budget (benchmarks/gpu_kit.py makes them)")
    return parser.parse_args(argv)


def default_max_pixels(config: str) -> int:
    """4 visual tokens a frame for the tiny model, 128 for a full-size one."""
    return 3136 if config == "tiny" else 100352


def _model(args) -> Path:
    if args.model is not None:
        return args.model
    name = "tiny-qwen2.5-vl-state-256" if args.config == "tiny" else f"qwen2.5-vl-{args.config}-state"
    return build_model(REPO / ".cache" / name, args.config, args.device, with_state_tokens=True, hidden_size=256)


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


def _read_frames(folder: Path) -> list[list[bytes]]:
    return [[picture.read_bytes() for picture in sorted(video.glob("*.jpg"))] for video in sorted(folder.iterdir()) if video.is_dir()]


def _engine_only_ms(model_dir: Path, args, videos: list[list[bytes]]) -> float:
    from PIL import Image

    from streamo.engine.model import EngineSettings, StreamModel

    model = StreamModel(model_dir, EngineSettings(window=120.0, max_pixels=args.max_pixels), args.device)
    session = model.session()
    pictures = [picture for video in videos for picture in video]
    times = []
    for turn in range(args.engine_frames + 2):
        image = Image.open(io.BytesIO(pictures[turn % len(pictures)])).convert("RGB")
        times.append(session.push_frame(image, float(turn)).latency_ms)
    return statistics.mean(times[2:])  # the first frames warm up kernels


def _batched_forward_speedup(model, args, new_tokens: int) -> float:
    import torch
    from transformers import DynamicCache

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


def _packed_forward(model, args, new_tokens: int) -> dict:
    """The engine's batched pass (``engine.batching.Batcher``) against one pass per session, on
    ``--batch`` sessions whose caches hold different lengths (``--batch-context`` plus 7 tokens
    a session), and what a padded batch would copy first: every cache into one padded tensor."""
    import torch

    from streamo.engine.batching import Batcher
    from streamo.engine.cache import stream_cache

    batcher = Batcher(model, max(2, args.batch))
    config = model.config.text_config
    generator = torch.Generator().manual_seed(0)
    lengths = [args.batch_context + 7 * index for index in range(args.batch)]
    caches = []
    with torch.inference_mode():
        for length in lengths:
            cache = stream_cache(model.config)
            context = torch.randn(1, length, config.hidden_size, generator=generator).to(model.device, model.dtype)
            batcher.language(inputs_embeds=context, past_key_values=cache, use_cache=True)
            caches.append(cache)
    steps = [torch.randint(0, config.vocab_size, (new_tokens,), generator=generator).tolist() for _ in lengths]
    positions = [torch.arange(length, length + new_tokens).expand(3, -1) for length in lengths]

    def rewind() -> None:
        for cache, length in zip(caches, lengths):
            cache.crop(length - cache.get_seq_length())

    chunks = [(cache, ids, [], place) for cache, ids, place in zip(caches, steps, positions)]

    def one_by_one() -> None:
        for chunk in chunks:
            batcher.forward_together([chunk])

    def packed() -> None:
        batcher.forward_together(chunks)

    def padded_copy() -> None:  # left-padded keys and values of every layer, as one batch tensor each
        for layer in range(config.num_hidden_layers):
            for part in ("keys", "values"):
                tensors = [getattr(cache.layers[layer], part) for cache in caches]
                padded = tensors[0].new_zeros((len(tensors), tensors[0].shape[1], max(lengths), tensors[0].shape[-1]))
                for row, tensor in enumerate(tensors):
                    padded[row, :, -tensor.shape[-2]:] = tensor[0]

    def best(run, repeats: int = 5) -> float:
        times = []
        with torch.inference_mode():
            for _ in range(repeats + 1):
                started = time.perf_counter()
                run()
                if model.device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - started)
                rewind()
        return min(times[1:])

    alone, together, copy = best(one_by_one), best(packed), best(padded_copy)
    return {"packed_forward_speedup": round(alone / together, 3), "packed_pass_ms": round(together * 1000, 2),
            "padded_copy_ms": round(copy * 1000, 2), "padded_copy_over_packed_pass": round(copy / together, 3)}


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its children (vLLM's engine core, its workers)."""
    import psutil

    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def _start_server(model_dir: Path, args, port: int, max_sessions: int, backend: str, max_batch: int = 1) -> subprocess.Popen:
    command = [sys.executable, "-m", "streamo.cli", "serve", "--model", str(model_dir), "--port", str(port),
               "--max-pixels", str(args.max_pixels), "--max-sessions", str(max_sessions), "--idle-timeout", "120",
               "--backend", backend]
    if backend == "transformers":
        command += ["--device", args.device, "--max-batch", str(max_batch)]
    else:
        command += ["--max-model-len", str(args.max_model_len)]
        if args.device == "cpu":
            command += ["--vllm-arg", f"kv_cache_memory_bytes={int(args.kv_cache_gib * 2**30)}"]
    # Its own process group, so that stopping it also stops vLLM's engine processes.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
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
    caches: list[tuple[int, int]] = []
    stats["caches"].append(caches)

    async def read():
        while (message := await client.receive()) is not None:
            if message.type == "event":
                stats["events"] += 1
                stats["dropped"] += message.dropped
                stats["latencies"].append((loop.time() - sent_at.pop(message.turn)) * 1000)
                caches.append((message.context_tokens, message.cached_tokens))
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
    stats = {"sent": 0, "events": 0, "dropped": 0, "dropped_total": 0, "latencies": [], "caches": []}
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
    p95 = _p95(latencies) if latencies else math.inf
    return {
        "sessions": sessions, "frames_sent": stats["sent"], "events_received": stats["events"],
        "frames_dropped": stats["dropped"], "lost": stats["sent"] - stats["events"] - stats["dropped"],
        "latency_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "latency_mean_ms": round(statistics.mean(latencies), 1) if latencies else None,
        "latency_p90_ms": round(_percentile(latencies, 0.90), 1) if latencies else None,
        "latency_p95_ms": round(p95, 1), "latency_max_ms": round(latencies[-1], 1) if latencies else None,
        "caches": stats["caches"],
    }


def _held(trial: dict, p95_limit_ms: float) -> bool:
    return trial["frames_dropped"] == 0 and trial["lost"] == 0 and trial["latency_p95_ms"] < p95_limit_ms


def _sustained(url: str, videos: list[list[bytes]], args) -> tuple[int, dict, list[dict]]:
    """The most sessions held, the trial at that count and every trial: doubling from 1 while
    held, then bisecting between the last held and the first failed count."""
    trials, best, low, high = [], None, 0, None
    sessions = 1
    while True:
        trial = _trial(url, videos, sessions, args.seconds, args.rate)
        trials.append(trial)
        if _held(trial, args.p95_limit_ms):
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
    return low, best or trials[-1], trials


def _round_trips_ms(url: str, pictures: list[bytes], frames: int) -> list[float]:
    """One session, one frame at a time: the time from sending each frame to its event (the first two left out)."""
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
        return times[2:]

    return asyncio.run(run())


def _p95(values: list[float]) -> float:
    """The p95 every Streamo report prints (``streamo.metrics.percentile``)."""
    return _percentile(values, 0.95)


def _percentile(values: list[float], share: float) -> float:
    from streamo.metrics import percentile

    return percentile(values, share)


def _metric(url: str, name: str) -> float:
    metrics = urllib.request.urlopen(url + "/metrics").read().decode()
    return next((float(line.split()[-1]) for line in metrics.splitlines() if line.split(" ")[0] == name), 0.0)


def _flood_client(url: str, picture: bytes) -> None:
    """Frames as fast as the socket takes them, events never read: until the process is stopped."""
    from websockets.sync.client import connect

    socket_ = connect(url, max_queue=None)
    turn = 0
    while True:
        socket_.send(json.dumps({"type": "frame", "t": turn}))
        socket_.send(picture)
        turn += 1


def _flood(url: str, pictures: list[bytes], frames: int, flooders: int) -> dict:
    """The quiet session's p95 alone, then beside ``flooders`` flooding clients in processes of their own."""
    import multiprocessing

    alone = _round_trips_ms(url, pictures, frames)
    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=_flood_client, args=(url.replace("http", "ws") + "/v1/stream", pictures[0]),
                               daemon=True) for _ in range(flooders)]
    for process in processes:
        process.start()
    try:
        time.sleep(3.0)  # the floods have filled their queues
        flooded = _round_trips_ms(url, pictures, frames)
    finally:
        for process in processes:
            process.terminate()
            process.join()
    deadline = time.monotonic() + 120
    while _metric(url, "streamo_sessions_open") and time.monotonic() < deadline:  # the later trials start clean
        time.sleep(0.2)
    unread = _metric(url, "streamo_frames_unread_total")
    return {"flood_sessions": flooders, "quiet_p95_ms": round(_p95(alone), 1),
            "quiet_p95_flooded_ms": round(_p95(flooded), 1),
            "flooded_over_quiet_p95": round(_p95(flooded) / _p95(alone), 2), "flood_frames_unread": int(unread)}


def _saturation(url: str, server_pid: int, videos: list[list[bytes]], sessions: int, frames: int) -> dict:
    """``sessions`` sessions send ``frames`` frames each as fast as the server takes them
    (``max_queue`` in flight); the server's memory is read once every frame is decided, while
    all the sessions are still open with their windows full."""
    from streamo.live.client import LiveClient

    caches: list[list[tuple[int, int]]] = []
    finished, release = [], asyncio.Event()

    async def one(index: int) -> int:
        client = await LiveClient.connect(url)
        pictures, limit = videos[index % len(videos)], client.ready.limits.max_queue
        own: list[tuple[int, int]] = []
        caches.append(own)
        decided, sent, room = 0, 0, asyncio.Event()

        async def read():
            nonlocal decided
            while decided < frames and (message := await client.receive()) is not None:
                if message.type == "event":
                    decided += 1 + message.dropped
                    own.append((message.context_tokens, message.cached_tokens))
                    room.set()

        reader = asyncio.create_task(read())
        while sent < frames:
            while sent - decided >= limit:
                room.clear()
                await room.wait()
            await client.send_frame(pictures[sent % len(pictures)], float(sent))
            sent += 1
        await reader
        finished.append(index)
        await release.wait()
        await client.close()
        await client.disconnect()
        return len(own)

    async def run() -> tuple[float, int, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        tasks = [asyncio.create_task(one(index)) for index in range(sessions)]
        while len(finished) < sessions:
            await asyncio.sleep(0.05)
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()
        elapsed = loop.time() - started
        rss = _tree_rss_mb(server_pid)
        release.set()
        return elapsed, sum(await asyncio.gather(*tasks)), rss

    elapsed, decided, rss = asyncio.run(run())
    return {"seconds": elapsed, "decided": decided, "rss_mb": rss, "caches": caches}


def _cache_figures(caches: list[list[tuple[int, int]]]) -> dict:
    """How much of each decision's context came from the cache; a session's first second and the
    seconds whose context was laid out anew after an eviction are left out (nothing to reuse)."""
    context = cached = at_95 = counted = 0
    rates, reused = [], []
    for session in caches:
        for (before, _), (tokens, hits) in zip(session, session[1:]):
            if tokens <= before:  # the window was evicted and re-laid out this second
                continue
            counted += 1
            context, cached = context + tokens, cached + hits
            rates.append(hits / tokens)
            at_95 += hits >= 0.95 * tokens
            reused.append(hits / before)
    if not counted:
        return {}
    return {
        "prefix_hit_rate": round(cached / context, 4), "prefix_hit_rate_min": round(min(rates), 4),
        "decisions_at_95": round(at_95 / counted, 4), "reused_of_read": round(statistics.mean(reused), 4),
        "reused_of_read_min": round(min(reused), 4), "computed_tokens_per_decision": round((context - cached) / counted, 1),
        "context_tokens_per_decision": round(context / counted, 1), "decisions_counted": counted,
    }


def _server_sessions(args) -> int:
    return max(args.max_sessions, args.soak_sessions, args.saturation_sessions)


def _measure(backend: str, model_dir: Path, args, videos: list[list[bytes]]) -> dict:
    """Every figure of one backend, with its own ``streamo serve`` (at the first ``--max-batch``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    server = _start_server(model_dir, args, port, _server_sessions(args), backend, args.max_batch[0])
    figures: dict = {"start_s": round(time.monotonic() - started, 1)}
    try:
        rss_idle = _tree_rss_mb(server.pid)
        pictures = [p for video in videos for p in video]
        figures["round_trip_ms"] = round(statistics.mean(_round_trips_ms(url, pictures, args.engine_frames)), 2)
        if args.flood_sessions:
            figures.update(_flood(url, pictures, args.engine_frames, args.flood_sessions))
        low, held, trials = _sustained(url, videos, args)
        figures.update({"sustained_sessions": low, **{k: v for k, v in held.items() if k != "caches"}})
        figures["trials"] = [(t["sessions"], _held(t, args.p95_limit_ms), t["latency_p95_ms"], t["frames_dropped"])
                             for t in trials]
        saturation = _saturation(url, server.pid, videos, args.saturation_sessions, args.saturation_frames)
        figures.update({
            "saturation_sessions": args.saturation_sessions, "saturation_frames": args.saturation_frames,
            "decisions_per_s": round(saturation["decided"] / saturation["seconds"], 1),
            "rss_idle_mb": round(rss_idle, 1), "rss_saturated_mb": round(saturation["rss_mb"], 1),
            "rss_per_session_mb": round((saturation["rss_mb"] - rss_idle) / args.saturation_sessions, 2),
            **_cache_figures([c for t in trials for c in t["caches"]] + saturation["caches"]),
        })
        if args.soak_seconds > 0:
            figures.update(_soak(url, server.pid, videos, args))
    finally:
        _stop(server)
    return figures


def _batches(model_dir: Path, args, videos: list[list[bytes]], first: dict) -> dict:
    """Per ``--max-batch`` value: sustained sessions and their p95, the p95 at the first value's
    sustained load, decisions/s at saturation; and the two ratios against batch 1."""
    load = max(1, first["sustained_sessions"])
    rows = {args.max_batch[0]: {**_latencies(first), "load_p95_ms": first["latency_p95_ms"],
                                "decisions_per_s": first["decisions_per_s"], "lost": first["lost"]}}
    for batch in args.max_batch[1:]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = _start_server(model_dir, args, port, _server_sessions(args), "transformers", batch)
        try:
            low, held, _ = _sustained(url, videos, args)
            at_load = held if held["sessions"] == load else _trial(url, videos, load, args.seconds, args.rate)
            saturation = _saturation(url, server.pid, videos, args.saturation_sessions, args.saturation_frames)
        finally:
            _stop(server)
        rows[batch] = {**_latencies({**held, "sustained_sessions": low}), "load_p95_ms": at_load["latency_p95_ms"],
                       "decisions_per_s": round(saturation["decided"] / saturation["seconds"], 1),
                       "lost": held["lost"] + at_load["lost"]}
    figures = {"batches": {str(batch): row for batch, row in rows.items()}, "batch_load_sessions": load}
    others = [batch for batch in rows if batch != 1]
    if 1 in rows and others:
        best = max(others, key=lambda batch: rows[batch]["decisions_per_s"])
        figures.update({"best_batch": best,
                        "batch_speedup": round(rows[best]["decisions_per_s"] / rows[1]["decisions_per_s"], 3),
                        "batch_p95_ratio": round(rows[best]["load_p95_ms"] / rows[1]["load_p95_ms"], 3)})
    return figures


def _latencies(held: dict) -> dict:
    """Sessions sustained and their decision latency (the columns of NVIDIA VSS's stream table)."""
    return {"sustained_sessions": held["sustained_sessions"], "mean_ms": held["latency_mean_ms"],
            "p90_ms": held["latency_p90_ms"], "p95_ms": held["latency_p95_ms"]}


def _soak(url: str, pid: int, videos: list[list[bytes]], args) -> dict:
    _trial(url, videos, args.soak_sessions, 5, args.rate)  # warm-up: allocator pools, kernels
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not done.wait(5.0 if samples else 0.0):
            samples.append((time.monotonic() - started, _tree_rss_mb(pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    soak_trial = _trial(url, videos, args.soak_sessions, args.soak_seconds, args.rate)
    done.set()
    sampler.join()
    samples.append((args.soak_seconds, _tree_rss_mb(pid)))
    # Each session's KV cache grows until its window (120 s) is full; growth counts from then.
    full = next((rss for at, rss in samples if at >= SERVER_WINDOW_S + 30), samples[-1][1])
    return {"soak_sessions": args.soak_sessions, "soak_seconds": args.soak_seconds,
            "soak_lost": soak_trial["lost"], "soak_dropped": soak_trial["frames_dropped"],
            "rss_start_mb": round(samples[0][1], 1), "rss_window_full_mb": round(full, 1),
            "rss_end_mb": round(samples[-1][1], 1), "rss_max_mb": round(max(r for _, r in samples), 1),
            "rss_growth": round(samples[-1][1] / full - 1, 4)}


def _stop(server: subprocess.Popen) -> None:
    import signal

    server.terminate()  # uvicorn shuts down and streamo serve closes its engine
    try:
        server.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(server.pid, signal.SIGKILL)  # whatever of vLLM's processes is left
    except ProcessLookupError:
        pass
    server.wait(timeout=60)


def main(argv=None) -> None:
    args = parse_args(argv)
    args.device = args.device or ("cpu" if args.config == "tiny" else "cuda")
    args.max_pixels = args.max_pixels or default_max_pixels(args.config)
    model_dir = _model(args)
    videos = _read_frames(args.frames) if args.frames else _frames(args.max_pixels)
    report: dict = {"model": str(model_dir.name), "device": args.device, "max_pixels": args.max_pixels, "rate": args.rate,
                    "seconds_per_trial": args.seconds, "cpus": os.cpu_count(), "backends": {}}
    for backend in args.backend:
        figures = {}
        if backend == "transformers":
            from PIL import Image

            from streamo.engine.loading import load_stream_model

            engine_ms = _engine_only_ms(model_dir, args, videos)
            width, height = Image.open(io.BytesIO(videos[0][0])).size
            turn_tokens = width * height // (28 * 28) + 12  # visual tokens, time tag and chat markers
            model, _ = load_stream_model(model_dir, args.device)
            figures = {"engine_only_ms": round(engine_ms, 2),
                       "engine_capacity_sessions": round(1000 / engine_ms * (1 / args.rate), 2),
                       "batched_forward_speedup": round(_batched_forward_speedup(model, args, turn_tokens), 3),
                       **_packed_forward(model, args, turn_tokens),
                       "batch": args.batch, "batch_context": args.batch_context}
            del model  # the servers below hold their own
        figures.update(_measure(backend, model_dir, args, videos))
        if backend == "transformers":
            figures.update(_batches(model_dir, args, videos, figures))
        if "engine_only_ms" in figures:
            figures["server_overhead_ratio"] = round((figures["round_trip_ms"] - engine_ms) / engine_ms, 4)
            figures["sustained_over_capacity"] = round(figures["sustained_sessions"] / figures["engine_capacity_sessions"], 3)
        report["backends"][backend] = figures
    if set(args.backend) == {"transformers", "vllm"}:
        ours, theirs = report["backends"]["vllm"], report["backends"]["transformers"]
        report["vllm_over_transformers"] = {
            key: round(ours[key] / theirs[key], 3) if theirs[key] else None
            for key in ("sustained_sessions", "decisions_per_s")
        }
    print_json_line(report)


if __name__ == "__main__":
    main()
