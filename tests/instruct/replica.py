"""A small replica of the Streamo-Instruct-465K layout, with tiny generated videos.

Three sources under different roots (LLaVA_Video's paths start with the source's own folder,
YouCook2 is spelled ``Youcook``/``Youcookv2`` in the records), a fourth with no root, task
folders holding JSON lists, JSONL, single objects and nested files, and every kind of bad
video: missing, zero bytes, cut short (unreadable, or only shorter), damaged payload. Each
record carries an ``id`` and the outcome it must have: converted, or rejected for a reason.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from streamo.video.synthetic import frame_times, write_clip

SIZE = {"width": 64, "height": 48, "bframes": 0}


@dataclass
class Replica:
    root: Path
    annotations: Path
    roots: dict[str, Path]
    expected: dict[str, str | None] = field(default_factory=dict)
    """Record id -> None (converted) or a phrase its rejection reason contains."""
    places: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Record id -> (annotation file, index in it)."""
    unreadable_records: list[tuple[str, int]] = field(default_factory=list)
    """(file, index) of records that are not JSON objects."""

    def video_root_args(self) -> list[str]:
        return [arg for source, path in self.roots.items() for arg in ("--video-root", f"{source}={path}")]


def clip(path: Path, seconds: int, fps: int = 2, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_clip(path, frame_times(seconds * fps, fps), **SIZE, **options)
    return path


def record(id_: str, source: str, video_path: str, answer_at: float = 2.0, task: str | None = None) -> dict:
    data = {
        "id": id_,
        "video_name": video_path.rsplit("/", 1)[-1],
        "video_path": video_path,
        "source": source,
        "question": [{"content": f"What happens in {id_}?", "time": "1"}],
        "response": [{"content": f"Answer {id_}.", "st_time": answer_at, "end_time": answer_at + 1, "time": ""}],
    }
    if task is not None:
        data["task_type"] = task
    return data


def build(root: Path) -> Replica:
    anet, llava, youcook = root / "videos" / "anet", root / "videos" / "LLaVA_Video", root / "videos" / "yc2"
    replica = Replica(root, root / "annotations", {"activitynet": anet, "LLaVA-Video": llava, "YouCook2": youcook})

    clip(anet / "v_good.mp4", 8)
    whole = clip(anet / "v_cut.mp4", 8).read_bytes()  # index at the end: cut short, it cannot be opened
    (anet / "v_cut.mp4").write_bytes(whole[: len(whole) // 2])
    damaged = bytearray(clip(anet / "v_damaged.mp4", 8, options={"movflags": "faststart"}).read_bytes())
    payload = damaged.index(b"mdat") + 4
    damaged[payload:] = random.Random(0).randbytes(len(damaged) - payload)
    (anet / "v_damaged.mp4").write_bytes(bytes(damaged))
    (anet / "v_zero.mp4").write_bytes(b"")
    clip(llava / "yt" / "b.mp4", 10)
    short = clip(llava / "yt" / "short.mp4", 10, options={"movflags": "faststart"}).read_bytes()
    (llava / "yt" / "short.mp4").write_bytes(short[: len(short) // 2])  # still opens, but lasts about 5 s
    clip(youcook / "c.mp4", 6)

    def expect(data: dict, outcome: str | None) -> dict:
        replica.expected[data["id"]] = outcome
        return data

    qa = [
        expect(record("qa-good", "ActivityNet", "v_good.mp4", task="QA"), None),
        expect(record("qa-cut", "ActivityNet", "v_cut.mp4", task="QA"), "unreadable video"),
        expect(record("qa-damaged", "ActivityNet", "v_damaged.mp4", task="QA"), "does not decode"),
        expect(record("qa-zero", "ActivityNet", "v_zero.mp4", task="QA"), "empty (0 bytes)"),
        expect(record("qa-missing", "ActivityNet", "v_missing.mp4", task="QA"), "video not found"),
        expect(record("qa-llava", "LLaVA_Video", "LLaVA_Video/yt/b.mp4", task="QA"), None),
        expect(record("qa-hacs", "HACS", "hacs/x.mp4", task="QA"), "has no video root"),
        [1, 2],
    ]
    replica.unreadable_records.append(("QA/part1.json", 7))
    write(replica, "QA/part1.json", qa)
    write(replica, "QA/part2.jsonl", [
        expect(record(f"qa-yc-{i}", "Youcookv2" if i % 2 else "Youcook", "c.mp4", answer_at=i % 4, task="QA"), None)
        for i in range(12)
    ])
    # no task_type: the folder names the task
    grounding = [
        expect(record("gr-short-early", "LLaVA_Video", "LLaVA_Video/yt/short.mp4", answer_at=1), None),
        expect(record("gr-short-late", "LLaVA_Video", "LLaVA_Video/yt/short.mp4", answer_at=8), "beyond the video end"),
        expect(record("gr-good", "activitynet", "v_good.mp4", answer_at=9), "beyond the video end"),
        expect(record("gr-yc", "YouCook2", "c.mp4"), None),
    ]
    write(replica, "Grounding/grounding.jsonl", grounding, bad_line_at=2)
    replica.unreadable_records.append(("Grounding/grounding.jsonl", 2))
    lying = record("na-one", "ActivityNet", "v_good.mp4", task="Narration")
    lying["duration"] = 30  # the clip lasts 8 s: converted on the clip's duration, with a warning
    write(replica, "Narration/one.json", expect(lying, None))
    write(replica, "Narration/nested/more.json", [
        expect(record(f"na-b-{i}", "LLaVA_Video", "LLaVA_Video/yt/b.mp4", answer_at=i, task="Narration"), None)
        for i in range(5)
    ])
    return replica


def write(replica: Replica, relative: str, data, bad_line_at: int | None = None) -> None:
    """A JSON file (list or single object) or, for ``*.jsonl``, JSON lines with an optional broken line."""
    path = replica.annotations / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    items = data if isinstance(data, list) else [data]
    if path.suffix == ".jsonl":
        lines = [json.dumps(item) for item in items]
        if bad_line_at is not None:
            lines.insert(bad_line_at, '{"id": "broken", ')
            items = items[:bad_line_at] + [None] + items[bad_line_at:]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text(json.dumps(data))
    for index, item in enumerate(items):
        if isinstance(item, dict):
            replica.places[item["id"]] = (relative, index)
