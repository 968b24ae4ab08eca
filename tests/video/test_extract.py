import json

import orjson
import pytest

from streamo.cli import main
from streamo.protocol import user_text
from streamo.video import FrameCache
from streamo.video.extract import report_paths
from streamo.video.synthetic import read_code

from .clips import expected_frames, make_clip


def stream_sample(video: str, turns: int) -> dict:
    messages = [{"role": "system", "content": "s"}]
    for turn in range(turns):
        messages += [{"role": "user", "content": user_text(turn)}, {"role": "assistant", "content": "</Silence>"}]
    return {"messages": messages, "videos": [video]}


def read_jsonl(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    directory = tmp_path_factory.mktemp("extract_videos")
    return {
        "a": make_clip(directory, "a.mp4", 30, 5.1),
        "b": make_clip(directory, "b.mp4", 25, 4.0),
    }


def test_stream_file_fills_the_cache_and_reports_every_problem(tmp_path, videos, capsys):
    (a, a_times), (b, _) = videos["a"], videos["b"]
    records = [
        stream_sample(str(a), 5),
        stream_sample(str(b), 4),
        stream_sample(str(a), 3),
        stream_sample(str(tmp_path / "gone.mp4"), 2),
        stream_sample(str(b), 7),  # more turns than the clip has seconds
        {"messages": []},
    ]
    data = tmp_path / "train.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(r) for r in records))
    cache_dir = tmp_path / "cache"
    argv = ["frames", "--input", str(data), "--cache-dir", str(cache_dir), "--workers", "2", "--max-pixels", "50176"]
    assert main(argv) == 1  # gone.mp4 failed; the others are extracted all the same
    manifest_path, failures_path = report_paths(cache_dir, data)
    manifest = {row["video"]: row for row in read_jsonl(manifest_path)}
    assert {v: (r["frames"], r["status"], r["samples"]) for v, r in manifest.items()} == {
        str(a): (5, "extracted", 2), str(b): (4, "extracted", 2)}
    failures = read_jsonl(failures_path)
    reasons = {tuple(row["samples"]): row["reason"] for row in failures}
    assert set(reasons) == {(3,), (4,), (5,)}
    assert "gone.mp4" in reasons[(3,)]
    assert "b.mp4" in reasons[(4,)] and "7 turns" in reasons[(4,)]
    assert "no 'videos'" in reasons[(5,)]
    assert "3 samples rejected" in capsys.readouterr().err

    cache = FrameCache(cache_dir, max_pixels=50176)
    entry_dir = cache_dir / manifest[str(a)]["entry"]
    assert entry_dir == cache.lookup(a).directory
    assert [read_code(image) for image in cache.load(a)] == expected_frames(a_times, 1.0, 5)

    assert main(argv) == 1  # resumable: a second run decodes nothing
    assert {row["status"] for row in read_jsonl(manifest_path)} == {"cached"}
    assert "0 extracted, 2 already cached" in capsys.readouterr().err


def test_raw_annotations_with_a_video_prefix(tmp_path, videos):
    (a, _), (b, _) = videos["a"], videos["b"]
    raw = [
        {"video_path": a.name, "question": [], "response": [], "duration": 5},
        {"video_path": b.name, "question": [], "response": [], "duration": "00:09"},  # longer than the clip
        {"video_path": b.name, "question": [], "response": []},
    ]
    data = tmp_path / "raw.json"
    data.write_text(json.dumps(raw))
    cache_dir = tmp_path / "cache"
    assert main(["frames", "--input", str(data), "--cache-dir", str(cache_dir), "--workers", "1",
                 "--video-prefix", str(a.parent), "--fps", "2", "--quality", "70"]) == 0
    manifest_path, failures_path = report_paths(cache_dir, data)
    assert sorted((row["video"], row["frames"]) for row in read_jsonl(manifest_path)) == [(str(a), 10), (str(b), 8)]
    assert [row["samples"] for row in read_jsonl(failures_path)] == [[1]]
    assert json.loads((cache_dir / read_jsonl(manifest_path)[0]["entry"] / "frames.json").read_text())["quality"] == 70


def test_exit_status_1_when_every_video_failed_0_when_none_did(tmp_path, videos, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    data = tmp_path / "train.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(stream_sample(str(path), 2)) for path in (broken, tmp_path / "gone.mp4")))
    assert main(["frames", "--input", str(data), "--cache-dir", str(tmp_path / "cache"), "--workers", "1"]) == 1
    assert "2 videos: 0 extracted, 0 already cached, 2 failed" in capsys.readouterr().err
    (a, _) = videos["a"]
    data.write_bytes(orjson.dumps(stream_sample(str(a), 5)))
    assert main(["frames", "--input", str(data), "--cache-dir", str(tmp_path / "cache"), "--workers", "1"]) == 0


def test_unusable_arguments_exit_with_status_2(tmp_path, capsys):
    data = tmp_path / "x.jsonl"
    data.write_text("not json\n")
    assert main(["frames", "--input", str(data), "--cache-dir", str(tmp_path / "c")]) == 2
    assert main(["frames", "--input", str(data), "--cache-dir", str(tmp_path / "c"), "--quality", "300"]) == 2
    capsys.readouterr()
