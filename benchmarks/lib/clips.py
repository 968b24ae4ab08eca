"""Synthetic clips the scripts decode and stream."""

from __future__ import annotations

from pathlib import Path

from streamo.video.synthetic import frame_times, write_clip


def synthetic_clip(path: str | Path, seconds: float, fps: float = 30.0, **encoding) -> None:
    """``seconds`` of constant-rate synthetic video at ``path`` (``encoding``: write_clip's size, GOP, B-frames)."""
    write_clip(path, frame_times(int(seconds * fps), fps), **encoding)
