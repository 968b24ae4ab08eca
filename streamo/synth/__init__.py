"""Synthetic streams: short videos of coloured shapes with unambiguous, timed events and their
raw annotations (instant QA, event grounding, narration, several questions per stream).

They are the shipped example, the data of the README's main job and a learnability benchmark:
every label can be read off the frames, so a pipeline that learns must score well on them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import orjson

from ..jsonfiles import atomic_write
from .scene import DEFAULT_DURATION, DEFAULT_PAUSE, GROUNDING_CHOICES, TASK_TYPES, Scene, SynthOptionError, annotate, make_scene

__all__ = ["DEFAULT_DURATION", "DEFAULT_PAUSE", "GROUNDING_CHOICES", "SynthOptions", "TASK_TYPES", "Scene", "SynthOptionError", "annotate", "generate",
           "make_scene", "parse_pause", "parse_range", "parse_size"]

RAW_FILE = "raw_data.json"
VIDEO_DIR = "videos"


@dataclass(frozen=True)
class SynthOptions:
    videos: int
    seed: int = 0
    fps: float = 5.0
    """Frame rate of the generated files (the model still samples them at its own rate)."""
    width: int = 160
    height: int = 128
    first_index: int = 0
    """Index of the first video: a held-out set is the same seed from a later index on."""
    grounding: str = "one"
    """``one`` or ``each``: Grounding samples per scene (see ``scene.GROUNDING_CHOICES``)."""
    timing_cue: bool = False
    """Diagnostic: backgrounds that show when something moves or changed (``render.Canvas.background``)."""
    pause: tuple[int, int] = DEFAULT_PAUSE
    """Seconds of stillness between changes (``scene.DEFAULT_PAUSE``)."""
    duration: tuple[int, int] = DEFAULT_DURATION
    """Range of each clip's length in whole seconds (``scene.DEFAULT_DURATION``)."""


def parse_size(text: str) -> tuple[int, int]:
    """``"160x128"`` -> ``(160, 128)``; SynthOptionError for anything else."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise SynthOptionError(f"size must look like WIDTHxHEIGHT, got {text!r}")
    return int(parts[0]), int(parts[1])


def parse_range(text: str, name: str) -> tuple[int, int]:
    """``"2,8"`` -> ``(2, 8)``; SynthOptionError naming ``name`` for anything else (the range itself
    is checked by ``make_scene``)."""
    parts = text.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise SynthOptionError(f"{name} must look like MIN,MAX (whole seconds), got {text!r}")
    return int(parts[0]), int(parts[1])


def parse_pause(text: str) -> tuple[int, int]:
    """``--pause``: ``"2,8"`` -> ``(2, 8)``."""
    return parse_range(text, "pause")


def generate(out_dir: str | os.PathLike[str], options: SynthOptions, progress: bool = False) -> Path:
    """Write ``videos/synth_NNNN.mp4`` and ``raw_data.json`` under ``out_dir``; returns the raw file.

    ``video_path`` in the annotations is relative to ``out_dir`` (convert with
    ``--video-prefix out_dir``). The same options always give the same files.
    """
    from tqdm import tqdm

    from .render import encode_scene  # PyAV: loaded only when videos are written, not by the CLI's parser

    out_dir = Path(out_dir)
    samples = []
    indices: Iterable[int] = range(options.first_index, options.first_index + options.videos)
    for index in tqdm(indices, total=options.videos, unit=" videos", disable=not progress):
        scene = make_scene(options.seed, index, options.pause, options.duration)
        name = f"synth_{index:04d}.mp4"
        relative = f"{VIDEO_DIR}/{name}"
        encode_scene(scene, out_dir / relative, options.fps, options.width, options.height, options.timing_cue)
        samples.extend(annotate(scene, options.seed, index, relative, name, options.grounding))
    raw_path = out_dir / RAW_FILE
    with atomic_write(raw_path) as handle:
        handle.write(orjson.dumps(samples, option=orjson.OPT_INDENT_2) + b"\n")
    return raw_path
