"""How long a video really is.

Container metadata is often missing or wrong (re-muxed clips, truncated downloads), and
the turn count of a sample depends on it, so the duration is read from the packets at
the end of the video stream: a seek near the claimed end and a short demux (no decoding)
is enough, with a full demux scan when the metadata is missing or seeking fails. Checking a
whole dataset also decodes the first frame, the cheapest proof that the pictures are there,
which also gives the size a player shows (``Display``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from .display import Display

if TYPE_CHECKING:  # annotations only: PyAV is imported where video is decoded
    import av

_TAIL_SECONDS = 10.0


class VideoError(RuntimeError):
    """A video that cannot be opened or has no usable video stream."""


class VideoInfo(NamedTuple):
    """What probing found: the true ``duration`` (s from the first frame); the ``width`` and
    ``height`` a player shows (display orientation and pixel aspect applied; None unless the
    first frame was decoded); ``cut_at``, the second where the file breaks off (a damaged or
    cut packet, a read error, or a container claiming more than the packets hold), None when whole."""

    duration: float
    width: int | None = None
    height: int | None = None
    cut_at: float | None = None


# A container claiming this much more than its packets hold is taken as cut off.
_CLAIM_SLACK_SECONDS = 1.0


def _packet_span(container: "av.container.InputContainer", stream: "av.video.stream.VideoStream") -> tuple[float, float, bool]:
    """(first pts, last pts + packet duration, whether a packet was damaged or reading failed)
    in seconds over the packets demuxed from here on."""
    import av

    base = float(stream.time_base)
    first = last = None
    broken = False
    try:
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            start = packet.pts * base
            end = start + (packet.duration or 0) * base
            first = start if first is None else min(first, start)
            last = end if last is None else max(last, end)
            broken = broken or packet.is_corrupt
    except av.FFmpegError:
        broken = True
    if first is None or last is None:
        raise VideoError("no video packets")
    return first, last, broken


def probe_duration(path: str | os.PathLike[str]) -> float:
    """True duration in seconds of the first video stream of ``path``, measured from its first
    frame, from its packets alone (nothing is decoded)."""
    return probe(path).duration


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """``probe`` with the first frame decoded: packets can be intact while their payload is not
    (a damaged download), and only the decoder notices; the frame also gives the shown size."""
    return probe(path, decode_first_frame=True)


def probe(path: str | os.PathLike[str], decode_first_frame: bool = False) -> VideoInfo:
    """Duration, shown size (with ``decode_first_frame``) and break-off point of ``path``'s first video stream."""
    import av

    try:
        container = av.open(os.fspath(path))
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"cannot open {path}: {exc}") from None
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        width = height = None
        if decode_first_frame:
            width, height = _first_frame_size(container, stream, path)
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
            _, last, broken = _packet_span(container, stream)
            if last < target:
                raise VideoError("seek overshot")
        except (VideoError, av.FFmpegError):
            container.seek(0)
            first, last, broken = _packet_span(container, stream)
            start = first if start is None else min(start, first)
        duration = max(last - start, 0.0)
        cut = broken or (claimed is not None and claimed > duration + _CLAIM_SLACK_SECONDS)
        return VideoInfo(duration, width, height, duration if cut else None)


def _first_frame_size(
    container: "av.container.InputContainer", stream: "av.video.stream.VideoStream", path: str | os.PathLike[str]
) -> tuple[int, int]:
    import av

    try:
        for frame in container.decode(stream):
            return Display.of(frame, stream.sample_aspect_ratio).size(frame.width, frame.height)
        raise VideoError(f"{path}: no frame decodes")
    except av.FFmpegError as exc:
        raise VideoError(f"{path}: first frame does not decode: {exc}") from None


@lru_cache(maxsize=4096)
def cached_duration(path: str) -> float:
    """``probe_duration`` memoised per process: many samples share one video."""
    return probe_duration(path)
