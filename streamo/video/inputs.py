"""What ``--video`` names, opened as per-turn frames: a video file, a directory of frame pictures
(one per turn, in name order), a stream URL, or ``-`` for a live stream on standard input.

``is_url`` is the one rule for what counts as a stream URL: ``streamo stream`` and ``streamo client``
open such a string as a network stream, ``iter_frames`` reads it as a stream of unknown length,
and ``streamo serve --allow-urls`` plays no other. Any other string is a local path, so a string
that only looks like a URL (``https:/etc/x``, ``file:///x``) is never handed to FFmpeg as one.
Nothing here imports PyAV at import time: streaming from a warm frame cache needs none.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from ..errors import UsageError
from ..protocol import turn_count

URL_SCHEMES = frozenset({"http", "https", "rtsp", "rtsps", "rtmp"})
"""The network streams Streamo opens: what FFmpeg streams from over HTTP, RTSP and RTMP."""
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


class InputError(UsageError, ValueError):
    """A video, frame directory, URL or stream that cannot be read; the message names it (exit status 2)."""


@dataclass
class FrameInput:
    name: str
    turns: int | None
    """Number of turns when known in advance (files, directories); None for a live stream."""
    frames: Iterator[tuple[int, object]]
    """(turn, PIL image) in turn order."""


def is_url(source: object) -> bool:
    """A network stream PyAV opens itself: ``scheme://host...`` with a scheme of ``URL_SCHEMES``."""
    if not isinstance(source, str):
        return False
    try:
        parts = urlsplit(source)
    except ValueError:  # e.g. an unclosed IPv6 bracket: not a URL anyone can open
        return False
    return parts.scheme.lower() in URL_SCHEMES and bool(parts.netloc)


def open_input(source: str, fps: float, max_pixels: int, min_pixels: int) -> FrameInput:
    """The frames of ``source``; raises ``InputError`` naming it when it cannot be read."""
    from . import VideoError, iter_frames, probe_duration

    if source == "-":
        return FrameInput("stdin", None, _video_frames(iter_frames(sys.stdin.buffer, fps, max_pixels, min_pixels), "stdin"))
    if is_url(source):
        return FrameInput(source, None, _video_frames(iter_frames(source, fps, max_pixels, min_pixels), source))
    path = Path(source)
    if path.is_dir():
        pictures = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not pictures:
            raise InputError(f"{path}: no frame pictures ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return FrameInput(str(path), len(pictures), _picture_frames(pictures))
    if not path.is_file():
        if "://" in source:
            raise InputError(f"{source}: not a stream URL Streamo opens (schemes: {', '.join(sorted(URL_SCHEMES))})")
        raise InputError(f"{path}: no such file or directory")
    try:
        turns = turn_count(probe_duration(path), fps)
    except VideoError as exc:
        raise InputError(f"{path}: unreadable video ({exc})") from None
    if turns == 0:
        raise InputError(f"{path}: shorter than one frame at {fps:g} fps")
    return FrameInput(str(path), turns, _video_frames(iter_frames(path, fps, max_pixels, min_pixels, turns=turns), str(path)))


def _video_frames(frames, name: str) -> Iterator[tuple[int, object]]:
    from . import VideoError

    try:
        for sampled in frames:
            yield sampled.turn, sampled.image
    except VideoError as exc:
        raise InputError(f"{name}: {exc}") from None


def _picture_frames(pictures: list[Path]) -> Iterator[tuple[int, object]]:
    from PIL import Image, UnidentifiedImageError

    for turn, picture in enumerate(pictures):
        try:
            with Image.open(picture) as image:
                yield turn, image.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"{picture}: unreadable frame picture ({exc})") from None
