"""Frame pictures pushed by clients: checked before decoding, decoded off the event loop.

The pixel limit is read from the picture's header before any pixel is decoded, so a small
file that claims a huge picture (a decompression bomb) costs nothing. Decoded frames are
brought to the model's pixel budget at once, so a waiting frame holds at most that much.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from ..engine.session import fit_to_budget
from .messages import ProtocolError

FORMATS = frozenset({"JPEG", "PNG", "WEBP"})


def decode_frame(data: bytes, max_frame_bytes: int, max_frame_pixels: int, min_pixels: int, max_pixels: int) -> Image.Image:
    """The RGB frame at the model's pixel budget; raises ``ProtocolError`` for anything else."""
    if len(data) > max_frame_bytes:
        raise ProtocolError("frame_too_large", f"frame of {len(data)} bytes; the limit is {max_frame_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(FORMATS))
            width, height = image.size
            if width * height > max_frame_pixels:
                raise ProtocolError(
                    "frame_too_many_pixels", f"frame of {width}x{height} pixels; the limit is {max_frame_pixels} pixels"
                )
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ProtocolError("frame_too_many_pixels", f"frame over {max_frame_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ProtocolError("not_an_image", f"not a readable JPEG, PNG or WebP picture ({exc})") from None
    try:
        return fit_to_budget(image, min_pixels, max_pixels)
    except ValueError as exc:
        raise ProtocolError("bad_frame", f"a picture the model cannot take: {exc}") from None
