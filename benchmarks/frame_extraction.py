"""Frame extraction speed: our cache extractor vs per-frame OpenCV seeking vs a full decode.

The clip (default: 10 minutes, 640×360, 30 fps, H.264, GOP 250, up to 3 B-frames) is
generated into a temporary directory. Rates are turns (kept frames at 1 fps) per second of
wall time. The full decode is the practical ceiling: ``ffmpeg -i clip -f null -`` when an
ffmpeg binary exists, otherwise a PyAV decode of every frame (``ffmpeg_limit_method`` says
which); the PyAV full decode, a stricter bar (no per-frame work at all), is always reported
too. Each measurement runs in a fresh process; the methods alternate for ``--rounds`` rounds
and the best round counts (the machine is shared); CPU seconds (all threads) and their ratio
are reported as well, being less sensitive to other load, and the share of the clip's frames
that our sampler never decodes (``frames_skipped_undecoded_share``). ``ours`` decodes the clip
in pieces at once (``streamo.video.segments``); ``ours_one_pass`` is the same extractor decoding
in one pass with frame threads, as before. Prints one JSON line.
Targets: ours >= 4x the seek baseline and >= 1.2x the full decode.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from lib.clips import synthetic_clip
from lib.report import print_json_line
from lib.system import cpu_seconds, peak_rss_mb
from streamo.protocol import turn_count
from streamo.video.probe import probe_duration


def run_ours(clip: str, cache_dir: str, threads: int = 0) -> dict:
    """The frame cache filling one entry; ``threads`` 0 (its default) decodes in pieces at once,
    a thread count decodes in one pass with that many frame threads (the way before pieces)."""
    from streamo.video.cache import FrameCache

    shutil.rmtree(cache_dir, ignore_errors=True)
    cache = FrameCache(cache_dir, threads=threads)
    cpu, start = cpu_seconds(), time.perf_counter()
    entry = cache.ensure(clip)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    sizes = [path.stat().st_size for path in entry.paths]
    return {"seconds": seconds, "cpu_seconds": cpu, "turns": len(sizes), "bytes": sum(sizes),
            "size": [entry.width, entry.height], "peak_rss_mb": peak_rss_mb()}


def run_seek_baseline(clip: str, size: list[int]) -> dict:
    """The original approach: seek OpenCV to each turn's frame index, read it, resize it."""
    import cv2

    capture = cv2.VideoCapture(clip)
    native_fps = capture.get(cv2.CAP_PROP_FPS)
    turns = turn_count(probe_duration(clip))
    start = time.perf_counter()
    kept = 0
    for turn in range(turns):
        capture.set(cv2.CAP_PROP_POS_FRAMES, round(turn * native_fps))
        ok, picture = capture.read()
        if ok:
            cv2.cvtColor(cv2.resize(picture, tuple(size), interpolation=cv2.INTER_CUBIC), cv2.COLOR_BGR2RGB)
            kept += 1
    seconds = time.perf_counter() - start
    capture.release()
    return {"seconds": seconds, "turns": kept, "peak_rss_mb": peak_rss_mb()}


def run_ffmpeg_null(clip: str) -> dict:
    """``ffmpeg -i clip -f null -``: every frame decoded, nothing else done with it."""
    start = time.perf_counter()
    subprocess.run([shutil.which("ffmpeg"), "-v", "error", "-i", clip, "-f", "null", "-"], check=True)
    seconds = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # this fresh process ran only ffmpeg
    return {"seconds": seconds, "cpu_seconds": children.ru_utime + children.ru_stime}


def run_pyav_full_decode(clip: str) -> dict:
    """Every frame decoded by PyAV with the same threading as ours, nothing done with it."""
    import av

    cpu, start = cpu_seconds(), time.perf_counter()
    with av.open(clip) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            pass
    return {"seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu}


def decoded_frames(clip: str) -> int:
    """Frames the decoder gave while our sampler read the clip (the rest were skipped undecoded:
    non-reference frames before the next wanted time, and everything after the last turn)."""
    from streamo.video import sampling

    decode, count = sampling._decode, 0

    def counting(*args):
        nonlocal count
        for frame in decode(*args):
            count += 1
            yield frame

    sampling._decode = counting
    try:
        for _ in sampling.turn_frames(clip):
            pass
    finally:
        sampling._decode = decode
    return count


def _in_fresh_process(function, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(function, args)


_PICTURE_TYPES = {1: "I", 2: "P", 3: "B"}


def frame_types(clip: str) -> dict[str, int]:
    import av

    with av.open(clip) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        counts = collections.Counter(int(frame.pict_type) for frame in container.decode(stream))
    return {_PICTURE_TYPES.get(kind, str(kind)): count for kind, count in sorted(counts.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="clip length (default: 600)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of ours and the full decode")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="streamo-frames-bench-") as work:
        clip = str(Path(work) / "clip.mp4")
        started = time.perf_counter()
        synthetic_clip(clip, args.seconds, width=640, height=360, gop=250, bframes=3)
        encode_seconds = time.perf_counter() - started
        turns = turn_count(probe_duration(clip))
        has_ffmpeg = shutil.which("ffmpeg") is not None
        ours, one_pass, pyav, ffmpeg = [], [], [], []
        for _ in range(args.rounds):
            ours.append(_in_fresh_process(run_ours, clip, str(Path(work) / "cache")))
            one_pass.append(_in_fresh_process(run_ours, clip, str(Path(work) / "cache"), os.cpu_count() or 1))
            pyav.append(_in_fresh_process(run_pyav_full_decode, clip))
            if has_ffmpeg:
                ffmpeg.append(_in_fresh_process(run_ffmpeg_null, clip))
        best_ours = min(ours, key=lambda r: r["seconds"])
        seek = _in_fresh_process(run_seek_baseline, clip, best_ours["size"])

        def rate(runs: list[dict]) -> float:
            return turns / min(r["seconds"] for r in runs)

        ours_fps, seek_fps, pyav_fps = rate(ours), seek["turns"] / seek["seconds"], rate(pyav)
        types = frame_types(clip)
        skipped = 1 - decoded_frames(clip) / sum(types.values())
        limit_fps = rate(ffmpeg) if has_ffmpeg else pyav_fps
        limit_runs = ffmpeg if has_ffmpeg else pyav
        result = {
            "clip": {"seconds": args.seconds, "size": "640x360", "fps": 30, "gop": 250, "codec": "h264",
                     "mbytes": round(Path(clip).stat().st_size / 2**20, 2), "frame_types": types,
                     "encode_seconds": round(encode_seconds, 1)},
            "turns": turns,
            "unit": "turns (kept 1-fps frames) per wall-clock second",
            "ours_fps": round(ours_fps, 2),
            "ours_rounds_fps": [round(turns / r["seconds"], 2) for r in ours],
            "seek_baseline_fps": round(seek_fps, 2),
            "ffmpeg_limit_fps": round(limit_fps, 2),
            "ffmpeg_limit_method": "ffmpeg-binary" if has_ffmpeg else "pyav-full-decode",
            "ffmpeg_limit_rounds_fps": [round(turns / r["seconds"], 2) for r in limit_runs],
            "pyav_full_decode_fps": round(pyav_fps, 2),
            "ours_vs_seek": round(ours_fps / seek_fps, 2),
            "ours_vs_ffmpeg_limit": round(ours_fps / limit_fps, 3),
            "ours_vs_pyav_full_decode": round(ours_fps / pyav_fps, 3),
            "ours_one_pass_fps": round(rate(one_pass), 2),
            "ours_vs_one_pass": round(ours_fps / rate(one_pass), 3),
            "ours_one_pass_cpu_seconds": round(min(r["cpu_seconds"] for r in one_pass), 2),
            "frames_skipped_undecoded_share": round(skipped, 3),
            "ours_cpu_seconds": round(min(r["cpu_seconds"] for r in ours), 2),
            "ffmpeg_limit_cpu_seconds": round(min(r["cpu_seconds"] for r in limit_runs), 2),
            "pyav_full_decode_cpu_seconds": round(min(r["cpu_seconds"] for r in pyav), 2),
            "ours_cpu_vs_ffmpeg_limit_cpu": round(min(r["cpu_seconds"] for r in ours)
                                                  / min(r["cpu_seconds"] for r in limit_runs), 3),
            "load_average_at_start": round(load, 2),
            "peak_rss_mb": round(best_ours["peak_rss_mb"], 1),
            "seek_baseline_peak_rss_mb": round(seek["peak_rss_mb"], 1),
            "cache_bytes_per_frame": round(best_ours["bytes"] / best_ours["turns"]),
            "frame_size": "x".join(map(str, best_ours["size"])),
            "targets_met": ours_fps >= 4 * seek_fps and ours_fps >= 1.2 * limit_fps,
        }
    print_json_line(result)


if __name__ == "__main__":
    main()
