"""How long a video really is.

Container metadata is often missing or wrong (re-muxed clips, truncated downloads), and
the turn count of a sample depends on it, so the duration is read from the packets at
the end of the video stream: a seek near the claimed end and a short demux (no decoding)
is enough, with a full demux scan when the metadata is missing or seeking fails. Checking a
whole dataset also decodes the first frame, the cheapest proof that the pictures are there.
"""

from __future__ import annotations

import os
from functools import lru_cache


_TAIL_SECONDS = 10.0


class VideoError(RuntimeError):
    """A video that cannot be opened or has no usable video stream."""


def _packet_span(container: "av.container.InputContainer", stream: "av.video.stream.VideoStream") -> tuple[float, float]:
    """(first pts, last pts + packet duration) in seconds over the packets demuxed from here on."""
    base = float(stream.time_base)
    first = last = None
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        start = packet.pts * base
        end = start + (packet.duration or 0) * base
        first = start if first is None else min(first, start)
        last = end if last is None else max(last, end)
    if first is None or last is None:
        raise VideoError("no video packets")
    return first, last


def probe_duration(path: str | os.PathLike[str], decode_first_frame: bool = False) -> float:
    """True duration in seconds of the first video stream of ``path``, measured from its first frame.

    With ``decode_first_frame`` the first frame is decoded too: packets can be intact while
    their payload is not (a damaged download), and only the decoder notices.
    """
    import av

    try:
        container = av.open(os.fspath(path))
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"cannot open {path}: {exc}") from None
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        if decode_first_frame:
            _decode_first_frame(container, stream, path)
        base = float(stream.time_base)
        start = stream.start_time * base if stream.start_time is not None else None
        claimed = None
        if stream.duration:
            claimed = stream.duration * base
        elif container.duration:
            claimed = container.duration / av.time_base
        try:
            if claimed is None or start is None:
                raise VideoError("no metadata")
            target = max(start + claimed - _TAIL_SECONDS, start)
            container.seek(int(target / base), stream=stream, backward=True, any_frame=False)
            _, last = _packet_span(container, stream)
            if last < target:
                raise VideoError("seek overshot")
        except (VideoError, av.FFmpegError):
            container.seek(0)
            first, last = _packet_span(container, stream)
            start = first if start is None else min(start, first)
        return max(last - start, 0.0)


def _decode_first_frame(
    container: "av.container.InputContainer", stream: "av.video.stream.VideoStream", path: str | os.PathLike[str]
) -> None:
    import av

    try:
        for _ in container.decode(stream):
            break
        else:
            raise VideoError(f"{path}: no frame decodes")
    except av.FFmpegError as exc:
        raise VideoError(f"{path}: first frame does not decode: {exc}") from None


@lru_cache(maxsize=4096)
def cached_duration(path: str) -> float:
    """``probe_duration`` memoised per process: many samples share one video."""
    return probe_duration(path)
