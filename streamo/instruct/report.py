"""The summary of a prepare run: counts per source and task, the table, and the next commands.

The training line uses ms-swift's dataset syntax (``FILE#N``: N samples drawn from FILE,
whole copies first when N exceeds its size) through ``train.sh``'s ``DATASET``, which takes
several datasets separated by spaces; ``streamo frames`` fills the frame cache that
``STREAMO_FRAME_CACHE`` then points training at.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Iterable

from .sources import name_key
from .videos import EMPTY, FOUND, MISSING, NO_ROOT, UNREADABLE, Video

COLUMNS = ("samples", "videos", "found", "missing", "unreadable", "hours", "converted", "rejected")
FRAME_KB = 32
"""About one cached frame at the default pixel budget (README: frame extraction benchmark)."""
TRAIN_SH = Path(__file__).resolve().parents[2] / "train.sh"


def count_row(samples: int, converted: int, rejected: int, videos: Iterable[Video]) -> dict:
    """One table row: sample counts, and the distinct videos by what the check found."""
    row = {"samples": samples, "videos": 0, "found": 0, "missing": 0, "unreadable": 0, "hours": 0.0,
           "converted": converted, "rejected": rejected}
    for video in videos:
        row["videos"] += 1
        if video.status == FOUND:
            row["found"] += 1
            row["hours"] += (video.duration or 0.0) / 3600
        elif video.status in (MISSING, NO_ROOT):
            row["missing"] += 1
        elif video.status in (EMPTY, UNREADABLE):
            row["unreadable"] += 1
    row["hours"] = round(row["hours"], 2)
    return row


def format_table(summary: dict) -> str:
    """The per-source and per-task tables of a summary, with a total line."""
    lines = []
    for title, rows in (("source", summary["by_source"]), ("task", summary["by_task"])):
        width = max([len(title), len("total")] + [len(row[title]) for row in rows])
        lines.append(f"{title:<{width}}" + "".join(f"{column:>11}" for column in COLUMNS))
        for row in [*rows, {title: "total", **summary["total"]}]:
            cells = "".join(f"{row[column]:>11.1f}" if column == "hours" else f"{row[column]:>11}" for column in COLUMNS)
            lines.append(f"{row[title]:<{width}}{cells}")
        lines.append("")
    return "\n".join(lines).rstrip()


def commands(out: Path, stream: Path, tasks: dict[str, tuple[Path, int]], weights: dict[str, float],
             fps: float) -> dict[str, str]:
    """The ``streamo frames`` line that fills the frame cache and the ``train.sh`` line.

    ``tasks``: task name -> (its stream file, samples in it). With ``weights`` (task -> factor),
    each task file is listed as ``FILE#N`` with N its samples times the factor (tasks without
    a weight keep factor 1 and are listed whole; factor 0 leaves a task out).
    """
    cache = out.resolve() / "frames"
    frames = f"streamo frames --input {shlex.quote(str(stream.resolve()))} --cache-dir {shlex.quote(str(cache))}"
    if fps != 1.0:
        frames += f" --fps {fps:g}"
    if weights:
        factors = {name_key(task): factor for task, factor in weights.items()}
        parts = []
        for task, (path, count) in sorted(tasks.items()):
            factor = factors.get(name_key(task), 1.0)
            drawn = round(count * factor)
            if drawn:
                parts.append(str(path.resolve()) + ("" if factor == 1.0 else f"#{drawn}"))
        dataset = " ".join(parts)
    else:
        dataset = str(stream.resolve())
    train_sh = str(TRAIN_SH) if TRAIN_SH.is_file() else "train.sh"
    train = (f"STREAMO_FRAME_CACHE={shlex.quote(str(cache))} DATASET={shlex.quote(dataset)} "
             f"bash {shlex.quote(train_sh)}")
    return {"frames": frames, "train": train}
