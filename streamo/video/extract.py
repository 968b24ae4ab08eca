"""Filling the frame cache ahead of training: every video of a stream or raw file, in parallel.

Resumable: videos whose entry is complete are skipped, so a killed run just starts again.
Every video ends up in the manifest (``INPUT.manifest.jsonl`` in the cache directory: the
video, its entry and frame count) or in the failure report (``INPUT.failures.jsonl``: the
video, the sample indices that use it, the reason). A sample whose turns outnumber its
video's frames (a clip shorter than its annotation) is reported too.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import orjson
from tqdm import tqdm

from ..annotation import parse_time
from ..convert import prefixed_video_path
from ..jsonfiles import atomic_write, iter_records
from ..protocol import STREAM_PLACEHOLDER, turn_count
from .cache import FrameCache
from .probe import VideoError

MAX_PRINTED_PROBLEMS = 20


@dataclass
class VideoNeeds:
    """The samples that use one video, with the number of turns each expects (None: unknown)."""

    samples: list[tuple[int, int | None]] = field(default_factory=list)
    source: str | None = None
    """The ``source`` field of the first record that uses it (raw annotations have one), for the ledger."""


@dataclass
class ExtractSummary:
    videos: int = 0
    extracted: int = 0
    cached: int = 0
    failed: int = 0
    samples_rejected: int = 0
    retried: int = 0
    """Videos whose task was run again after its worker died (the ray executor)."""

    def line(self) -> str:
        retried = f", {self.retried} retried after a worker died" if self.retried else ""
        return (
            f"{self.videos} videos: {self.extracted} extracted, {self.cached} already cached, "
            f"{self.failed} failed{retried}; {self.samples_rejected} samples rejected"
        )


def _stream_turns(messages: Any) -> int | None:
    if not isinstance(messages, list):
        return None
    return sum(
        message["content"].count(STREAM_PLACEHOLDER)
        for message in messages
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str)
    )


def collect_videos(
    input_path: str | os.PathLike[str], video_prefix: str | None = None, fps: float = 1.0
) -> tuple[dict[str, VideoNeeds], list[dict[str, Any]]]:
    """Videos named by a stream file (``videos``) or raw annotations (``video_path``), in order of
    first use, and a failure row for each record that names no video."""
    videos: dict[str, VideoNeeds] = {}
    problems: list[dict[str, Any]] = []
    for index, record in enumerate(iter_records(input_path)):
        if isinstance(record, dict) and isinstance(record.get("videos"), list) and record["videos"]:
            paths = [p for p in record["videos"] if isinstance(p, str) and p]
            turns = _stream_turns(record.get("messages")) if len(paths) == 1 else None
        elif isinstance(record, dict) and isinstance(record.get("video_path"), str) and record["video_path"].strip():
            paths = [record["video_path"]]
            try:
                duration = parse_time(record.get("duration"))
            except ValueError:
                duration = None
            turns = turn_count(duration, fps) if duration is not None else None
        else:
            paths = []
        if not paths:
            problems.append({"video": None, "samples": [index], "reason": "no 'videos' or 'video_path' field"})
            continue
        source = record.get("source") if isinstance(record.get("source"), str) else None
        for path in paths:
            needs = videos.setdefault(prefixed_video_path(path, video_prefix), VideoNeeds(source=source))
            needs.samples.append((index, turns))
    return videos, problems


_worker_cache: FrameCache | None = None


def _init_worker(settings: dict[str, Any]) -> None:
    global _worker_cache
    _worker_cache = FrameCache(**settings)


def extract_video(cache: FrameCache, video: str) -> tuple[str, str | None, int, str | None]:
    """(status, entry, frames, reason) of one video, status extracted, cached or failed."""
    try:
        entry = cache.lookup(video)
        status = "cached"
        if entry is None:
            entry = cache.ensure(video)
            status = "extracted"
    except VideoError as exc:
        return "failed", None, 0, str(exc)
    except Exception as exc:  # one bad video must not stop the other 465K
        return "failed", None, 0, f"{video}: {type(exc).__name__}: {exc}"
    return status, cache.entry_name(entry), len(entry.times), None


def _extract_one(video: str) -> tuple[str, str | None, int, str | None]:
    assert _worker_cache is not None
    return extract_video(_worker_cache, video)


def _extract_in_task(settings: dict[str, Any], video: str) -> tuple[str, str | None, int, str | None]:
    """A Ray task's work: the cache is cheap to make, so each task makes its own."""
    return extract_video(FrameCache(**settings), video)


Done = tuple[int, tuple[str, str | None, int, str | None], int, str | None]
"""(position of the video, its outcome, attempts, node)."""


def _run(videos: list[str], settings: dict[str, Any], workers: int) -> Iterator[Done]:
    if workers <= 1 or len(videos) <= 1:
        _init_worker(settings)
        yield from ((index, _extract_one(video), 1, None) for index, video in enumerate(videos))
        return
    context = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:
        indexed = pool.imap_unordered(_extract_indexed, enumerate(videos), chunksize=1)
        yield from ((index, outcome, 1, None) for index, outcome in indexed)


def _extract_indexed(item: tuple[int, str]) -> tuple[int, tuple[str, str | None, int, str | None]]:
    return item[0], _extract_one(item[1])


def _run_on_ray(videos: list[str], settings: dict[str, Any], executor) -> Iterator[Done]:
    """Each video a task with one decoder thread; a task that died on every attempt fails its video."""
    executor.check_shared(settings["cache_dir"])
    work = functools.partial(_extract_in_task, {**settings, "threads": 1})
    for outcome in executor.map(work, videos):
        for offset, video in enumerate(outcome.items):
            result = (outcome.results[offset] if outcome.results is not None
                      else ("failed", None, 0, f"{video}: {outcome.reason}"))
            yield outcome.start + offset, result, outcome.attempts, outcome.node


def report_paths(cache_dir: str | os.PathLike[str], input_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(manifest, failure report) of one input file in the cache directory."""
    stem = Path(input_path).name.removesuffix(".jsonl").removesuffix(".json")
    return Path(cache_dir) / f"{stem}.manifest.jsonl", Path(cache_dir) / f"{stem}.failures.jsonl"


def ledger_path(cache_dir: str | os.PathLike[str], input_path: str | os.PathLike[str]) -> Path:
    """The ray executor's ledger of failed videos (video, source, reason, attempts, node)."""
    manifest, _ = report_paths(cache_dir, input_path)
    return manifest.with_name(manifest.name.removesuffix(".manifest.jsonl") + ".ledger.jsonl")


def extract_file(
    input_path: str | os.PathLike[str],
    cache: FrameCache,
    video_prefix: str | None = None,
    workers: int = 1,
    progress: bool | None = None,
    log=sys.stderr,
    executor=None,
) -> ExtractSummary:
    """Extract the frames of every video named in ``input_path`` into ``cache``.

    ``executor`` (a ``streamo.cluster.RayExecutor`` already entered) runs each video as a
    Ray task instead of ``workers`` local processes, and adds the ledger. Reports list
    videos in input order either way, so both give the same bytes.
    """
    videos, problems = collect_videos(input_path, video_prefix, cache.fps)
    names = list(videos)
    workers = max(workers, 1)
    cpus = os.cpu_count() or 1
    settings = {
        "cache_dir": cache.root,
        "fps": cache.fps,
        "max_pixels": cache.max_pixels,
        "min_pixels": cache.min_pixels,
        "quality": cache.quality,
        # One decoder thread per core in all: parallel videos scale better than threads.
        "threads": max(cpus // workers, 1) if workers > 1 else cache.threads,
    }
    manifest_path, failures_path = report_paths(cache.root, input_path)
    summary = ExtractSummary(videos=len(videos), samples_rejected=sum(len(p["samples"]) for p in problems))
    printed = 0
    cache.root.mkdir(parents=True, exist_ok=True)
    done: dict[int, Done] = {}
    written = 0
    with contextlib.ExitStack() as files:
        manifest = files.enter_context(atomic_write(manifest_path))
        failures = files.enter_context(atomic_write(failures_path))
        ledger = files.enter_context(atomic_write(ledger_path(cache.root, input_path))) if executor else None
        for row in problems:
            failures.write(orjson.dumps(row) + b"\n")
        bar = tqdm(total=len(videos), unit=" videos", file=log,
                   disable=progress is False or (progress is None and not log.isatty()))
        results = _run(names, settings, workers) if executor is None else _run_on_ray(names, settings, executor)
        for finished in results:
            done[finished[0]] = finished
            _, (status, _, _, _), attempts, _ = finished
            summary.failed += status == "failed"
            summary.retried += attempts > 1
            bar.update()
            if executor is not None:
                bar.set_postfix_str(f"{summary.failed} failed, {summary.retried} retried", refresh=False)
            while written in done:  # in input order, however the videos finish
                _, (status, entry, frames, reason), attempts, node = done.pop(written)
                video = names[written]
                written += 1
                needs = videos[video]
                rows = []
                if status == "failed":
                    rows.append({"video": video, "samples": [index for index, _ in needs.samples], "reason": reason})
                    if ledger is not None:
                        ledger.write(orjson.dumps({"video": video, "source": needs.source, "reason": reason,
                                                   "attempts": attempts, "node": node}) + b"\n")
                else:
                    summary.extracted += status == "extracted"
                    summary.cached += status == "cached"
                    manifest.write(orjson.dumps(
                        {"video": video, "entry": entry, "frames": frames, "status": status,
                         "samples": len(needs.samples)}
                    ) + b"\n")
                    for index, turns in needs.samples:
                        if turns is not None and turns > frames:
                            rows.append({
                                "video": video, "samples": [index],
                                "reason": f"{video}: gives {frames} frames at {cache.fps:g} fps "
                                          f"but sample {index} has {turns} turns (clip shorter than its annotation)",
                            })
                for row in rows:
                    summary.samples_rejected += len(row["samples"])
                    failures.write(orjson.dumps(row) + b"\n")
                    if printed < MAX_PRINTED_PROBLEMS:
                        print(f"error: {row['reason']}", file=log)
                    printed += 1
        bar.close()
    for row in problems:
        if printed < MAX_PRINTED_PROBLEMS:
            print(f"error: {input_path}: sample {row['samples'][0]}: {row['reason']}", file=log)
        printed += 1
    if printed > MAX_PRINTED_PROBLEMS:
        print(f"... {printed - MAX_PRINTED_PROBLEMS} more problems not shown; all in {failures_path}", file=log)
    return summary
