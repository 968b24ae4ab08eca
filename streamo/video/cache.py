"""On-disk cache of sampled, resized frames: one JPEG per turn, extracted once per video.

Training reads every clip once per epoch; decoding full-resolution video each time would
dominate the run, so frames are extracted ahead (``streamo frames``) or on first use and
read back as small JPEGs already at the model's pixel budget.

Layout: ``CACHE_DIR/ab/KEY/000000.jpg …`` plus ``frames.json`` (the completion marker, with
the frame times). KEY hashes the video's identity (resolved path, size, mtime), the
sampling settings (fps, pixel budget) and the format version, so a changed video, setting
or way of making frames never hits a stale entry. An entry is built in a temporary directory beside it, the marker written last, and
the directory renamed into place; an exclusive lock per key makes a second process wait
for the first instead of decoding the same video, so no reader ever sees a half entry
and a killed run leaves only a temporary directory that the next writer removes.
Locks use ``flock``: the cache directory must be on a local or flock-capable filesystem.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import UsageError
from .probe import VideoError
from .sampling import MAX_PIXELS, MIN_PIXELS, FrameScaler, turn_frames

MARKER = "frames.json"
DEFAULT_QUALITY = 90
_FORMAT_VERSION = 2
"""Part of every key: 2 since frames are shown as players show them (display orientation and
pixel aspect), so entries made before that are never read again."""
_WRITES_IN_FLIGHT = 8
_BYTES_IN_FLIGHT = 64 * 2**20
"""Decoded frames waiting for the writer hold at most about this much (an 8K frame is 50 MB)."""


@dataclass(frozen=True)
class CacheEntry:
    """A complete cache entry: the frames of one video under one sampling setting."""

    directory: Path
    times: tuple[float, ...]
    """Presentation time (s from the first frame) of each turn's frame."""
    width: int
    height: int

    @property
    def paths(self) -> list[Path]:
        return [self.directory / frame_name(turn) for turn in range(len(self.times))]


def frame_name(turn: int) -> str:
    return f"{turn:06d}.jpg"


@dataclass(frozen=True)
class _Identity:
    path: str
    size: int
    mtime_ns: int


def _identity(video: str | os.PathLike[str]) -> _Identity:
    path = os.path.realpath(video)
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise VideoError(f"{os.fspath(video)}: {exc.strerror or exc}") from None
    if not os.path.isfile(path):
        raise VideoError(f"{os.fspath(video)}: not a file")
    return _Identity(path, stat.st_size, stat.st_mtime_ns)


class CacheOptionError(UsageError, ValueError):
    """A frame-cache setting out of its range (a usage error of ``streamo frames``)."""


class FrameCache:
    """Frames of videos sampled at ``fps`` and resized to [min_pixels, max_pixels], as JPEGs."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        fps: float = 1.0,
        max_pixels: int = MAX_PIXELS,
        min_pixels: int = MIN_PIXELS,
        quality: int = DEFAULT_QUALITY,
        threads: int = 0,
    ):
        if not fps > 0:
            raise CacheOptionError(f"fps must be > 0, got {fps}")
        if not 1 <= quality <= 100:
            raise CacheOptionError(f"JPEG quality must be within 1..100, got {quality}")
        if not 0 < min_pixels <= max_pixels:
            raise CacheOptionError(f"need 0 < min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
        self.root = Path(cache_dir)
        self.fps = fps
        self.max_pixels = max_pixels
        self.min_pixels = min_pixels
        self.quality = quality
        self.threads = threads

    def key(self, video: str | os.PathLike[str]) -> str:
        """Cache key of ``video`` under this cache's settings (the file must exist)."""
        return self._key(_identity(video))

    def _key(self, identity: _Identity) -> str:
        text = json.dumps(
            [_FORMAT_VERSION, identity.path, identity.size, identity.mtime_ns, self.fps, self.min_pixels, self.max_pixels]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _directory(self, key: str) -> Path:
        return self.root / key[:2] / key

    def entry_name(self, entry: CacheEntry) -> str:
        """The entry's directory relative to the cache root (as listed in the manifest)."""
        return entry.directory.relative_to(self.root).as_posix()

    def lookup(self, video: str | os.PathLike[str]) -> CacheEntry | None:
        """The complete entry of ``video``, or None when it has not been extracted."""
        return self._read(self._directory(self.key(video)))

    @staticmethod
    def _read(directory: Path) -> CacheEntry | None:
        try:
            meta = json.loads((directory / MARKER).read_text(encoding="utf-8"))
            return CacheEntry(directory, tuple(meta["times"]), meta["width"], meta["height"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def ensure(self, video: str | os.PathLike[str]) -> CacheEntry:
        """The entry of ``video``, extracting it first if needed (at most one process at a time).

        Raises ``VideoError`` naming the video when it is missing, unreadable or too short.
        """
        identity = _identity(video)
        key = self._key(identity)
        directory = self._directory(key)
        found = self._read(directory)
        if found is not None:
            return found
        directory.parent.mkdir(parents=True, exist_ok=True)
        lock_path = directory.parent / f"{key}.lock"
        with open(lock_path, "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = self._read(directory)
            if found is not None:
                return found
            entry = self._extract(video, identity, directory)
            # Safe while holding the lock: a waiter on the old lock file finds the entry
            # complete, and a newcomer creates a fresh lock file and finds it too.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
            return entry

    def _extract(self, video, identity: _Identity, directory: Path) -> CacheEntry:
        for stale in directory.parent.glob(f".{directory.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed run; we hold the lock
        if directory.exists():  # an unreadable marker: not a complete entry
            shutil.rmtree(directory)
        work = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
        try:
            times: list[float] = []
            size = (0, 0)
            # Scaling and JPEG encoding release the GIL: a writer thread overlaps them with decoding.
            scale = FrameScaler(os.fspath(video), self.max_pixels, self.min_pixels)

            def store(turn: int, frame, display) -> tuple[int, int]:
                image = scale(frame, display)
                image.save(work / frame_name(turn), "JPEG", quality=self.quality)
                return image.size

            with ThreadPoolExecutor(1) as writer:
                writes: collections.deque = collections.deque()
                for turn, moment, frame, display in turn_frames(os.fspath(video), self.fps, threads=self.threads, split=True):
                    writes.append(writer.submit(store, turn, frame, display))
                    times.append(round(moment, 6))
                    in_flight = max(1, min(_WRITES_IN_FLIGHT, _BYTES_IN_FLIGHT // (frame.width * frame.height * 3 // 2)))
                    while len(writes) > in_flight:
                        size = writes.popleft().result()
                for write in writes:
                    size = write.result()
            if _identity(identity.path) != identity:
                raise VideoError(f"{os.fspath(video)}: changed while its frames were extracted")
            meta = {
                "video": identity.path,
                "size": identity.size,
                "mtime_ns": identity.mtime_ns,
                "fps": self.fps,
                "min_pixels": self.min_pixels,
                "max_pixels": self.max_pixels,
                "quality": self.quality,
                "width": size[0],
                "height": size[1],
                "times": times,
            }
            (work / MARKER).write_text(json.dumps(meta), encoding="utf-8")
            os.rename(work, directory)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return CacheEntry(directory, tuple(times), size[0], size[1])

    def frames(self, video: str | os.PathLike[str]) -> list[Path]:
        """Paths of the turn frames of ``video`` (extracted on demand)."""
        return self.ensure(video).paths

    def load(self, video: str | os.PathLike[str]) -> list[Image.Image]:
        """The turn frames of ``video`` as RGB images (extracted on demand)."""
        images = []
        for path in self.frames(video):
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        return images
