"""Frame extraction on Ray against local worker processes, at the same worker count, in one run.

The clips (default: 8 of 60 s, 640×360, 30 fps, H.264, GOP 250, up to 3 B-frames: the kind
``frame_extraction.py`` decodes) are generated into a temporary directory and listed in one
raw annotation file. ``streamo frames``' own code fills a fresh cache from it, alternately
with ``--workers N`` (local processes) and with ``--executor ray`` on a local Ray instance of
N CPUs, started once before the rounds (its start-up is reported apart: a cluster runs for
many files). The best round of each counts. Rates are videos per second of wall time.
Prints one JSON line. Target: Ray's overhead at most 10 % (``ray_vs_local`` >= 0.9).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from lib.clips import synthetic_clip
from lib.report import print_json_line


def extract(raw: Path, cache_dir: Path, workers: int, executor=None) -> float:
    """Seconds to fill a fresh cache from ``raw``."""
    from streamo.video.cache import FrameCache
    from streamo.video.extract import extract_file

    shutil.rmtree(cache_dir, ignore_errors=True)
    start = time.perf_counter()
    summary = extract_file(raw, FrameCache(cache_dir), workers=workers, progress=False, log=io.StringIO(),
                           executor=executor)
    seconds = time.perf_counter() - start
    if summary.failed or summary.extracted != summary.videos:
        raise RuntimeError(f"the run did not extract every clip: {summary.line()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8, help="clips (default: 8)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each clip (default: 60)")
    parser.add_argument("--workers", type=int, default=2, help="local processes and Ray CPUs (default: 2)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each (default: 3)")
    args = parser.parse_args()

    import ray

    from streamo.cluster import RayExecutor

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="streamo-ray-bench-") as work:
        work = Path(work)
        records = []
        for number in range(args.videos):
            clip = work / f"clip{number}.mp4"
            synthetic_clip(clip, args.seconds, width=640, height=360, gop=250, bframes=3)
            records.append({"video_path": str(clip), "duration": args.seconds})
        raw = work / "raw.json"
        raw.write_text(json.dumps(records))

        started = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, logging_level=logging.WARNING)
        startup = time.perf_counter() - started
        local, on_ray = [], []
        try:
            with RayExecutor() as executor:
                for _ in range(args.rounds):
                    local.append(extract(raw, work / "local", args.workers))
                    on_ray.append(extract(raw, work / "ray", args.workers, executor))
        finally:
            ray.shutdown()

    local_rate, ray_rate = args.videos / min(local), args.videos / min(on_ray)
    print_json_line({
        "clips": {"videos": args.videos, "seconds": args.seconds, "size": "640x360", "fps": 30, "gop": 250,
                  "codec": "h264"},
        "workers": args.workers,
        "unit": "videos per wall-clock second",
        "local_videos_per_s": round(local_rate, 3),
        "ray_videos_per_s": round(ray_rate, 3),
        "ray_vs_local": round(ray_rate / local_rate, 3),
        "local_rounds_s": [round(seconds, 2) for seconds in local],
        "ray_rounds_s": [round(seconds, 2) for seconds in on_ray],
        "ray_startup_s": round(startup, 2),
        "load_average_at_start": round(load, 2),
        "target_met": ray_rate >= 0.9 * local_rate,
    })


if __name__ == "__main__":
    main()
