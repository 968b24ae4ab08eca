"""Converting and validating whole files: parallel, streaming, with a rejects report.

Every input sample ends up converted or in the rejects report with its reasons; the
report also lists samples converted with warnings. Work is shipped to worker processes
in chunks of unparsed lines and comes back already serialised, so the main process
only reads and writes.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson
from tqdm import tqdm

from .annotation import Problem
from .convert import ConvertOptions, convert_sample
from .jsonfiles import InvalidRecord, RecordWriter, atomic_write, encode_record, iter_records, parse_record
from .video.probe import cached_duration

CHUNK_SIZE = 256
MAX_PRINTED_PROBLEMS = 20


@dataclass
class SampleResult:
    """A sample that had problems (converted with warnings, or rejected)."""

    index: int
    problems: list[Problem]
    video_name: Any = None
    rejected: bool = False


@dataclass
class ChunkResult:
    """One worker chunk: encoded outputs in input order, and only the samples with problems
    (so that a clean chunk crosses the process boundary as little more than bytes)."""

    size: int
    encoded: list[bytes]
    reported: list[SampleResult]


@dataclass
class Summary:
    total: int = 0
    converted: int = 0
    rejected: int = 0
    with_warnings: int = 0

    def line(self) -> str:
        return (
            f"{self.total} samples: {self.converted} converted "
            f"({self.with_warnings} with warnings), {self.rejected} rejected"
        )


def convert_chunk(args: tuple[list[tuple[int, Any]], ConvertOptions, str | None]) -> ChunkResult:
    """Convert one chunk of ``(index, record)`` pairs (records parsed or ``Unparsed``)."""
    chunk, options, fmt = args
    encoded, reported = [], []
    for index, item in chunk:
        try:
            data = parse_record(item)
        except InvalidRecord as exc:
            reported.append(SampleResult(index, [Problem("error", "sample", str(exc))], rejected=True))
            continue
        outcome = convert_sample(data, options, cached_duration)
        if fmt and outcome.sample is not None:
            encoded.append(encode_record(outcome.sample, fmt))
        if outcome.problems:
            name = data.get("video_name", data.get("video_path")) if isinstance(data, dict) else None
            reported.append(SampleResult(index, outcome.problems, name, outcome.rejected))
    return ChunkResult(len(chunk), encoded, reported)


def _chunks(records: Iterable[Any], size: int) -> Iterator[list[tuple[int, Any]]]:
    numbered = enumerate(records)
    while chunk := list(itertools.islice(numbered, size)):
        yield chunk


def convert_chunks(
    chunks: Iterable[list[tuple[int, Any]]], options: ConvertOptions, fmt: str | None, workers: int
) -> Iterator[ChunkResult]:
    """``convert_chunk`` over ``chunks`` in worker processes, results in input order.

    ``chunks`` is consumed in the calling thread and at most two chunks per worker run ahead
    of the results, so a caller may keep per-chunk bookkeeping beside it and memory stays
    bounded however long the input is.
    """
    chunks = iter(chunks)
    head = list(itertools.islice(chunks, 2))
    if workers <= 1 or len(head) < 2:  # a pool costs more than it saves on one chunk
        yield from (convert_chunk((chunk, options, fmt)) for chunk in itertools.chain(head, chunks))
        return
    context = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    with context.Pool(workers) as pool:
        window: collections.deque = collections.deque()
        for chunk in itertools.chain(head, chunks):
            window.append(pool.apply_async(convert_chunk, ((chunk, options, fmt),)))
            if len(window) >= 2 * workers:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()


def default_rejects_path(output: str | os.PathLike[str]) -> Path:
    output = Path(output)
    stem = output.name.removesuffix(".jsonl").removesuffix(".json")
    return output.with_name(f"{stem}.rejects.jsonl")


def process_file(
    input_path: str | os.PathLike[str],
    options: ConvertOptions,
    output: str | os.PathLike[str] | None,
    rejects: str | os.PathLike[str] | None,
    workers: int = 1,
    progress: bool | None = None,
    log=None,
) -> Summary:
    """Convert (``output`` given) or only validate (``output`` None) one raw file.

    Problems are printed as ``FILE: sample N: FIELD: message`` (the first few) and all of
    them go to the ``rejects`` JSONL report when a path is given.
    """
    log = log or sys.stderr
    input_path = Path(input_path)
    summary = Summary()
    printed = 0
    writer = RecordWriter(output) if output is not None else None
    report_context = atomic_write(rejects, "wb") if rejects is not None else None
    report = report_context.__enter__() if report_context else None
    ok = False
    try:
        if writer:
            writer.__enter__()
        bar = tqdm(unit=" samples", disable=progress is False or (progress is None and not log.isatty()), file=log)
        chunks = _chunks(iter_records(input_path, lazy=True), CHUNK_SIZE)
        for chunk in convert_chunks(chunks, options, writer.format if writer else None, workers):
            bar.update(chunk.size)
            summary.total += chunk.size
            rejected = sum(result.rejected for result in chunk.reported)
            summary.rejected += rejected
            summary.converted += chunk.size - rejected
            summary.with_warnings += len(chunk.reported) - rejected
            if writer:
                for encoded in chunk.encoded:
                    writer.write_encoded(encoded)
            for result in chunk.reported:
                for problem in result.problems:
                    if printed < MAX_PRINTED_PROBLEMS:
                        print(f"{problem.severity}: {problem.describe(str(input_path), result.index)}", file=log)
                    printed += 1
                if report is not None:
                    entry = {
                        "index": result.index,
                        "video_name": result.video_name,
                        "status": "rejected" if result.rejected else "converted_with_warnings",
                        "problems": [p.as_dict() for p in result.problems],
                    }
                    report.write(orjson.dumps(entry) + b"\n")
        bar.close()
        ok = True
    finally:
        exc_info = (None, None, None) if ok else sys.exc_info()
        if writer:
            writer.__exit__(*exc_info)
        if report_context:
            report_context.__exit__(*exc_info)
    if printed > MAX_PRINTED_PROBLEMS:
        where = f"; all in {rejects}" if rejects else "; --rejects FILE lists them all"
        print(f"... {printed - MAX_PRINTED_PROBLEMS} more problems not shown{where}", file=log)
    return summary
