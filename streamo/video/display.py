"""How a decoded picture is shown: the video's display orientation and pixel aspect ratio.

Phones store portrait video as landscape pictures plus a display matrix (MP4/MOV ``tkhd``,
Matroska projection) that turns them upright; anamorphic video stores non-square pixels
(a sample aspect ratio). Players and browsers honour both, so every path that makes frames
does too, through ``Display``: the size a video is reported at and the pictures the model
sees are what a player shows. The display matrix is read from the decoded frame (FFmpeg
attaches the container's matrix to each frame), the sample aspect ratio from the stream.

Rotations are quarter turns, with or without a mirror (the eight orientations EXIF and phones
use); a matrix that rotates by another angle is taken to its nearest quarter turn. Non-square
pixels widen the picture (or make it taller when narrower than square), never shrink it, as
Chromium sizes such video, so a file uploaded in the page and the same file decoded here
have one size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction

from PIL import Image

_T = Image.Transpose
_SWAPPING = frozenset({_T.ROTATE_90, _T.ROTATE_270, _T.TRANSPOSE, _T.TRANSVERSE})
# (x' sign, y' sign) of an axis-aligned matrix, and of a swapping one: the picture operation.
_ALIGNED = {(1, 1): None, (-1, 1): _T.FLIP_LEFT_RIGHT, (1, -1): _T.FLIP_TOP_BOTTOM, (-1, -1): _T.ROTATE_180}
_SWAPPED = {(1, -1): _T.ROTATE_90, (-1, 1): _T.ROTATE_270, (1, 1): _T.TRANSPOSE, (-1, -1): _T.TRANSVERSE}


def _sign(value: int) -> int:
    return -1 if value < 0 else 1


def transpose_of(matrix: bytes | None) -> Image.Transpose | None:
    """The picture operation of an FFmpeg display matrix (nine native-endian int32, ``a b u c d v x y w``,
    mapping a source point (p, q) to (a·p + c·q + x, b·p + d·q + y), y pointing down)."""
    if matrix is None or len(matrix) < 36:
        return None
    a, b, _, c, d, *_ = struct.unpack("=9i", matrix[:36])
    if abs(a) + abs(d) >= abs(b) + abs(c):
        return _ALIGNED[_sign(a), _sign(d)]
    return _SWAPPED[_sign(c), _sign(b)]


@dataclass(frozen=True)
class Display:
    """The display transform of one video: a quarter-turn/mirror ``transpose`` (None: stored
    upright) and the ``sample_aspect`` ratio of its pixels (width over height)."""

    transpose: Image.Transpose | None = None
    sample_aspect: Fraction = Fraction(1)

    @classmethod
    def of(cls, frame, sample_aspect: Fraction | None = None) -> "Display":
        """The display of a decoded PyAV frame, given its stream's sample aspect ratio (None or 0: square)."""
        matrix = frame.side_data.get("DISPLAYMATRIX")
        square = sample_aspect is None or sample_aspect <= 0
        return cls(transpose_of(bytes(matrix) if matrix is not None else None),
                   Fraction(1) if square else Fraction(sample_aspect))

    @property
    def swaps_sides(self) -> bool:
        return self.transpose in _SWAPPING

    def size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) shown for a ``width`` × ``height`` decoded picture."""
        if self.sample_aspect > 1:
            width = round(width * self.sample_aspect)
        elif self.sample_aspect < 1:
            height = round(height / self.sample_aspect)
        return (height, width) if self.swaps_sides else (width, height)

    def stored_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) to scale a decoded picture to so that ``orient`` makes it ``width`` × ``height``."""
        return (height, width) if self.swaps_sides else (width, height)

    def orient(self, image: Image.Image) -> Image.Image:
        """``image`` (already at its stored size) turned as a player shows it."""
        return image if self.transpose is None else image.transpose(self.transpose)
