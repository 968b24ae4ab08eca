"""Stream datasets: bad samples removed with their reason and counted, long clips split, never dropped."""

import copy
import json

import pytest

from streamo.protocol import parse_stream_messages
from streamo.swift_plugin.dataset import StreamPreprocessor, StreamSettings, locate_video
from streamo.swift_plugin.frames import FrameSource

SMALL_FRAMES = 56 * 56


@pytest.fixture
def samples(example_rows, tmp_path):
    good = copy.deepcopy(example_rows[0])
    short = copy.deepcopy(example_rows[1])
    short["messages"] = short["messages"][:-2]  # one <stream> turn fewer than the video's frames
    missing = copy.deepcopy(example_rows[2])
    missing["videos"] = [str(tmp_path / "nowhere.mp4")]
    broken = copy.deepcopy(example_rows[3])
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    broken["videos"] = [str(tmp_path / "broken.mp4")]
    stateless = copy.deepcopy(example_rows[4])
    stateless["messages"][2]["content"] = "no state token here"
    return [good, short, missing, broken, stateless]


def _run(rows, tmp_path, tokenizer, max_length, whole_videos=True):
    from datasets import Dataset

    data_file = tmp_path / "stream.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = StreamSettings(
        max_length=max_length,
        tokenizer=tokenizer,
        frames=FrameSource(max_pixels=SMALL_FRAMES),
        report_dir=str(tmp_path / "run"),
    )
    preprocessor = StreamPreprocessor(data_file=str(data_file), settings=settings, whole_videos=whole_videos)
    dataset = Dataset.from_list([{"messages": row["messages"], "videos": row["videos"]} for row in rows])
    mapped = preprocessor(dataset, load_from_cache_file=False)
    report = json.loads((tmp_path / "run" / "streamo_data_report.json").read_text())
    return mapped, report[0]


def test_bad_samples_are_removed_with_reasons_and_counted(samples, tmp_path, stream_processor):
    mapped, report = _run(samples, tmp_path, stream_processor.tokenizer, max_length=None)
    assert len(mapped) == 1
    assert report["samples"] == 5 and report["removed_samples"] == 4 and report["kept_samples"] == 1
    reasons = {entry["sample"]: entry["reason"] for entry in report["removed"]}
    assert set(reasons) == {1, 2, 3, 4}
    assert "25 <stream> turns but" in reasons[1] and "yields 26 frames" in reasons[1]
    assert reasons[2].startswith("field 'videos': video not found")
    assert reasons[3].startswith("field 'videos': unreadable video") and "broken.mp4" in reasons[3]
    assert reasons[4].startswith("field 'messages': message 2")


def test_inference_data_may_stop_before_the_video_ends(samples, tmp_path, stream_processor):
    mapped, report = _run(samples[:2], tmp_path, stream_processor.tokenizer, max_length=None, whole_videos=False)
    assert len(mapped) == 2 and report["removed_samples"] == 0


def test_long_clips_become_windows_that_fit_and_keep_every_turn(example_rows, tmp_path, make_template):
    template = make_template(max_length=256)
    row = copy.deepcopy(example_rows[0])
    mapped, report = _run([row], tmp_path, template.tokenizer, max_length=256)
    assert report["removed_samples"] == 0 and report["training_rows"] == len(mapped) > 1
    starts = []
    for window in mapped:
        encoded = template.encode(copy.deepcopy(window))  # raises if a window were over max_length
        assert len(encoded["input_ids"]) <= 256
        timeline = parse_stream_messages(window["messages"])
        starts.extend(turn.start for turn in timeline.turns)
        assert timeline.turns[0].questions[0] == "How many shapes are on the screen?"
    assert starts == [float(k) for k in range(26)]


def test_relative_video_paths_resolve_from_the_data_file_upwards(tmp_path, monkeypatch):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(b"x")
    (tmp_path / "data" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "data")
    assert locate_video("videos/a.mp4", str(tmp_path / "data" / "sub" / "stream.json")) == str(tmp_path / "videos" / "a.mp4")
    assert locate_video("videos/b.mp4", str(tmp_path / "data" / "sub" / "stream.json")) == "videos/b.mp4"


def test_a_file_with_no_usable_sample_stops_with_a_clear_error(samples, tmp_path, stream_processor):
    from streamo.swift_plugin.dataset import RemovedSample

    with pytest.raises(RemovedSample, match="all 2 samples were removed"):
        _run(samples[2:4], tmp_path, stream_processor.tokenizer, max_length=None)
    report = json.loads((tmp_path / "run" / "streamo_data_report.json").read_text())[0]
    assert report["removed_samples"] == 2
