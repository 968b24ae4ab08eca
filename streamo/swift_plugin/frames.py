"""Where the template's frames come from: the frame cache, or the video decoded on demand.

Training reads one frame per ``<stream>`` turn. With ``STREAMO_FRAME_CACHE`` set the frames
are the cache's JPEGs (extracted once per video, ahead of time by ``streamo frames`` or on
first use); otherwise each sample's video is decoded on the fly, up to the last turn it
needs. Both paths use the same sampling rule and pixel budget, so they give the same frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from PIL import Image

from ..video import MAX_PIXELS, MIN_PIXELS, FrameCache, VideoError, iter_frames

FRAME_CACHE_ENV = "STREAMO_FRAME_CACHE"
"""Directory of the frame cache; unset means decoding videos on the fly."""
MAX_PIXELS_ENV = "MAX_PIXELS"
MIN_PIXELS_ENV = "MIN_PIXELS"
"""Per-frame pixel budget, the variable names Qwen2.5-VL tooling already uses."""


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer") from None
    if value <= 0:
        raise ValueError(f"environment variable {name}={text!r} must be > 0")
    return value


@dataclass
class FrameSource:
    """Loads the frames of chosen turns of a video, at a given fps and pixel budget."""

    cache_dir: str | None = None
    max_pixels: int = MAX_PIXELS
    min_pixels: int = MIN_PIXELS
    _caches: dict[float, FrameCache] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, max_pixels: int | None = None) -> "FrameSource":
        """Settings from the environment; an explicit ``max_pixels`` (``--max_pixels``) wins."""
        return cls(
            cache_dir=os.environ.get(FRAME_CACHE_ENV) or None,
            max_pixels=max_pixels or _env_int(MAX_PIXELS_ENV, MAX_PIXELS),
            min_pixels=_env_int(MIN_PIXELS_ENV, MIN_PIXELS),
        )

    def cache(self, fps: float) -> FrameCache | None:
        if self.cache_dir is None:
            return None
        if fps not in self._caches:
            self._caches[fps] = FrameCache(self.cache_dir, fps, self.max_pixels, self.min_pixels)
        return self._caches[fps]

    def frames(self, video: str, fps: float, turns: Sequence[int]) -> list[Image.Image]:
        """The frames of ``turns`` (in that order). Raises ``VideoError`` naming the video."""
        if not turns:
            return []
        cache = self.cache(fps)
        if cache is not None:
            paths = cache.ensure(video).paths
            missing = [turn for turn in turns if turn >= len(paths)]
            if missing:
                raise VideoError(f"{video}: turn {missing[0]} is past its {len(paths)} frames at {fps:g} fps")
            images = []
            for turn in turns:
                with Image.open(paths[turn]) as image:
                    images.append(image.convert("RGB"))
            return images
        wanted = set(turns)
        found: dict[int, Image.Image] = {}
        for sampled in iter_frames(video, fps, self.max_pixels, self.min_pixels, turns=max(wanted) + 1):
            if sampled.turn in wanted:
                found[sampled.turn] = sampled.image
        missing = sorted(wanted - found.keys())
        if missing:
            raise VideoError(f"{video}: no frame for turn {missing[0]} at {fps:g} fps")
        return [found[turn] for turn in turns]
