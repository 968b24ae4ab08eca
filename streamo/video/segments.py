"""Sampling a file in pieces decoded at once, each by a one-thread decoder from an IDR frame.

Frame threading, FFmpeg's way of spreading one decoder over cores, costs about a quarter more
CPU than one thread (threads wait on each other's reference frames); pieces of the file that
start at an IDR frame decode independently instead, each with one thread. The result is
exactly the one-pass result (``sampling.turn_frames``): an IDR frame empties the decoder's
references, so a piece decodes to the same pixels whether the decoder saw the frames before
it or not. That holds only for closed groups of pictures, so a file is split only where the
packets prove it: H.264 in a length-prefixed container (MP4, MOV, Matroska), every packet
with a timestamp and undamaged, and cut only at an IDR frame that every packet before it
precedes and every packet after it follows in time. Anything else is decoded in one pass.

Which frame each turn takes is worked out from the packet timestamps before decoding (one
packet is one frame); each piece then decodes from its IDR, skipping the non-reference frames
before its next wanted one and stopping after its last. When a piece decodes to anything other
than the frames the packets promised, ``Diverged`` is raised and the caller finishes in one pass.
"""

from __future__ import annotations

import collections
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

from .display import Display

MAX_PARTS = 4
_BYTES_IN_FLIGHT = 64 * 2**20
"""Kept frames of the pieces decoded ahead of the one being read hold at most about this much."""
_IDR = 5


class Diverged(Exception):
    """A piece did not decode to the frames its packets promised (finish in one pass)."""


@dataclass
class Piece:
    start: int | None
    """pts of its IDR frame (None: the file's start)."""
    end: int | None
    """pts of the next piece's IDR frame (None: the file's end)."""
    turns: dict[int, list[int]] = field(default_factory=dict)
    """pts of a wanted frame -> the turns it serves."""


@dataclass
class Plan:
    pieces: list[Piece]
    base: float
    origin: float
    moments: dict[int, float]
    """pts -> seconds from the first frame, of every wanted frame."""
    sample_aspect: object


def _is_idr(data: bytes, length_size: int) -> bool:
    at = 0
    while at + length_size < len(data):
        size = int.from_bytes(data[at:at + length_size], "big")
        if data[at + length_size] & 0x1F == _IDR:
            return True
        at += length_size + size
    return False


def plan(path: str, fps: float, turns: int, parts: int, eps: float, tail_turns: float) -> Plan | None:
    """Where to cut ``path`` and which frame serves each turn, or None when it cannot be split."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        codec = stream.codec_context
        extradata = codec.extradata
        if codec.name != "h264" or not extradata or extradata[0] != 1 or len(extradata) < 5:
            return None  # Annex B or another codec: IDR frames are not read from the packets here
        length_size = (extradata[4] & 3) + 1
        pts: list[int] = []
        idr: list[bool] = []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is None or packet.is_corrupt:
                return None
            pts.append(packet.pts)
            idr.append(packet.is_keyframe and _is_idr(bytes(packet), length_size))
        base = float(stream.time_base)
        frame_bytes = max(stream.width * stream.height * 3 // 2, 1)
        sample_aspect = stream.sample_aspect_ratio
    if len(pts) < 2 or len(set(pts)) != len(pts):
        return None
    shown = sorted(pts)
    origin = shown[0] * base
    moment = [p * base - origin for p in shown]
    chosen: list[int] = []  # pts of each turn's frame, as the one-pass rule picks it
    index = 0
    for turn in range(turns):
        while index < len(shown) and moment[index] < turn / fps - eps:
            index += 1
        if index == len(shown):
            if (turns - 1) / fps > moment[-1] + tail_turns / fps + eps:
                return None  # the one pass reports this file as truncated
            chosen.extend([shown[-1]] * (turns - turn))
            break
        chosen.append(shown[index])
    later_min = pts[:]
    for at in range(len(pts) - 2, -1, -1):
        later_min[at] = min(later_min[at], later_min[at + 1])
    cuts = []
    earlier_max = pts[0]
    for at in range(1, len(pts)):
        if idr[at] and earlier_max < pts[at] and later_min[at] == pts[at]:
            cuts.append(pts[at])
        earlier_max = max(earlier_max, pts[at])
    per_piece = max(1, _BYTES_IN_FLIGHT // (frame_bytes * (parts + 1)))
    pieces = [Piece(None, None)]
    cuts.reverse()
    for turn, wanted in enumerate(chosen):
        while cuts and cuts[-1] <= wanted:
            cut = cuts.pop()
            current = pieces[-1]
            if not current.turns and current.start is not None:
                current.start = cut  # nothing wanted since its IDR: start at the later one
            elif len(current.turns) >= per_piece:
                current.end = cut
                pieces.append(Piece(cut, None))
        pieces[-1].turns.setdefault(wanted, []).append(turn)
    largest = max(len(piece.turns) for piece in pieces)
    if len(pieces) < 2 or largest * frame_bytes * (parts + 1) > 2 * _BYTES_IN_FLIGHT:
        return None  # nothing to share out, or long groups of pictures of huge frames: one pass holds less
    moments = {wanted: wanted * base - origin for wanted in set(chosen)}
    return Plan(pieces, base, origin, moments, sample_aspect)


def _decode(path: str, piece: Piece) -> dict[int, object]:
    """The wanted frames of one piece, by pts."""
    import av

    wanted = sorted(piece.turns)
    frames: dict[int, object] = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        stream.thread_count = 1
        codec = stream.codec_context
        if piece.start is not None:
            container.seek(piece.start, stream=stream, backward=True)
        first = True
        for packet in container.demux(stream):
            if packet.size == 0:
                break
            if first and piece.start is not None and packet.pts != piece.start:
                raise Diverged(f"seeking landed at {packet.pts}, not {piece.start}")
            first = False
            if piece.end is not None and packet.pts == piece.end:
                break
            codec.skip_frame = "NONREF" if packet.pts < wanted[len(frames)] else "DEFAULT"
            try:
                decoded = packet.decode()
            except av.FFmpegError as exc:
                raise Diverged(str(exc)) from None
            if _keep(decoded, piece, wanted, frames):
                return frames
        codec.skip_frame = "DEFAULT"
        try:
            _keep(codec.decode(None), piece, wanted, frames)
        except av.FFmpegError as exc:
            raise Diverged(str(exc)) from None
    if len(frames) != len(wanted):
        raise Diverged(f"{len(frames)} of {len(wanted)} wanted frames decoded")
    return frames


def _keep(decoded, piece: Piece, wanted: list[int], frames: dict) -> bool:
    """Keep the wanted frames among ``decoded``; True once all are there."""
    for frame in decoded:
        if frame.pts in piece.turns:
            if frame.pts != wanted[len(frames)]:
                raise Diverged(f"frame {frame.pts} came before {wanted[len(frames)]}")
            frames[frame.pts] = frame
    return len(frames) == len(wanted)


def turn_frames(path: str, found: Plan, parts: int) -> Iterator[tuple[int, float, object, Display]]:
    """(turn, moment, frame, display) in turn order, ``parts`` pieces decoding at once."""
    display = None
    with ThreadPoolExecutor(parts) as pool:
        ahead: collections.deque = collections.deque()
        pieces = iter(found.pieces)
        try:
            for piece in pieces:
                ahead.append((piece, pool.submit(_decode, path, piece)))
                if len(ahead) > parts:
                    break
            while ahead:
                piece, job = ahead.popleft()
                frames = job.result()
                nxt = next(pieces, None)
                if nxt is not None:
                    ahead.append((nxt, pool.submit(_decode, path, nxt)))
                for wanted in sorted(piece.turns):
                    frame = frames[wanted]
                    if display is None:
                        display = Display.of(frame, found.sample_aspect)
                    for turn in piece.turns[wanted]:
                        yield turn, found.moments[wanted], frame, display
        finally:
            for _, job in ahead:
                job.cancel()


def parts_for(threads: int) -> int:
    """How many pieces decode at once when the decoder's threads are left automatic (0)."""
    return min(os.cpu_count() or 1, MAX_PARTS) if threads == 0 else 1
