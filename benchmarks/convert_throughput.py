"""Conversion throughput on a synthetic Streamo-Instruct-sized raw file (465,000 samples).

Durations: half under 30 s, a tail up to 10 minutes; 1-5 responses per sample, a mix of
interval and instant ones. Prints one JSON line: samples, seconds, samples_per_s,
cpu_seconds (main process and workers, sampled with psutil) and idle_machine_estimate_s
(cpu_seconds over the cores: the wall time to expect when nothing else runs),
load_average_at_start, peak_rss_mb (main process), peak_rss_all_processes_mb, output_mb.
Target: the whole file in under 60 s on 2 cores with bounded memory.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import tempfile
import time
from pathlib import Path

import orjson
import psutil

from lib.report import print_json_line
from lib.system import TreeMonitor, peak_rss_mb
from streamo.batch import process_file
from streamo.convert import ConvertOptions


def synthetic_sample(rng: random.Random, index: int) -> dict:
    duration = rng.uniform(5, 30) if rng.random() < 0.5 else min(30 + rng.expovariate(1 / 90), 600)
    duration = round(duration, 2)
    responses = []
    last_answer = int(duration) - 1  # the last whole turn's time; answers after it fall off the video
    for number in range(rng.randint(1, 5)):
        if rng.random() < 0.6:
            start = rng.uniform(0, last_answer - 1)
            end = min(start + rng.uniform(0, 8), last_answer - 0.5)
            responses.append({"content": f"Event {number} of clip {index} ends.", "st_time": round(start, 1),
                              "end_time": round(max(end, start), 1), "time": ""})
        else:
            responses.append({"content": f"Answer {number} of clip {index}.", "st_time": "", "end_time": "",
                              "time": str(round(rng.uniform(0, last_answer), 1))})
    return {
        "video_name": f"clip_{index}.mp4",
        "video_path": f"videos/clip_{index}.mp4",
        "task_type": rng.choice(["QA", "Grounding", "Narration"]),
        "source": "synthetic",
        "question": [{"content": f"What happens in clip {index}?", "time": str(rng.randint(0, 3))}],
        "response": responses,
        "duration": duration,
    }


def write_raw(path: Path, samples: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as handle:
        buffer = io.BytesIO()
        for index in range(samples):
            buffer.write(orjson.dumps(synthetic_sample(rng, index)) + b"\n")
            if buffer.tell() > 1 << 22:
                handle.write(buffer.getvalue())
                buffer = io.BytesIO()
        handle.write(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=465_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.jsonl", Path(tmp) / "stream.jsonl"
        write_raw(raw, args.samples, args.seed)
        load_before = os.getloadavg()[0]
        own_before = psutil.Process().cpu_times()
        monitor = TreeMonitor()
        monitor.start()
        start = time.perf_counter()
        with open(os.devnull, "w") as quiet:
            summary = process_file(raw, ConvertOptions(), out, Path(tmp) / "rejects.jsonl",
                                   workers=args.workers, progress=False, log=quiet)
        seconds = time.perf_counter() - start
        monitor.done.set()
        monitor.join()
        own = psutil.Process().cpu_times()
        monitor.cpu[os.getpid()] = own.user + own.system - own_before.user - own_before.system
        cpu = sum(monitor.cpu.values())
        print_json_line({
            "samples": summary.total,
            "converted": summary.converted,
            "rejected": summary.rejected,
            "workers": args.workers,
            "seconds": round(seconds, 2),
            "samples_per_s": round(summary.total / seconds, 1),
            "cpu_seconds": round(cpu, 2),
            "idle_machine_estimate_s": round(cpu / (os.cpu_count() or 1), 2),
            "load_average_at_start": round(load_before, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "peak_rss_all_processes_mb": round(monitor.peak_rss / 2**20, 1),
            "raw_mb": round(raw.stat().st_size / 2**20, 1),
            "output_mb": round(out.stat().st_size / 2**20, 1),
            "target_seconds": 60,
        })


if __name__ == "__main__":
    main()
