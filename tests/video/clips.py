"""Synthetic clips shared by the video tests (small and short, so the suite stays fast)."""

from __future__ import annotations

import bisect
import struct
from pathlib import Path

from streamo.protocol import turn_count
from streamo.video.synthetic import frame_times, write_clip


def make_clip(directory: Path, name: str, fps: float, seconds: float, jitter: float = 0.0, **options) -> tuple[Path, list[float]]:
    path = directory / name
    times = frame_times(int(round(fps * seconds)), fps, jitter)
    write_clip(path, times, **options)
    return path, times


def expected_frames(times: list[float], fps: float, turns: int) -> list[int]:
    """Index of the frame the rule picks for each turn: the first at or after k/fps."""
    return [bisect.bisect_left([t + 1e-6 for t in times], k / fps) for k in range(turns)]


def true_turns(times: list[float], fps: float) -> int:
    """Turns of a clip whose last frame lasts as long as the one before it."""
    return turn_count(times[-1] + (times[-1] - times[-2]), fps)


def set_matroska_duration(path: Path, seconds: float) -> None:
    """Overwrite the container's Segment duration (milliseconds, an 8-byte float) with a lie."""
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89\x88") + 3  # EBML id of Duration, size 8
    data[at:at + 8] = struct.pack(">d", seconds * 1000)
    path.write_bytes(bytes(data))
