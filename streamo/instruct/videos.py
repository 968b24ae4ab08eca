"""Checking every distinct video once: found, missing, empty or unreadable, its true duration,
the size a player shows it at (rotation and pixel aspect applied) and where a cut-off file breaks off.

Probing 136K videos takes hours on a small machine, so results are kept in ``videos.jsonl``
in the output directory, keyed by the resolved path, size and modification time: a re-run
probes only videos that are new or changed. Results are also appended to a journal as
they arrive, so an interrupted run keeps what it had probed.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

import orjson
from tqdm import tqdm

from ..jsonfiles import atomic_write
from ..video.probe import VideoInfo, probe_video

FOUND, MISSING, EMPTY, UNREADABLE, NO_ROOT = "found", "missing", "empty", "unreadable", "no_root"
UNUSABLE = (MISSING, EMPTY, UNREADABLE, NO_ROOT)
REPORT_NAME = "videos.jsonl"
LEDGER_NAME = "ledger.jsonl"
_JOURNAL_NAME = ".videos.journal.jsonl"
_PROBE_CHUNK = 4


@dataclass(eq=False, slots=True)
class Video:
    """One distinct video named by the annotations and what is known about it."""

    source: str
    video_path: str
    candidates: list[str] | None
    """Paths to try, in order (None: its source has no root)."""
    samples: int = 0
    status: str | None = None
    path: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    """Shown size of the first frame (display orientation and pixel aspect applied)."""
    cut_at: float | None = None
    """Second where a damaged or cut-off file breaks off (its frames up to there are used)."""
    reason: str | None = None

    @property
    def usable(self) -> bool:
        return self.status == FOUND

    def problem(self) -> str:
        """Why no sample of this video can be converted (for the rejects report)."""
        if self.status == NO_ROOT:
            return (f"source {self.source!r} has no video root (give --video-root {self.source}=DIR, "
                    "or a default root)")
        if self.status == MISSING:
            return "video not found: " + " or ".join(self.candidates or [])
        if self.status == EMPTY:
            return f"video is empty (0 bytes): {self.path}"
        return f"unreadable video: {self.reason}"

    def as_record(self) -> dict:
        return {"source": self.source, "video_path": self.video_path, "path": self.path, "status": self.status,
                "duration": self.duration, "width": self.width, "height": self.height, "cut_at": self.cut_at,
                "size": self.size, "mtime_ns": self.mtime_ns, "samples": self.samples, "reason": self.reason}

    def found(self, info: VideoInfo | None, reason: str | None) -> None:
        """Record a probe's outcome: ``info`` when the video reads, else the ``reason`` it does not."""
        self.status = FOUND if reason is None else UNREADABLE
        self.reason = reason
        if info is not None:
            self.duration, self.width, self.height, self.cut_at = info


@dataclass
class ProbeCounts:
    probed: int = 0
    reused: int = 0
    retried: int = 0
    """Probed again after their worker died (the ray executor)."""


@dataclass
class ProbeCache:
    """Earlier results by resolved path: (size, mtime_ns) -> (probe result, reason)."""

    entries: dict[str, tuple[int, int, VideoInfo | None, str | None]] = field(default_factory=dict)

    @classmethod
    def load(cls, out: Path) -> "ProbeCache":
        cache = cls()
        for name in (REPORT_NAME, _JOURNAL_NAME):  # the journal is newer
            path = out / name
            if not path.is_file():
                continue
            with open(path, "rb") as handle:
                for line in handle:
                    try:
                        row = orjson.loads(line)
                        if row["status"] in (FOUND, UNREADABLE) and isinstance(row["size"], int):
                            info = (VideoInfo(row["duration"], row["width"], row["height"], row["cut_at"])
                                    if row["status"] == FOUND else None)
                            cache.entries[row["path"]] = (row["size"], row["mtime_ns"], info, row["reason"])
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut short by an interrupted run, or an old format (no shown size): probe again
        return cache

    def get(self, path: str, size: int, mtime_ns: int) -> tuple[VideoInfo | None, str | None] | None:
        entry = self.entries.get(path)
        if entry is None or entry[0] != size or entry[1] != mtime_ns:
            return None
        return entry[2], entry[3]


def _locate(video: Video) -> None:
    """Set path, size and mtime from the first candidate that is a file, or mark the video missing."""
    if video.candidates is None:
        video.status = NO_ROOT
        return
    for candidate in video.candidates:
        try:
            stat = os.stat(candidate)
        except OSError:
            continue
        if os.path.isfile(candidate):
            video.path, video.size, video.mtime_ns = candidate, stat.st_size, stat.st_mtime_ns
            video.status = EMPTY if stat.st_size == 0 else None
            return
    video.status, video.path = MISSING, video.candidates[0]


def _probe(path: str) -> tuple[str, VideoInfo | None, str | None]:
    """(path, what probing found or None, reason it failed)."""
    try:
        return path, probe_video(path), None
    except Exception as exc:  # one damaged file must not stop the other 136K
        return path, None, str(exc) if path in str(exc) else f"{path}: {exc}"


Probed = tuple[tuple[str, VideoInfo | None, str | None], int, str | None]
"""(path, what probing found, why it failed), attempts, node."""


def _probe_all(paths: list[str], workers: int, executor=None) -> Iterator[Probed]:
    if executor is not None:
        for outcome in executor.map(_probe, paths, batch=_PROBE_CHUNK):
            results = outcome.results or [(path, None, f"{path}: {outcome.reason}") for path in outcome.items]
            yield from ((result, outcome.attempts, outcome.node) for result in results)
        return
    if workers <= 1 or len(paths) <= _PROBE_CHUNK:
        yield from ((result, 1, None) for result in map(_probe, paths))
        return
    context = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    with context.Pool(workers) as pool:
        yield from ((result, 1, None) for result in pool.imap_unordered(_probe, paths, chunksize=_PROBE_CHUNK))


def check_videos(videos: Iterable[Video], out: Path, workers: int = 1, progress: bool = False,
                 log: IO[str] = sys.stderr, executor=None) -> ProbeCounts:
    """Locate every video and probe those that exist, are not empty and are not in the cache.

    ``executor`` (a ``streamo.cluster.RayExecutor`` already entered) probes in Ray tasks
    instead of ``workers`` local processes and writes the ledger (``ledger.jsonl``: every
    video this run could not read, with its source, reason, attempts and node).
    """
    cache = ProbeCache.load(out)
    counts = ProbeCounts()
    waiting: dict[str, list[Video]] = {}
    for video in videos:
        _locate(video)
        if video.status is not None:
            continue
        known = cache.get(video.path, video.size, video.mtime_ns)
        if known is not None:
            video.found(*known)
            counts.reused += 1
        else:
            waiting.setdefault(video.path, []).append(video)
    out.mkdir(parents=True, exist_ok=True)
    ledger: list[bytes] = []
    failed = 0
    if executor is not None and waiting:
        executor.check_shared(out)
    with open(out / _JOURNAL_NAME, "ab") as journal:
        bar = tqdm(total=len(waiting), unit=" videos", desc="probing", file=log, disable=not progress)
        for (path, info, reason), attempts, node in _probe_all(list(waiting), workers, executor):
            for video in waiting[path]:
                video.found(info, reason)
            first = waiting[path][0]
            failed += reason is not None
            counts.retried += attempts > 1
            if executor is not None:
                bar.set_postfix_str(f"{failed} failed, {counts.retried} retried", refresh=False)
                if reason is not None:
                    ledger.append(orjson.dumps({"video": path, "source": first.source, "reason": reason,
                                                "attempts": attempts, "node": node}) + b"\n")
            journal.write(orjson.dumps({"path": path, "size": first.size, "mtime_ns": first.mtime_ns,
                                        "status": first.status, "duration": first.duration, "width": first.width,
                                        "height": first.height, "cut_at": first.cut_at, "reason": reason}) + b"\n")
            journal.flush()
            counts.probed += 1
            bar.update()
        bar.close()
    if executor is not None:
        with atomic_write(out / LEDGER_NAME) as handle:
            handle.writelines(sorted(ledger))  # the same file however the tasks finished
    return counts


def write_report(videos: Iterable[Video], out: Path) -> Path:
    """``videos.jsonl``: one line per distinct video (also next run's probe cache)."""
    path = out / REPORT_NAME
    with atomic_write(path) as handle:
        for video in videos:
            handle.write(orjson.dumps(video.as_record()) + b"\n")
    (out / _JOURNAL_NAME).unlink(missing_ok=True)
    return path
