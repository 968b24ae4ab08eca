"""``streamo instruct prepare``: from a Streamo-Instruct-465K annotation tree to training files.

Three passes, none of which holds the samples in memory:

1. scan the annotation tree (JSON lists, single objects, JSONL, per-task folders), count
   samples per source and task, and collect the distinct videos with the paths to try
   for each (``sources.VideoRoots``);
2. check each distinct video once, in parallel (``videos.check_videos``; results cached);
3. read the annotations again and convert every usable sample with the converter
   (``streamo.batch``), the video's true duration and its resolved path filled in, into one
   stream file per task plus a combined one; every other sample goes to the rejects
   report with its reason.

When nothing changed since the last run in the same output directory (annotation files,
video files, options and outputs as they were), pass 3 is skipped.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import heapq
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

import orjson
from tqdm import tqdm

from .. import __version__
from ..annotation import Problem, parse_time
from ..batch import CHUNK_SIZE, convert_chunks
from ..convert import ConvertOptions
from ..errors import UsageError
from ..jsonfiles import InvalidRecord, RecordWriter, atomic_write, iter_records, parse_record
from ..protocol import turn_count
from .sources import NO_SOURCE, VideoRoots, canonical_source, name_key, source_key
from .report import FRAME_KB, commands, count_row
from .videos import LEDGER_NAME, ProbeCounts, Video, check_videos, write_report

STREAM_NAME = "stream.jsonl"
TASKS_DIR = "tasks"
REJECTS_NAME = "rejects.jsonl"
SUMMARY_NAME = "summary.json"
_STATE_VERSION = 1


class PrepareError(UsageError, ValueError):
    """Arguments that cannot work with these annotations (an unknown task, say)."""


@dataclass
class PrepareOptions:
    annotations: Path
    out: Path
    roots: VideoRoots
    tasks: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    limit: int | None = None
    seed: int = 0
    workers: int = 1
    convert: ConvertOptions = field(default_factory=ConvertOptions)
    task_weights: dict[str, float] = field(default_factory=dict)
    """Task -> factor for the printed training line (ms-swift's ``FILE#N`` sampling)."""


@dataclass(slots=True)
class Sample:
    """One annotation record and where it belongs; ``record`` is dropped when kept for --limit."""

    file: int
    index: int
    task: str
    source: str
    video: str | None
    """Key of its video in the video table (None: the record names no usable video_path)."""
    record: Any = None
    video_path: str | None = None
    problem: str | None = None
    """Set when the record itself cannot be read."""

    group: tuple[str, str] = field(init=False)
    """(source key, task key)."""

    def __post_init__(self) -> None:
        self.group = source_key(self.source), name_key(self.task)


@dataclass
class Group:
    """Counts of one (source, task) pair."""

    samples: int = 0
    converted: int = 0
    rejected: int = 0
    with_warnings: int = 0
    videos: set[str] = field(default_factory=set)


def annotation_files(annotations: Path, out: Path) -> list[Path]:
    """The JSON/JSONL files under ``annotations`` (or that file), sorted; hidden and output files skipped."""
    if annotations.is_file():
        return [annotations]
    out = out.resolve()
    found = []
    for path in annotations.rglob("*"):
        relative = path.relative_to(annotations).parts
        if path.suffix.lower() not in (".json", ".jsonl") or any(part.startswith(".") for part in relative):
            continue
        if path.is_file() and out not in path.resolve().parents:
            found.append(path)
    return sorted(found, key=lambda path: path.relative_to(annotations).as_posix())


def _relative(annotations: Path, path: Path) -> str:
    return path.name if annotations.is_file() else path.relative_to(annotations).as_posix()


def _folder_task(relative: str) -> str:
    """The task a file's records default to: its top folder, or its name for top-level files."""
    parts = relative.split("/")
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def _sample(number: int, index: int, item: Any, folder_task: str, roots: VideoRoots) -> Sample:
    try:
        record = parse_record(item)
    except InvalidRecord as exc:
        return Sample(number, index, folder_task, NO_SOURCE, None, problem=str(exc))
    if not isinstance(record, dict):
        return Sample(number, index, folder_task, NO_SOURCE, None, problem=f"expected a JSON object, got {type(record).__name__}")
    task = record.get("task_type")
    task = task.strip() if isinstance(task, str) and task.strip() else folder_task
    source = record.get("source")
    source = canonical_source(source if isinstance(source, str) else "")
    video_path = record.get("video_path")
    if not isinstance(video_path, str) or not video_path.strip():
        return Sample(number, index, task, source, None, record)
    video_path = video_path.strip()
    return Sample(number, index, task, source, roots.video_key(video_path, source), record, video_path)


def iter_samples(annotations: Path, files: list[Path], roots: VideoRoots) -> Iterator[Sample]:
    """Every record of ``files`` in order; a file that stops being readable yields one sample
    with the problem, at the index where reading stopped."""
    for number, path in enumerate(files):
        relative = _relative(annotations, path)
        folder_task = _folder_task(relative)
        index = 0
        try:
            for index, item in enumerate(iter_records(path, lazy=True)):
                yield _sample(number, index, item, folder_task, roots)
            index += 1
        except (InvalidRecord, OSError) as exc:
            yield Sample(number, index, folder_task, NO_SOURCE, None,
                         problem=f"{exc}; the rest of the file is not read")


def _priority(seed: int, relative: str, index: int) -> int:
    """A reproducible random rank per sample, independent of the order files are read in."""
    digest = hashlib.blake2b(f"{seed}\0{relative}\0{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass
class Scan:
    """What the first pass found among the selected samples."""

    files: list[Path]
    identities: list[tuple[str, int, int]]
    roots: VideoRoots
    groups: dict[tuple[str, str], Group] = field(default_factory=dict)
    source_names: dict[str, str] = field(default_factory=dict)
    task_names: dict[str, str] = field(default_factory=dict)
    videos: dict[str, Video] = field(default_factory=dict)
    chosen: set[tuple[int, int]] | None = None
    """With --limit: (file, index) of the chosen samples."""
    records: int = 0

    def add(self, sample: Sample) -> None:
        group_key = sample.group
        self.source_names.setdefault(group_key[0], sample.source)
        self.task_names.setdefault(group_key[1], sample.task)
        group = self.groups.setdefault(group_key, Group())
        group.samples += 1
        if sample.video is not None:
            video = self.videos.get(sample.video)
            if video is None:
                candidates = self.roots.candidates(sample.video_path, sample.source)
                video = self.videos[sample.video] = Video(sample.source, sample.video_path, candidates)
            video.samples += 1
            group.videos.add(sample.video)


def scan(options: PrepareOptions, progress: bool = False, log: IO[str] = sys.stderr) -> Scan:
    """Pass 1: select the samples and collect their distinct videos."""
    files = annotation_files(options.annotations, options.out)
    if not files:
        raise PrepareError(f"{options.annotations}: no .json or .jsonl annotation file")
    identities = []
    for path in files:
        stat = path.stat()
        identities.append((_relative(options.annotations, path), stat.st_size, stat.st_mtime_ns))
    result = Scan(files, identities, options.roots)
    tasks = {name_key(task) for task in options.tasks}
    sources = {source_key(source) for source in options.sources}
    seen_tasks: dict[str, str] = {}
    seen_sources: dict[str, str] = {}
    heap: list[tuple[int, int, int, Sample]] = []
    bar = tqdm(unit=" samples", desc="scanning", file=log, disable=not progress)
    for sample in iter_samples(options.annotations, files, options.roots):
        result.records += 1
        if not result.records % 1024:
            bar.update(1024)
        source, task = sample.group
        seen_sources.setdefault(source, sample.source)
        seen_tasks.setdefault(task, sample.task)
        if (tasks and task not in tasks) or (sources and source not in sources):
            continue
        if options.limit is None:
            result.add(sample)
            continue
        sample.record = None
        rank = -_priority(options.seed, identities[sample.file][0], sample.index)
        entry = (rank, sample.file, sample.index, sample)
        if len(heap) < options.limit:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)
    bar.update(result.records % 1024)
    bar.close()
    for wanted, seen, option in ((tasks, seen_tasks, "--tasks"), (sources, seen_sources, "--sources")):
        unknown = sorted(wanted - seen.keys())
        if unknown:
            given = [name for name in (options.tasks if option == "--tasks" else options.sources)
                     if (name_key(name) if option == "--tasks" else source_key(name)) in unknown]
            raise PrepareError(f"{option}: no sample has {', '.join(given)} (found: {', '.join(sorted(seen.values()))})")
    unknown = [task for task in options.task_weights if name_key(task) not in (tasks or seen_tasks.keys())]
    if unknown:
        raise PrepareError(f"--task-weight: no selected task is {', '.join(unknown)} "
                           f"(selected: {', '.join(sorted(seen_tasks[key] for key in (tasks or seen_tasks)))})")
    if options.limit is not None:
        result.chosen = set()
        for _, number, index, sample in sorted(heap, key=lambda entry: entry[1:3]):
            result.chosen.add((number, index))
            result.add(sample)
    return result


def _selected(options: PrepareOptions, found: Scan, samples: Iterator[Sample]) -> Iterator[Sample]:
    """The samples the scan selected, read again (same order)."""
    tasks = {name_key(task) for task in options.tasks}
    sources = {source_key(source) for source in options.sources}
    for sample in samples:
        source, task = sample.group
        if found.chosen is not None:
            if (sample.file, sample.index) in found.chosen:
                yield sample
        elif (not tasks or task in tasks) and (not sources or source in sources):
            yield sample


def _fingerprint(options: PrepareOptions, found: Scan) -> str:
    """Everything the outputs depend on; equal fingerprints mean equal outputs."""
    digest = hashlib.sha256(orjson.dumps({
        "state": _STATE_VERSION,
        "streamo": __version__,
        "annotations": os.path.abspath(options.annotations),
        "files": found.identities,
        "roots": dataclasses.asdict(options.roots),
        "tasks": sorted(map(name_key, options.tasks)),
        "sources": sorted(map(source_key, options.sources)),
        "limit": options.limit,
        "seed": options.seed if options.limit is not None else None,
        "convert": dataclasses.asdict(options.convert),
    }))
    for key, video in found.videos.items():
        digest.update(orjson.dumps([key, video.status, video.path, video.size, video.mtime_ns, video.duration]))
    return digest.hexdigest()


def _identity(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def task_file_name(task: str) -> str:
    return (re.sub(r"[^0-9A-Za-z._-]+", "_", task).strip("._") or "task") + ".jsonl"


@dataclass
class _Meta:
    sample: Sample
    sequence: int | None
    """Position in the records sent to the converter; None when rejected before conversion."""
    problems: list[Problem]


def _conversion_input(found: Scan, samples: Iterator[Sample], fps: float, pending: collections.deque) -> Iterator[list]:
    """Chunks for the converter: each usable sample with its video's resolved path and true
    duration. The chunk's bookkeeping (every sample, converted or not) goes to ``pending``."""
    chunk: list[tuple[int, Any]] = []
    metas: list[_Meta] = []
    sequence = 0
    for sample in samples:
        video = found.videos.get(sample.video) if sample.video is not None else None
        if sample.problem is not None:
            metas.append(_Meta(sample, None, [Problem("error", "sample", sample.problem)]))
        elif video is not None and not video.usable:
            metas.append(_Meta(sample, None, [Problem("error", "video_path", video.problem())]))
        else:
            record, problems = sample.record, []
            if video is not None:
                problems = _duration_warning(record, video.duration, fps)
                record = {**record, "video_path": video.path, "duration": video.duration}
            chunk.append((sequence, record))
            metas.append(_Meta(sample, sequence, problems))
            sequence += 1
        if len(chunk) >= CHUNK_SIZE or len(metas) >= 4 * CHUNK_SIZE:
            pending.append(metas)
            yield chunk
            chunk, metas = [], []
    if metas:
        pending.append(metas)
        yield chunk


def _duration_warning(record: dict, duration: float, fps: float) -> list[Problem]:
    try:
        claimed = parse_time(record.get("duration"))
    except ValueError:
        claimed = None
    if claimed is None or turn_count(claimed, fps) == turn_count(duration, fps):
        return []
    return [Problem("warning", "duration", f"the annotation says {claimed:g} s but the video lasts {duration:.2f} s; "
                                          "the video's duration is used")]


@dataclass
class Converted:
    stream: Path
    tasks: dict[str, tuple[str, int]]
    """Task key -> (file name under tasks/, samples written)."""


def convert(options: PrepareOptions, found: Scan, progress: bool = False, log: IO[str] = sys.stderr) -> Converted:
    """Pass 3: write the stream files and the rejects report."""
    out = options.out
    pending: collections.deque[list[_Meta]] = collections.deque()
    samples = _selected(options, found, iter_samples(options.annotations, found.files, options.roots))
    written: dict[str, tuple[str, int]] = {}
    with contextlib.ExitStack() as stack:
        stream = stack.enter_context(RecordWriter(out / STREAM_NAME))
        rejects = stack.enter_context(atomic_write(out / REJECTS_NAME))
        writers: dict[str, tuple[str, RecordWriter]] = {}
        bar = tqdm(total=sum(group.samples for group in found.groups.values()), unit=" samples", desc="converting",
                   file=log, disable=not progress)
        chunks = _conversion_input(found, samples, options.convert.fps, pending)
        for result in convert_chunks(chunks, options.convert, "jsonl", options.workers):
            metas = pending.popleft()
            reported = {entry.index: entry for entry in result.reported}
            encoded = iter(result.encoded)
            for meta in metas:
                sample = meta.sample
                group = found.groups[sample.group]
                entry = reported.get(meta.sequence) if meta.sequence is not None else None
                problems = meta.problems + (entry.problems if entry else [])
                rejected = meta.sequence is None or (entry is not None and entry.rejected)
                if rejected:
                    group.rejected += 1
                else:
                    group.converted += 1
                    group.with_warnings += bool(problems)
                    data = next(encoded)
                    stream.write_encoded(data)
                    task = sample.group[1]
                    if task not in writers:
                        name = task_file_name(found.task_names[task])
                        writers[task] = name, stack.enter_context(RecordWriter(out / TASKS_DIR / name))
                    writers[task][1].write_encoded(data)
                if problems:
                    rejects.write(orjson.dumps(_reject_row(found, sample, rejected, problems)) + b"\n")
            bar.update(len(metas))
        bar.close()
        written = {task: (name, writer.count) for task, (name, writer) in writers.items()}
    return Converted(out / STREAM_NAME, written)


def _reject_row(found: Scan, sample: Sample, rejected: bool, problems: list[Problem]) -> dict:
    video = found.videos.get(sample.video) if sample.video is not None else None
    first = next((p for p in problems if p.severity == "error"), problems[0])
    return {
        "file": found.identities[sample.file][0],
        "index": sample.index,
        "task": sample.task,
        "source": sample.source,
        "video": (video.path or video.video_path) if video is not None else None,
        "status": "rejected" if rejected else "converted_with_warnings",
        "reason": f"{first.field}: {first.message}",
        "problems": [problem.as_dict() for problem in problems],
    }


def _previous_state(out: Path) -> dict | None:
    try:
        state = orjson.loads((out / SUMMARY_NAME).read_bytes())["state"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return state if isinstance(state, dict) and state.get("version") == _STATE_VERSION else None


def _outputs(out: Path, tasks: dict[str, tuple[str, int]]) -> list[Path]:
    return [out / STREAM_NAME, out / REJECTS_NAME, *(out / TASKS_DIR / name for name, _ in tasks.values())]


def _unchanged(out: Path, previous: dict | None, fingerprint: str) -> bool:
    """The last run had these inputs and its outputs are still as it wrote them."""
    if previous is None or previous.get("fingerprint") != fingerprint:
        return False
    identities = previous.get("outputs", {})
    tasks = {key: tuple(value) for key, value in previous.get("tasks", {}).items()}
    paths = _outputs(out, tasks)
    return all(identities.get(str(path.relative_to(out))) == _identity(path) for path in paths)


def prepare(options: PrepareOptions, progress: bool = False, log: IO[str] = sys.stderr, executor=None) -> dict:
    """Scan, check the videos, convert; returns the summary (also written to ``summary.json``).

    ``executor``: a ``streamo.cluster.RayExecutor`` (already entered) checks the videos in Ray
    tasks and writes ``ledger.jsonl`` (None: local worker processes).
    """
    out = options.out
    clock = [time.perf_counter()]
    found = scan(options, progress, log)
    clock.append(time.perf_counter())
    probes = check_videos(found.videos.values(), out, options.workers, progress, log, executor)
    clock.append(time.perf_counter())
    fingerprint = _fingerprint(options, found)
    previous = _previous_state(out)
    unchanged = _unchanged(out, previous, fingerprint)
    if unchanged:
        for source, task, converted, rejected, with_warnings in previous["counts"]:
            group = found.groups[(source, task)]
            group.converted, group.rejected, group.with_warnings = converted, rejected, with_warnings
        tasks = {key: tuple(value) for key, value in previous["tasks"].items()}
    else:
        tasks = convert(options, found, progress, log).tasks
        for name, _ in (previous or {}).get("tasks", {}).values():
            if name not in {kept for kept, _ in tasks.values()}:
                (out / TASKS_DIR / name).unlink(missing_ok=True)
    videos_path = write_report(found.videos.values(), out)
    clock.append(time.perf_counter())
    summary = _summary(options, found, probes, tasks, unchanged, videos_path)
    if executor is not None:
        summary["files"]["ledger"] = str((out / LEDGER_NAME).resolve())
    summary["seconds"] = dict(zip(("scan", "check_videos", "convert"), (round(b - a, 3) for a, b in zip(clock, clock[1:]))))
    summary["state"] = {
        "version": _STATE_VERSION,
        "fingerprint": fingerprint,
        "counts": [[*key, group.converted, group.rejected, group.with_warnings] for key, group in found.groups.items()],
        "tasks": {key: list(value) for key, value in tasks.items()},
        "outputs": {str(path.relative_to(out)): _identity(path) for path in _outputs(out, tasks)},
    }
    with atomic_write(out / SUMMARY_NAME) as handle:
        handle.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    return summary


def _rows(found: Scan, by: int) -> list[dict]:
    """Rows of the table per source (``by`` 0) or per task (1)."""
    names = found.source_names if by == 0 else found.task_names
    merged: dict[str, list] = {}
    for key, group in found.groups.items():
        entry = merged.setdefault(key[by], [0, 0, 0, set()])
        entry[0] += group.samples
        entry[1] += group.converted
        entry[2] += group.rejected
        entry[3] |= group.videos
    title = "source" if by == 0 else "task"
    return [{title: names[key], **count_row(samples, converted, rejected, (found.videos[v] for v in videos))}
            for key, (samples, converted, rejected, videos) in sorted(merged.items(), key=lambda item: names[item[0]].lower())]


def _summary(options: PrepareOptions, found: Scan, probes: ProbeCounts, tasks: dict[str, tuple[str, int]],
             unchanged: bool, videos_path: Path) -> dict:
    out = options.out
    groups = found.groups.values()
    total = count_row(sum(g.samples for g in groups), sum(g.converted for g in groups),
                      sum(g.rejected for g in groups), found.videos.values())
    task_files = {found.task_names[key]: (out / TASKS_DIR / name, count) for key, (name, count) in tasks.items()}
    converted = total["converted"]
    frames = round(total["hours"] * 3600 * options.convert.fps)
    return {
        "annotations": os.path.abspath(options.annotations),
        "annotation_files": len(found.files),
        "records": found.records,
        "selection": {"tasks": list(options.tasks), "sources": list(options.sources), "limit": options.limit,
                      "seed": options.seed if options.limit is not None else None},
        "total": total,
        "converted_with_warnings": sum(g.with_warnings for g in groups),
        "probes": dataclasses.asdict(probes),
        "conversion": "unchanged since the last run" if unchanged else "written",
        "by_source": _rows(found, 0),
        "by_task": _rows(found, 1),
        "by_source_and_task": [
            {"source": found.source_names[s], "task": found.task_names[t],
             **count_row(g.samples, g.converted, g.rejected, (found.videos[v] for v in g.videos))}
            for (s, t), g in found.groups.items()
        ],
        "files": {
            "stream": str((out / STREAM_NAME).resolve()),
            "tasks": {task: {"path": str(path.resolve()), "samples": count} for task, (path, count) in task_files.items()},
            "rejects": str((out / REJECTS_NAME).resolve()),
            "videos": str(videos_path.resolve()),
        },
        "frame_cache_estimate": {"frames": frames, "gb": round(frames * FRAME_KB / 2**20, 1)},
        "commands": commands(out, out / STREAM_NAME, task_files, options.task_weights, options.convert.fps)
        if converted else None,
    }
