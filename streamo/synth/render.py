"""Drawing scenes into frames and encoding them as small H.264 files with PyAV."""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from .scene import COLOURS, ROWS, Scene, SynthOptionError

BACKGROUND = (40, 40, 48)
CRF = 28
"""Flat colours survive strong compression: a 30-second clip stays in the tens of kilobytes."""
EXPOSURE = 0.5
"""Seconds of scene each frame integrates, like a camera shutter left open: a moving shape is
smeared along its path and a shape at rest is sharp, so "still moving" and "has stopped" can
be read off the frame that the label is about (the first sharp frame after a move is its
answer turn). Changes happen at half seconds and sampled frames sit on whole seconds, so no
sampled exposure contains an instant change."""
SUBFRAMES = 6
"""Instants averaged over an exposure while something moves."""
MOVING_BACKGROUND = (40, 40, 140)
CHANGED_BACKGROUND = (140, 40, 48)
"""Backgrounds of a timing-cue video (``Canvas(timing_cue=True)``): something moves during the
exposure, or the picture changed within the last second and is at rest again."""


class Canvas:
    """Pre-computed pixel grids and shape masks for one frame size."""

    def __init__(self, width: int, height: int, timing_cue: bool = False):
        if width < 32 or height < 32 or width % 2 or height % 2:
            raise SynthOptionError(f"frame size must be even and at least 32x32, got {width}x{height}")
        self.width, self.height = width, height
        self.timing_cue = timing_cue
        self.radius = max(int(min(width / 8, height / 8)), 4)
        size = 2 * self.radius + 1
        dy, dx = np.mgrid[-self.radius : self.radius + 1, -self.radius : self.radius + 1].astype(np.float32)
        r = float(self.radius)
        self.masks = {
            "circle": dx**2 + dy**2 <= r**2,
            "square": (np.abs(dx) <= 0.8 * r) & (np.abs(dy) <= 0.8 * r),
            "triangle": (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) * 0.55),
            "diamond": np.abs(dx) + np.abs(dy) <= r,
        }
        assert all(mask.shape == (size, size) for mask in self.masks.values())

    def centre(self, x: float, row: int) -> tuple[int, int]:
        """Pixel centre of a shape at column position ``x`` (0..2) in ``row``."""
        margin_x = self.radius + 2
        margin_y = self.radius + 2
        cx = margin_x + (self.width - 2 * margin_x) * x / 2
        cy = margin_y + (self.height - 2 * margin_y) * row / (ROWS - 1)
        return int(round(cx)), int(round(cy))

    def background(self, scene: Scene, t: float) -> tuple[int, int, int]:
        """The background of the frame at ``t``: plain, or with ``timing_cue`` the colour that
        says whether something moves or just changed. The cue is a diagnostic: it covers most
        of the frame, so any vision encoder passes it on to every visual token, and a model
        that still misses the timing cannot blame its eyes."""
        if not self.timing_cue:
            return BACKGROUND
        if scene.moving_between(t - EXPOSURE, t):
            return MOVING_BACKGROUND
        if any(t - 1 < c.start <= t or t - 1 < c.end <= t for c in scene.changes):
            return CHANGED_BACKGROUND
        return BACKGROUND

    def draw(self, scene: Scene, t: float) -> np.ndarray:
        """The frame at ``t``: the scene averaged over the exposure ``(t - EXPOSURE, t]``."""
        background = self.background(scene, t)
        if not scene.moving_between(t - EXPOSURE, t):
            return self._draw_instant(scene, t, background)
        total = np.zeros((self.height, self.width, 3), dtype=np.float32)
        for step in range(SUBFRAMES):
            total += self._draw_instant(scene, t - EXPOSURE * step / (SUBFRAMES - 1), background)
        return np.rint(total / SUBFRAMES).astype(np.uint8)

    def _draw_instant(self, scene: Scene, t: float, background: tuple[int, int, int]) -> np.ndarray:
        frame = np.empty((self.height, self.width, 3), dtype=np.uint8)
        frame[:] = background
        r = self.radius
        for shape in scene.state_at(t):
            cx, cy = self.centre(shape.x, shape.row)
            patch = frame[cy - r : cy + r + 1, cx - r : cx + r + 1]
            patch[self.masks[shape.kind]] = COLOURS[shape.colour]
        return frame


def encode_scene(scene: Scene, path: str | os.PathLike[str], fps: float, width: int, height: int, timing_cue: bool = False) -> None:
    """Write the scene as an H.264 MP4 of exactly ``scene.duration`` seconds, atomically.

    One encoder thread and no B-frames keep the bytes identical from run to run for the same
    scene: with B-frames this x264 build reads memory it never wrote, so a process that had
    reused its heap could write other bytes for the same frames.
    """
    import av

    canvas = Canvas(width, height, timing_cue)
    rate = Fraction(fps).limit_denominator(1000)
    frames = round(scene.duration * rate)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_count = 1
            stream.options = {"crf": str(CRF), "preset": "medium", "x264-params": "bframes=0"}
            for number in range(frames):
                frame = av.VideoFrame.from_ndarray(canvas.draw(scene, float(number / rate)), format="rgb24")
                frame.pts = number
                frame.time_base = 1 / rate
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
