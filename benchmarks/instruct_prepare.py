"""`streamo instruct prepare` on a Streamo-Instruct-sized replica: probing, conversion, re-runs, memory.

The replica (built once, kept under --cache-dir): --videos video files under four sources
with their own roots, and --samples raw annotations over them in five task folders (JSON
lists and JSONL files of at most 10,000 records). The video files are --clips distinct
H.264 clips (64x48, 2 fps, 15 to 180 s, encoded here) copied under every name, each copy
its own file, so every probe really opens, decodes and seeks its own file, but the files
are tiny and warm in the page cache: real downloads (360p-1080p, on disk) probe slower.
3 % of the videos are missing, 0.5 % are empty and 0.5 % are random bytes; 1 % of the
samples answer after their video's end.

Runs, each `streamo instruct prepare` in its own process:
1. first run into a fresh output directory;
2. re-run with nothing changed;
3. re-run after 1 % of the videos were "downloaded" since (copied in; removed afterwards);
4. memory: the full tree and a small tree (one sample per video, the same videos), each into
   a fresh output directory holding the probe cache of run 1, so both scan and convert all
   their samples and probe nothing; the ratio of their peak memory is the growth with samples.

Prints one JSON line: probe videos/s, convert samples/s, wall time of each run, re-run
ratios, peak RSS (main process; all processes) of both memory runs and their ratio, and the
projected time for 136K videos and 465K samples on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson

from lib.clips import synthetic_clip
from lib.paths import REPO
from lib.report import print_json_line
from lib.system import TreeMonitor
from streamo.video.synthetic import frame_times

SOURCES = ("ActivityNet", "LLaVA_Video", "Youcook", "COIN")
ROOT_NAMES = ("activitynet", "LLaVA-Video", "YouCook2", "coin")  # as a user might spell them
TASKS = (("QA", ".json"), ("Grounding", ".jsonl"), ("Narration", ".jsonl"), ("Event_Caption", ".json"),
         ("Action_Caption", ".jsonl"))
FILE_RECORDS = 10_000
CLIP_FPS = 2
# Runs `streamo` and records its own peak resident memory. VmHWM, not getrusage: on Linux the
# ru_maxrss of an exec'd child starts at its parent's peak (this benchmark's).
WRAPPER = """
import json, re, sys
from streamo.cli import main
code = main(sys.argv[2:])
status = open("/proc/self/status").read()
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
open(sys.argv[1], "w").write(json.dumps({"code": code, "peak_kb": peak_kb}))
"""


def video_status(index: int) -> str:
    """missing 3 %, empty 0.5 %, garbage 0.5 %, the rest a clip."""
    slot = (index * 7919) % 1000
    return "missing" if slot < 30 else "empty" if slot < 35 else "garbage" if slot < 40 else "clip"


def video_path(index: int) -> tuple[int, str]:
    source = index % len(SOURCES)
    relative = f"{index // 1000:03d}/v{index:06d}.mp4"
    if SOURCES[source] == "LLaVA_Video":
        relative = "LLaVA_Video/" + relative  # paths that start with the source's own folder
    return source, relative


def write_tree(directory: Path, samples: int, videos: int, durations: list[float], seed: int) -> None:
    rng = random.Random(seed)
    buffers: dict[str, list[dict]] = {task: [] for task, _ in TASKS}
    counters = {task: 0 for task, _ in TASKS}

    def flush(task: str, suffix: str) -> None:
        path = directory / task / f"part-{counters[task]:03d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        records = buffers[task]
        path.write_bytes(orjson.dumps(records) if suffix == ".json" else b"".join(orjson.dumps(r) + b"\n" for r in records))
        counters[task] += 1
        buffers[task] = []

    for number in range(samples):
        index = number % videos
        source, relative = video_path(index)
        task, suffix = TASKS[number % len(TASKS)]
        duration = durations[index % len(durations)]
        late = rng.random() < 0.01
        responses = []
        for _ in range(rng.randint(1, 3)):
            start = duration + 5 if late else rng.uniform(1, duration - 4)
            responses.append({"content": f"Event {number}.", "st_time": round(start, 1),
                              "end_time": round(start + rng.uniform(0, 2), 1), "time": ""})
        buffers[task].append({
            "video_name": relative.rsplit("/", 1)[1], "video_path": relative, "task_type": task,
            "source": SOURCES[source], "question": [{"content": f"What happens in sample {number}?", "time": "1"}],
            "response": responses,
        })
        if len(buffers[task]) >= FILE_RECORDS:
            flush(task, suffix)
    for task, suffix in TASKS:
        if buffers[task]:
            flush(task, suffix)


def build_replica(directory: Path, videos: int, samples: int, clips: int, seed: int) -> dict:
    marker = directory / "replica.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    start = time.perf_counter()
    shutil.rmtree(directory, ignore_errors=True)
    templates = directory / "templates"
    templates.mkdir(parents=True)
    durations = [15 + (180 - 15) * k / max(clips - 1, 1) for k in range(clips)]
    contents = []
    for k, seconds in enumerate(durations):
        path = templates / f"clip{k}.mp4"
        synthetic_clip(path, seconds, CLIP_FPS, width=64, height=48, bframes=0)
        contents.append(path.read_bytes())
    garbage = random.Random(seed).randbytes(4096)
    written = 0
    for index in range(videos):
        source, relative = video_path(index)
        status = video_status(index)
        if status == "missing":
            continue
        path = directory / "videos" / ROOT_NAMES[source] / relative.removeprefix("LLaVA_Video/")
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"empty": b"", "garbage": garbage}.get(status, contents[index % clips])
        path.write_bytes(data)
        written += len(data)
    true_durations = [len(frame_times(int(s * CLIP_FPS), CLIP_FPS)) / CLIP_FPS for s in durations]
    write_tree(directory / "annotations", samples, videos, true_durations, seed)
    write_tree(directory / "annotations-small", videos, videos, true_durations, seed)
    info = {"built_in_s": round(time.perf_counter() - start, 1), "video_bytes": written, "clips": clips,
            "videos": videos, "samples": samples, "small_samples": videos}
    marker.write_text(json.dumps(info))
    return info


def run_prepare(directory: Path, annotations: str, out: Path, workers: int) -> dict:
    args = ["instruct", "prepare", "--annotations", str(directory / annotations), "--out", str(out),
            "--workers", str(workers)]
    for name in ROOT_NAMES:
        args += ["--video-root", f"{name}={directory / 'videos' / name}"]
    usage_file = out.with_name(out.name + ".usage.json")
    monitor = TreeMonitor()
    monitor.start()
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", WRAPPER, str(usage_file), *args], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - start
    monitor.done.set()
    monitor.join()
    if result.returncode != 0:
        raise SystemExit(f"prepare failed ({result.returncode}): {result.stderr[-2000:]}")
    usage = json.loads(usage_file.read_text())
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": round(wall, 2), "summary": summary, "peak_main_mb": round(usage["peak_kb"] / 1024, 1),
            "peak_all_processes_mb": round(monitor.peak_rss / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=70_000)
    parser.add_argument("--clips", type=int, default=24, help="distinct encoded clips behind the video files")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "instruct-replica",
                        help="where the replica is built once and kept (default: .cache/instruct-replica)")
    args = parser.parse_args()
    directory = args.cache_dir / f"v{args.videos}-s{args.samples}-c{args.clips}-seed{args.seed}"
    replica = build_replica(directory, args.videos, args.samples, args.clips, args.seed)
    runs = directory / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir()
    load = os.getloadavg()[0]

    first = run_prepare(directory, "annotations", runs / "first", args.workers)
    unchanged = run_prepare(directory, "annotations", runs / "first", args.workers)
    downloaded = []
    template = directory / "templates" / "clip0.mp4"
    for index in range(args.videos):
        if video_status(index) == "missing" and len(downloaded) < args.videos // 100:
            source, relative = video_path(index)
            path = directory / "videos" / ROOT_NAMES[source] / relative.removeprefix("LLaVA_Video/")
            shutil.copyfile(template, path)
            downloaded.append(path)
    try:
        changed = run_prepare(directory, "annotations", runs / "first", args.workers)
    finally:
        for path in downloaded:
            path.unlink()
    memory = {}
    for name in ("annotations-small", "annotations"):
        out = runs / name
        out.mkdir()
        shutil.copyfile(runs / "first" / "videos.jsonl", out / "videos.jsonl")
        memory[name] = run_prepare(directory, name, out, args.workers)

    seconds = first["summary"]["seconds"]
    probed = first["summary"]["probes"]["probed"]
    probe_rate = probed / seconds["check_videos"]
    full = memory["annotations"]
    samples = full["summary"]["total"]["samples"]
    convert_rate = samples / (full["summary"]["seconds"]["scan"] + full["summary"]["seconds"]["convert"])
    small = memory["annotations-small"]
    total = first["summary"]["total"]
    print_json_line({
        "videos": args.videos,
        "samples": samples,
        "workers": args.workers,
        "load_average_at_start": round(load, 2),
        "replica": replica,
        "found": total["found"], "missing": total["missing"], "unreadable": total["unreadable"],
        "converted": total["converted"], "rejected": total["rejected"],
        "first_run_s": first["wall_s"],
        "first_run_phases_s": seconds,
        "probed": probed,
        "probe_videos_per_s": round(probe_rate, 1),
        "convert_samples_per_s": round(convert_rate, 1),
        "rerun_unchanged_s": unchanged["wall_s"],
        "rerun_unchanged_ratio": round(unchanged["wall_s"] / first["wall_s"], 3),
        "rerun_unchanged_probed": unchanged["summary"]["probes"]["probed"],
        "rerun_after_new_videos_s": changed["wall_s"],
        "rerun_after_new_videos_ratio": round(changed["wall_s"] / first["wall_s"], 3),
        "rerun_after_new_videos_probed": changed["summary"]["probes"]["probed"],
        "new_videos": len(downloaded),
        "first_run_peak_main_mb": first["peak_main_mb"],
        "first_run_peak_all_processes_mb": first["peak_all_processes_mb"],
        "memory_samples": {"small": small["summary"]["total"]["samples"], "full": samples},
        "memory_peak_main_mb": {"small": small["peak_main_mb"], "full": full["peak_main_mb"]},
        "memory_peak_all_processes_mb": {"small": small["peak_all_processes_mb"], "full": full["peak_all_processes_mb"]},
        "memory_ratio_full_over_small": round(full["peak_main_mb"] / small["peak_main_mb"], 3),
        "projected_136k_videos_465k_samples_s": round(136_000 / probe_rate + 465_000 / convert_rate),
        "targets": {"rerun_ratio_below": 0.1, "memory_ratio_about": 1.0},
    })


if __name__ == "__main__":
    main()
