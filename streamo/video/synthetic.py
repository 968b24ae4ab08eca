"""Synthetic H.264 clips whose pictures carry their own frame number.

Tests and benchmarks need videos with known timing (constant, variable, lying metadata,
cut short) and a way to tell, after decoding, JPEG and resizing, which frame was picked.
Each picture shows its frame number as a 4×4 grid of black/white blocks on its left half
(16 bits, readable at any size), beside a drifting noise texture that gives the encoder
realistic work.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Sequence

import numpy as np
from PIL import Image

CODE_BITS = 16
_GRID = 4
_TIME_BASE = Fraction(1, 90000)


def frame_times(count: int, fps: float, jitter: float = 0.0, seed: int = 0) -> list[float]:
    """Presentation times in seconds: ``count`` frames at ``fps``; ``jitter`` > 0 varies each interval
    by up to ±jitter of its nominal length (variable frame rate), on a 90 kHz clock."""
    rng = np.random.default_rng(seed)
    step = 90000 / fps
    ticks, now = [], 0.0
    for _ in range(count):
        ticks.append(int(round(now)))
        now += step * (1 + rng.uniform(-jitter, jitter)) if jitter else step
    return [tick / 90000 for tick in ticks]


def _picture(number: int, texture: np.ndarray, width: int, height: int) -> np.ndarray:
    picture = np.empty((height, width, 3), np.uint8)
    half = width // 2
    picture[:, half:] = np.roll(texture, 3 * number, axis=1)[:, : width - half, None]
    cell_h, cell_w = height // _GRID, half // _GRID
    picture[:, :half] = 0
    for bit in range(CODE_BITS):
        if number >> bit & 1:
            row, col = divmod(bit, _GRID)
            picture[row * cell_h:(row + 1) * cell_h, col * cell_w:(col + 1) * cell_w] = 255
    return picture


def write_clip(
    path: str | os.PathLike[str],
    times: Sequence[float],
    width: int = 192,
    height: int = 144,
    gop: int = 250,
    bframes: int = 2,
    preset: str = "veryfast",
    container_format: str | None = None,
    options: dict[str, str] | None = None,
) -> None:
    """Encode one frame per entry of ``times`` (seconds), frame i showing the number i."""
    import av

    texture = np.random.default_rng(1).integers(0, 256, (height, width), dtype=np.uint8)
    with av.open(os.fspath(path), "w", format=container_format, options=options or {}) as container:
        nominal = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 30
        stream = container.add_stream("libx264", rate=Fraction(round(nominal * 1000), 1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = _TIME_BASE
        stream.options = {"g": str(gop), "keyint_min": str(min(gop, 25)), "bf": str(bframes), "preset": preset}
        for number, moment in enumerate(times):
            frame = av.VideoFrame.from_ndarray(_picture(number, texture, width, height), format="rgb24")
            frame.pts = int(round(moment * 90000))
            frame.time_base = _TIME_BASE
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def read_code(image: Image.Image) -> int:
    """The frame number drawn into ``image`` by ``write_clip`` (after any resize or JPEG)."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    height, width = grey.shape
    cell_h, cell_w = height / _GRID, (width / 2) / _GRID
    number = 0
    for bit in range(CODE_BITS):
        row, col = divmod(bit, _GRID)
        top, left = int((row + 0.3) * cell_h), int((col + 0.3) * cell_w)
        bottom, right = int((row + 0.7) * cell_h), int((col + 0.7) * cell_w)
        if grey[top:bottom, left:right].mean() > 128:
            number |= 1 << bit
    return number
