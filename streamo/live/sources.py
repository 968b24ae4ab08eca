"""Server-side sources: which files and URLs a session may ask the server to play.

A path is taken relative to each ``--sources`` directory in turn and resolved (symlinks
included) before it is checked, so ``..``, a symlink pointing out and an absolute path
elsewhere all land outside every root and are refused. URLs are refused unless the server
was started with ``--allow-urls``, and then only what ``video.inputs.is_url`` calls a stream URL
(the same rule ``streamo stream`` opens ``--video`` by).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..annotation import validate_raw
from ..jsonfiles import InvalidRecord, iter_records
from ..video.inputs import URL_SCHEMES, is_url
from .messages import ProtocolError, Source, excerpt

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ts"})
MAX_LISTED = 1000
RAW_NAME = "raw_data.json"
MAX_RAW_BYTES = 16 * 1024 * 1024
MAX_QUESTION_CHARS = 2000

log = logging.getLogger("streamo.live")


def resolve_source(request: Source, roots: list[Path], allow_urls: bool) -> str:
    """The file path or URL to decode; raises ``ProtocolError('source_refused')``."""
    if request.url is not None:
        if not allow_urls:
            raise ProtocolError("source_refused", "this server plays no URLs (it was started without --allow-urls)")
        if not is_url(request.url):
            raise ProtocolError("source_refused", f"URL scheme not allowed; use one of {', '.join(sorted(URL_SCHEMES))}")
        return request.url
    if not roots:
        raise ProtocolError("source_refused", "this server plays no files (it was started without --sources)")
    for root in roots:
        try:  # any filesystem answer (a name too long, a loop, a NUL) is a refusal, never a fault
            candidate = (root / request.path).resolve()
            if candidate.is_relative_to(root) and candidate.is_file():
                return str(candidate)
        except (OSError, ValueError):
            continue
    raise ProtocolError("source_refused", f"{excerpt(request.path)} is not a file under the server's source directories")


def list_sources(roots: list[Path]) -> list[str]:
    """Video files under the roots (relative paths, at most ``MAX_LISTED``), for a client to pick from."""
    found: list[str] = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file() and path.resolve().is_relative_to(root):
                found.append(path.relative_to(root).as_posix())
                if len(found) >= MAX_LISTED:
                    return found
    return found


def list_samples(roots: list[Path]) -> list[dict[str, Any]]:
    """The raw samples of each ``raw_data.json`` under the roots whose video is a listed source
    (``video_path`` taken relative to the file's folder, as ``streamo convert --video-prefix``
    takes it), so the page can name the sample a session plays for its predictions download.
    ``sample`` is the sample's ``id`` or its position in its file, as ``streamo eval`` reads it.
    A raw file that cannot be read is logged with its path and skipped."""
    found: list[dict[str, Any]] = []
    for root in roots:
        for raw_file in sorted(root.rglob(RAW_NAME)):
            try:
                if not raw_file.is_file() or not raw_file.resolve().is_relative_to(root):
                    continue
                if raw_file.stat().st_size > MAX_RAW_BYTES:
                    log.warning("sources: %s is over %d MiB; its samples are not offered", raw_file, MAX_RAW_BYTES >> 20)
                    continue
                records = list(iter_records(raw_file))
            except (OSError, InvalidRecord, ValueError) as exc:
                log.warning("sources: %s cannot be read (%s); its samples are not offered", raw_file, exc)
                continue
            for index, record in enumerate(records):
                raw, _ = validate_raw(record)
                if raw is None:
                    continue
                try:
                    video = (raw_file.parent / raw.video_path).resolve()
                    if not (video.is_relative_to(root) and video.is_file() and video.suffix.lower() in VIDEO_SUFFIXES):
                        continue
                except (OSError, ValueError):
                    continue
                found.append({
                    "source": video.relative_to(root).as_posix(),
                    "sample": record.get("id", index),
                    "task_type": str(record.get("task_type", "")),
                    "questions": [question.content[:MAX_QUESTION_CHARS] for question in raw.question],
                })
                if len(found) >= MAX_LISTED:
                    return found
    return found
