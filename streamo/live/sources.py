"""Server-side sources: which files and URLs a session may ask the server to play.

A path is taken relative to each ``--sources`` directory in turn and resolved (symlinks
included) before it is checked, so ``..``, a symlink pointing out and an absolute path
elsewhere all land outside every root and are refused. URLs are refused unless the server
was started with ``--allow-urls``, and then only what ``video.inputs.is_url`` calls a stream URL
(the same rule ``streamo stream`` opens ``--video`` by).
"""

from __future__ import annotations

from pathlib import Path

from ..video.inputs import URL_SCHEMES, is_url
from .messages import ProtocolError, Source, excerpt

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ts"})
MAX_LISTED = 1000


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
