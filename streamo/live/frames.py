"""Frame pictures pushed by clients: checked before decoding, decoded off the event loop.

The size limit (each side) is read from the picture's header before any pixel is decoded, so a small
file that claims a huge picture (a decompression bomb) costs nothing. Decoded frames are
brought to the model's pixel budget at once, so a waiting frame holds at most that much.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from ..video.sampling import fit_to_budget
from .messages import ProtocolError

FORMATS = frozenset({"JPEG", "PNG", "WEBP"})


def check_frame_bytes(data: bytes, max_frame_bytes: int) -> None:
    if len(data) > max_frame_bytes:
        raise ProtocolError("frame_too_large", f"frame of {len(data)} bytes; the limit is {max_frame_bytes}")


def decode_frame(data: bytes, max_frame_bytes: int, max_frame_side: int, min_pixels: int, max_pixels: int) -> Image.Image:
    """The RGB frame at the model's pixel budget; raises ``ProtocolError`` for anything else."""
    check_frame_bytes(data, max_frame_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(FORMATS))
            width, height = image.size
            if width > max_frame_side or height > max_frame_side:
                raise ProtocolError("frame_too_many_pixels",
                                    f"frame of {width}x{height} pixels; the limit is {max_frame_side} on each side")
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ProtocolError("frame_too_many_pixels", f"frame over {max_frame_side} pixels on a side") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        # The decoder's own words name its objects (reprs with addresses): the client gets the rule, not them.
        raise ProtocolError("not_an_image", "not a readable JPEG, PNG or WebP picture") from None
    try:
        return fit_to_budget(image, min_pixels, max_pixels)
    except ValueError as exc:
        raise ProtocolError("bad_frame", f"a picture the model cannot take: {exc}") from None
