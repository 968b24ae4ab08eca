"""Exact per-turn frame sampling, shared by frame extraction, training and live inference.

The rule: the frame for turn k is the first frame whose presentation time, counted from the
first frame, is at least k/fps; a video yields ``turn_count(D, fps)`` turns, D being the true
duration that the converter also uses (``probe_duration``). Frames are chosen by timestamps,
never by index arithmetic, so variable-frame-rate and 29.97 fps video stay aligned with the
time tags.

Decoding is sequential (one pass, decoder threads on): at 1 fps on long-GOP H.264 this beats
seeking several times over. The frame cache may instead decode a file in pieces at once
(``segments``: the same frames, for less CPU than frame threads). Only kept frames are converted to RGB and scaled, in one swscale
call, to the model's pixel budget. Frames that come before the next wanted time and that no
other frame references are not decoded at all (the decoder's non-reference skip), which keeps
the choice exact because such a frame could never be picked.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from typing import TYPE_CHECKING, Iterator, NamedTuple

from PIL import Image

from ..protocol import turn_count
from .display import Display
from .inputs import is_url
from . import segments
from .probe import VideoError, probe

if TYPE_CHECKING:  # annotations only: PyAV is imported where video is decoded
    import av

log = logging.getLogger("streamo.video")

PATCH_FACTOR = 28
"""Qwen2.5-VL: 14-pixel patches merged 2×2, so frame sides are multiples of 28."""
MAX_PIXELS = 128 * PATCH_FACTOR * PATCH_FACTOR
"""100352 pixels = 128 visual tokens per frame."""
MIN_PIXELS = 4 * PATCH_FACTOR * PATCH_FACTOR
"""3136 pixels = 4 visual tokens, Qwen2.5-VL's own lower bound for images."""
MAX_ASPECT_RATIO = 200

# A turn whose time lies beyond the last decodable frame by less than this many turn
# lengths still gets that frame: a cut-off final GOP loses a few frames that the
# packet-based duration still counts.
_TAIL_TOLERANCE_TURNS = 1.0
_EPS = 1e-6
_DECODER_BYTES = 256 * 2**20
# Area averaging: alias-free when shrinking to the pixel budget, and cheaper than bicubic.
_INTERPOLATION = "AREA"


def smart_resize(
    height: int, width: int, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS, factor: int = PATCH_FACTOR
) -> tuple[int, int]:
    """Qwen2.5-VL's frame size rule: sides divisible by ``factor``, area within the budget,
    aspect ratio kept as far as rounding allows. Returns ``(height, width)``.

    Identical to ``qwen_vl_utils.smart_resize`` except that a side never shrinks below
    ``factor`` (theirs can return 0 for extreme aspect ratios).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels {min_pixels} exceeds max_pixels {max_pixels}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio of {width}x{height} exceeds {MAX_ASPECT_RATIO}")
    new_h = max(factor, round(height / factor) * factor)
    new_w = max(factor, round(width / factor) * factor)
    if new_h * new_w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        new_h = max(factor, math.floor(height / scale / factor) * factor)
        new_w = max(factor, math.floor(width / scale / factor) * factor)
    elif new_h * new_w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * scale / factor) * factor
        new_w = math.ceil(width * scale / factor) * factor
    return new_h, new_w


def fit_to_budget(image: Image.Image, min_pixels: int, max_pixels: int) -> Image.Image:
    """RGB, sides multiples of 28 within the pixel budget (frames from ``iter_frames``
    already are; other pictures are resized like Qwen2.5-VL's image rule)."""
    image = image.convert("RGB")
    height, width = smart_resize(image.height, image.width, min_pixels, max_pixels)
    if (height, width) != (image.height, image.width):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return image


class SampledFrame(NamedTuple):
    """One turn's frame: its turn index, its presentation time (s from the first frame), the picture."""

    turn: int
    time: float
    image: Image.Image


def _is_file(source) -> bool:
    """A local file (its length is known up front), as opposed to a URL or an open stream."""
    return isinstance(source, os.PathLike) or (isinstance(source, str) and not is_url(source))


def _name(source) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", repr(source))


def _open(source) -> av.container.InputContainer:
    import av

    name = _name(source)
    if _is_file(source) and not os.path.isfile(source):
        raise VideoError(f"{name}: no such file")
    try:
        return av.open(source if not isinstance(source, os.PathLike) else os.fspath(source))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"{name}: cannot open: {exc}") from None


class FrameScaler:
    """Turns decoded frames of one video into the pictures the model sees: shown as a player
    shows them (``Display``), RGB, at the video's pixel budget. One swscale context is reused
    (setting one up per frame costs more than the scaling itself); the scaling also corrects
    non-square pixels, and a rotation is a transpose of the small result."""

    def __init__(self, name: str, max_pixels: int = MAX_PIXELS, min_pixels: int = MIN_PIXELS):
        from av.video.reformatter import VideoReformatter

        self.name = name
        self.max_pixels = max_pixels
        self.min_pixels = min_pixels
        self.size: tuple[int, int] | None = None  # shown (height, width) once the first frame is seen
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame, display: Display) -> Image.Image:
        if self.size is None:
            shown_width, shown_height = display.size(frame.width, frame.height)
            try:
                self.size = smart_resize(shown_height, shown_width, self.min_pixels, self.max_pixels)
            except ValueError as exc:
                raise VideoError(f"{self.name}: {exc}") from None
        width, height = display.stored_size(self.size[1], self.size[0])
        scaled = self._reformatter.reformat(frame, width, height, "rgb24", interpolation=_INTERPOLATION, threads=1)
        plane = scaled.planes[0]
        return display.orient(Image.frombytes("RGB", (width, height), bytes(plane), "raw", "RGB", plane.line_size))


class TurnFrame(NamedTuple):
    """A turn's decoded frame before conversion, with its video's display transform."""

    turn: int
    time: float
    frame: av.VideoFrame
    display: Display


def iter_frames(
    source,
    fps: float = 1.0,
    max_pixels: int = MAX_PIXELS,
    min_pixels: int = MIN_PIXELS,
    turns: int | None = None,
    threads: int = 0,
) -> Iterator[SampledFrame]:
    """Yield ``SampledFrame`` for turns 0, 1, … while the video decodes.

    ``source`` is a file path, a URL or an open binary stream (a live feed). For a file the
    number of turns is ``turn_count(probe_duration(path), fps)`` unless ``turns`` is given,
    and each turn comes as soon as its frame is decoded. For a URL or stream the length is
    unknown, so a turn comes once the packets read cover all of it (one turn of latency):
    the count then equals what the converter gives for the same video. ``threads`` is the
    decoder's thread count (0: automatic). Raises ``VideoError`` naming the video when it
    cannot be opened, has no video stream or no decodable frame, or stops decoding well
    before its duration.
    """
    scale = FrameScaler(_name(source), max_pixels, min_pixels)
    for turn, moment, frame, display in turn_frames(source, fps, turns, threads):
        yield SampledFrame(turn, moment, scale(frame, display))


def turn_frames(source, fps: float = 1.0, turns: int | None = None, threads: int = 0,
                split: bool = False) -> Iterator[TurnFrame]:
    """``iter_frames`` before conversion, for callers that convert elsewhere (the cache scales
    and encodes in a writer thread). A frame serving several turns is yielded once per turn.

    ``split``: with automatic threads, decode a file that allows it in pieces at once
    (``segments``: the same frames for less CPU than frame threading, but a turn comes only
    when its piece is done, so not for live use)."""
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    name = _name(source)
    cut_at = None
    done = 0
    if turns is None and _is_file(source):
        info = probe(source)
        turns, cut_at = turn_count(info.duration, fps), info.cut_at
        if turns == 0:
            raise VideoError(f"{name}: shorter than one turn at {fps:g} fps")
        parts = segments.parts_for(threads)
        found = (segments.plan(name, fps, turns, parts, _EPS, _TAIL_TOLERANCE_TURNS)
                 if split and cut_at is None and parts > 1 else None)
        if found is not None:
            try:
                for turn, moment, frame, display in segments.turn_frames(name, found, parts):
                    yield TurnFrame(turn, moment, frame, display)
                    done += 1
                return
            except segments.Diverged as exc:  # finish in one pass, from the turn it reached
                log.info("%s: decoding in pieces stopped at turn %d (%s); going on in one pass", name, done, exc)
    container = _open(source)
    with container:
        if not container.streams.video:
            raise VideoError(f"{name}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = threads or _auto_threads(stream.width * stream.height)
        span = _PacketSpan()
        yield from itertools.islice(_select(container, stream, name, fps, turns, span), done, None)
    cut_at = span.cut_at if cut_at is None else cut_at
    if cut_at is not None:
        log.warning("%s: the video breaks off at %.2f s (damaged or cut short); frames up to there are used",
                    name, cut_at)


def _auto_threads(pixels: int) -> int:
    """Decoder threads when left automatic: FFmpeg's choice (0), unless frames are so large
    (8K: 50 MB each, one held per frame thread) that its choice on a many-core machine would
    hold more than ``_DECODER_BYTES``."""
    frame_bytes = max(pixels * 3 // 2, 1)
    cpus = os.cpu_count() or 1
    return 0 if frame_bytes * (cpus + 1) <= _DECODER_BYTES else max(1, min(cpus, _DECODER_BYTES // frame_bytes))


class _PacketSpan:
    """Latest packet end (pts + duration) seen while demuxing, in seconds: the same measure
    ``probe_duration`` uses, so a stream without a known length gets the converter's count;
    and where (s from the first frame) a packet was first found damaged or reading failed."""

    def __init__(self) -> None:
        self.origin: float | None = None
        self.end: float | None = None
        self.cut_at: float | None = None

    def add(self, end: float) -> None:
        self.end = end if self.end is None else max(self.end, end)

    def damaged(self, moment: float | None) -> None:
        if self.cut_at is None:
            moment = self.end if moment is None else moment
            self.cut_at = max((moment or 0.0) - (self.origin or 0.0), 0.0)


def _select(container, stream, name, fps, turns, span: _PacketSpan) -> Iterator[TurnFrame]:
    base = float(stream.time_base)
    origin: float | None = None
    next_turn = 0
    last = None  # (time, frame) of the latest decoded frame
    display: Display | None = None

    def unwanted(pts: int) -> bool:
        return origin is not None and pts * base - origin < next_turn / fps - _EPS

    pending: list[TurnFrame] = []  # live source: turns until the stream covers them

    def covered() -> int:
        """Whole turns the packets read so far span (the converter's count for this much video)."""
        return turn_count(span.end - origin, fps) if span.end is not None and origin is not None else 0

    for frame in _decode(container, stream, unwanted, span):
        if frame.pts is None:
            continue
        moment = frame.pts * base
        if origin is None:
            origin = span.origin = moment
            display = Display.of(frame, stream.sample_aspect_ratio)
        moment -= origin
        last = (moment, frame)
        while (turns is None or next_turn < turns) and moment >= next_turn / fps - _EPS:
            chosen = TurnFrame(next_turn, moment, frame, display)
            next_turn += 1
            if turns is None:
                pending.append(chosen)
            else:
                yield chosen
        if pending:
            ready = covered()
            while pending and pending[0].turn < ready:
                yield pending.pop(0)
        if turns is not None and next_turn >= turns:
            return
    if last is None:
        raise VideoError(f"{name}: no decodable video frame")
    if turns is None:
        turns = covered()
        yield from (chosen for chosen in pending if chosen.turn < turns)
    moment, frame = last
    if next_turn < turns:
        if (turns - 1) / fps > moment + _TAIL_TOLERANCE_TURNS / fps + _EPS:
            raise VideoError(
                f"{name}: frames decode only up to {moment:.3f} s, but its duration gives {turns} turns "
                f"at {fps:g} fps (truncated or corrupt video)"
            )
        for turn in range(next_turn, turns):
            yield TurnFrame(turn, moment, frame, display)


def _decode(container, stream, unwanted, span: _PacketSpan) -> Iterator[av.VideoFrame]:
    """Decode ``stream`` in one pass; packets that fail to decode are skipped, a demuxer
    error ends the stream (both noted in ``span``). ``unwanted(pts)`` marks packets whose
    frame the decoder may drop when no other frame references it."""
    import av

    codec = stream.codec_context
    base = float(stream.time_base)
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return  # the demuxer's final empty packet has already flushed the decoder
        except av.FFmpegError:
            span.damaged(None)
            break
        moment = None
        if packet.pts is not None:
            moment = packet.pts * base
            span.add((packet.pts + (packet.duration or 0)) * base)
            codec.skip_frame = "NONREF" if unwanted(packet.pts) else "DEFAULT"
        else:
            codec.skip_frame = "DEFAULT"
        if packet.is_corrupt:
            span.damaged(moment)
        try:
            yield from packet.decode()
        except av.FFmpegError:
            span.damaged(moment)
            continue
    codec.skip_frame = "DEFAULT"
    try:
        yield from codec.decode(None)
    except av.FFmpegError:
        return


def sample_frames(
    path: str | os.PathLike[str],
    fps: float = 1.0,
    max_pixels: int = MAX_PIXELS,
    min_pixels: int = MIN_PIXELS,
    threads: int = 0,
) -> list[Image.Image]:
    """All turn frames of a video file: ``turn_count(probe_duration(path), fps)`` RGB images."""
    return [sampled.image for sampled in iter_frames(path, fps, max_pixels, min_pixels, threads=threads)]
