"""``streamo stream``: inputs, questions, output formats and one-line errors."""

from __future__ import annotations

import json

import pytest

from streamo.cli import main
from streamo.metrics.data import iter_predictions
from streamo.protocol import time_tag
from streamo.video.synthetic import frame_times, write_clip

from .stream_model import ANSWERS, MAX_PIXELS, PLAN, QUESTION, frame


@pytest.fixture(scope="module")
def frame_dir(tmp_path_factory):
    """The planned frames as lossless pictures, one per second."""
    folder = tmp_path_factory.mktemp("frames")
    for turn in range(len(PLAN)):
        frame(turn).save(folder / f"frame_{turn:04d}.png")
    return folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    write_clip(path, frame_times(30, 5.0), width=112, height=84)  # 6 s
    return path


def _stream(stream_model, *arguments):
    return main(["stream", "--model", str(stream_model.directory), "--max-pixels", str(MAX_PIXELS), *arguments])


def test_frame_directory_plays_the_plan(stream_model, frame_dir, capsys):
    assert _stream(stream_model, "--video", str(frame_dir), "--question", QUESTION, "--at", "0") == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    expected = []
    for turn, state in enumerate(PLAN):
        line = f"{time_tag(turn):<11}  {state.value:<8}"
        expected.append(f"{line}  {ANSWERS[turn]}" if turn in ANSWERS else line.rstrip())
    assert lines == expected
    assert f"{len(PLAN)} frames, {len(ANSWERS)} responses" in captured.err


def test_json_lines_are_predictions_streamo_eval_reads(stream_model, clip, tmp_path, capsys):
    code = _stream(stream_model, "--video", str(clip), "--question", "What moves?", "--at", "2",
                   "--question", "And now?", "--at", "4.5", "--json", "--window", "3", "--max-new-tokens", "4")
    assert code == 0
    out = capsys.readouterr().out
    records = [json.loads(line) for line in out.splitlines()]
    assert [record["t"] for record in records] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert all(set(record) == {"t", "state", "text", "latency_ms"} for record in records)
    assert all(record["state"] in {"silence", "standby", "response"} for record in records)
    assert all(bool(record["text"]) <= (record["state"] == "response") for record in records)
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(out, encoding="utf-8")
    parsed = [record for _, record in iter_predictions(predictions)]
    assert [p.t for p in parsed] == [r["t"] for r in records] and all(not isinstance(p, str) for p in parsed)


def test_questions_from_raw_annotations(stream_model, frame_dir, tmp_path, capsys):
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps([{
        "video_path": "frames", "question": [{"content": QUESTION, "time": "1"}],
        "response": [{"content": "It turned red.", "st_time": 1.0, "end_time": 4.0, "time": ""}],
    }]), encoding="utf-8")
    assert _stream(stream_model, "--video", str(frame_dir), "--questions", str(raw), "--json") == 0
    states = [json.loads(line)["state"] for line in capsys.readouterr().out.splitlines()]
    assert states == [state.value for state in PLAN]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--question", "What?", "--at", "30"], "after the end"),
        (["--question", "  "], "--question 1 is empty"),
        (["--question", "A", "--question", "B", "--at", "1"], "one --at per --question"),
        ([], "nothing to ask"),
        (["--question", "What?", "--window", "1"], "at least 2 frames"),
    ],
)
def test_bad_questions_fail_in_one_line(stream_model, frame_dir, capsys, arguments, message):
    assert _stream(stream_model, "--video", str(frame_dir), *arguments) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unreadable_inputs_fail_in_one_line(stream_model, tiny_model_dir, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--video", str(broken)], "unreadable video"),
        (["--video", str(tmp_path / "missing.mp4")], "no such file"),
        (["--video", str(empty)], "no frame pictures"),
    ]
    for arguments, message in cases:
        assert _stream(stream_model, *arguments, "--question", "What?") == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    clip = tmp_path / "clip.mp4"
    write_clip(clip, frame_times(10, 5.0), width=56, height=56)
    assert main(["stream", "--model", str(tiny_model_dir), "--video", str(clip), "--question", "What?"]) == 2
    assert "single token id" in capsys.readouterr().err
    assert main(["stream", "--model", str(tmp_path), "--video", str(clip), "--question", "What?"]) == 2
    assert "not a model checkpoint" in capsys.readouterr().err


def test_live_stream_on_stdin(stream_model, tmp_path, monkeypatch, capsys):
    import io
    import sys

    live = tmp_path / "live.ts"
    write_clip(live, frame_times(25, 5.0), width=112, height=84, container_format="mpegts")  # packets span 4.8 s
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(live.read_bytes())))
    assert _stream(stream_model, "--video", "-", "--question", "What?", "--at", "2", "--question", "Later?",
                   "--at", "60", "--json", "--max-new-tokens", "2") == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["t"] for line in captured.out.splitlines()] == [0.0, 1.0, 2.0, 3.0]
    assert "'Later?' was never shown" in captured.err


def test_realtime_paces_frames_by_the_clock(stream_model, frame_dir, monkeypatch, capsys):
    import streamo.engine.command as command

    waits = []
    monkeypatch.setattr(command.time, "sleep", waits.append)
    assert _stream(stream_model, "--video", str(frame_dir), "--question", QUESTION, "--realtime", "--fps", "0.5") == 0
    capsys.readouterr()
    # (sleep does not pass time here) Frame k waits until 2k s after the start, never longer;
    # the last one, 14 s of stream time in, is sure to be early even on a busy machine.
    assert len(waits) == len(PLAN) and all(0 <= wait <= 2 * turn for turn, wait in enumerate(waits))
    assert waits[-1] > 0
