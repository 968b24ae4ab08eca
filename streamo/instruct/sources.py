"""Where each annotation's video lives: source names, their aliases, and the video roots.

Streamo-Instruct-465K does not ship videos; each record names its ``source`` (one of a
dozen public datasets) and a ``video_path`` relative to that source's own layout. The user
downloads the sources wherever they like and gives one root per source, plus an optional
default root. Source names are matched without regard to case or punctuation, and the
spellings the data uses for one dataset (``Youcook``, ``Youcookv2``, ``YouCook2``) are
aliases of one source.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError


class RootError(UsageError, ValueError):
    """A video root that cannot be used (``--video-root``, ``--roots``)."""


KNOWN_SOURCES: dict[str, tuple[str, ...]] = {
    "ActivityNet": ("ANet", "ActivityNet Captions"),
    "COIN": (),
    "DiDeMo": (),
    "Ego4D": ("EgoTimeQA",),
    "HACS": (),
    "HowTo100M": ("HowToCaption", "HowToStep", "HTStep"),
    "Koala": ("Koala-36M",),
    "LLaVA_Video": ("LLaVA-Video-178K",),
    "QuerYD": (),
    "QVHighlights": ("QVH",),
    "TACoS": (),
    "YouCook2": ("Youcook", "Youcookv2", "YouCookII"),
}
"""Canonical source name -> other spellings of it (matched like the name: case and punctuation
ignored, so ``llava-video`` is ``LLaVA_Video``). EgoTimeQA is built on Ego4D videos, and the
HowTo100M captions and steps on HowTo100M videos, so each pair shares one root."""

NO_SOURCE = "(none)"
"""How a record without a ``source`` is shown; it takes the default root."""


@functools.lru_cache(maxsize=4096)  # a few dozen names, met on every record
def name_key(name: str) -> str:
    """The matching key of a source or task name: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


_CANONICAL = {name_key(alias): canonical for canonical, aliases in KNOWN_SOURCES.items() for alias in (canonical, *aliases)}


@functools.lru_cache(maxsize=4096)
def canonical_source(name: str) -> str:
    """The name a source is reported under: its canonical name when known, else as written."""
    name = name.strip()
    if not name:
        return NO_SOURCE
    return _CANONICAL.get(name_key(name), name)


@functools.lru_cache(maxsize=4096)
def source_key(name: str) -> str:
    """Matching key of the source ``name`` belongs to (aliases share one key)."""
    return name_key(canonical_source(name))


@dataclass
class VideoRoots:
    """Video root per source (by the spelling given, and by the source it names) and a default."""

    by_spelling: dict[str, str] = field(default_factory=dict)
    by_source: dict[str, str] = field(default_factory=dict)
    by_source_spelling: dict[str, str] = field(default_factory=dict)
    """Source key -> the spelling its ``by_source`` root was given under."""
    default: str | None = None

    def add(self, spec: str, base: Path | None = None, where: str = "--video-root") -> None:
        """Add ``SOURCE=DIR`` (a root for that source) or ``DIR`` (the default root); relative
        directories are taken from ``base``. Raises RootError naming ``where`` for a bad spec."""
        source, equals, directory = spec.partition("=")
        if not equals or os.sep in source or "/" in source:  # a directory whose name holds "="
            source, equals, directory = "", "", spec
        if equals and not source.strip():
            raise RootError(f"{where} {spec!r}: empty source name (use DIR alone for the default root)")
        directory = os.path.expanduser(directory.strip())
        if not directory:
            raise RootError(f"{where} {spec!r}: empty directory")
        path = Path(directory) if base is None else base / directory
        if not path.is_dir():
            raise RootError(f"{where} {spec!r}: no such directory: {path}")
        path_text = os.path.abspath(path)
        if not source.strip():
            self.default = path_text
            return
        spelled, key = name_key(source), source_key(source)
        self.by_spelling[spelled] = path_text
        if self.by_source_spelling.get(key) != key or spelled == key:  # the canonical spelling's root wins over an alias's
            self.by_source[key] = path_text
            self.by_source_spelling[key] = spelled

    def add_file(self, path: Path) -> None:
        """Lines of ``SOURCE=DIR`` or ``DIR`` (blank lines and ``#`` comments ignored), relative
        directories taken from the file's directory."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise RootError(f"--roots {path}: {exc}") from None
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                self.add(line, path.parent, where=f"{path}:{number}:")

    def root_for(self, source: str) -> str | None:
        """The root of ``source``: its own spelling's, else its source's, else the default."""
        return self.by_spelling.get(name_key(source)) or self.by_source.get(source_key(source)) or self.default

    def video_key(self, video_path: str, source: str) -> str:
        """Names one video without touching the disk or normalising paths (done once per
        video, not per record): the root it is looked for under, and its path as annotated."""
        if os.path.isabs(video_path):
            return video_path
        root = self.root_for(source)
        return f"{root}\0{video_path}" if root is not None else f"\0{source_key(source)}\0{video_path}"

    def candidates(self, video_path: str, source: str) -> list[str] | None:
        """Paths to try for ``video_path``, in order; None when its source has no root.

        An absolute path is taken as it is. A relative one is joined to the source's root;
        when it starts with a folder named after its source (``LLaVA_Video/...``), the path
        without that folder is tried next, so a root may be the folder that holds the
        source's directory or that directory itself.
        """
        video_path = video_path.strip()
        if os.path.isabs(video_path):
            return [os.path.normpath(video_path)]
        root = self.root_for(source)
        if root is None:
            return None
        relative = os.path.normpath(video_path)
        paths = [os.path.join(root, relative)]
        head, _, rest = relative.partition(os.sep)
        if rest and source_key(head) == source_key(source):
            paths.append(os.path.join(root, rest))
        return paths
