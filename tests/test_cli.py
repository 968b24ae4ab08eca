import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamo.cli import main

REPO = Path(__file__).resolve().parent.parent


def write_raw(path, samples, jsonl=False):
    if jsonl:
        path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    else:
        path.write_text(json.dumps(samples))
    return path


def good(i, duration=8):
    return {
        "video_name": f"v{i}.mp4",
        "video_path": f"v{i}.mp4",
        "question": [{"content": "What happens?", "time": "1"}],
        "response": [{"content": f"Answer {i}.", "st_time": 2, "end_time": 3, "time": ""}],
        "duration": duration,
    }


def bad(i):
    sample = good(i)
    sample["response"][0]["end_time"] = 1
    return sample


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_sample_converted_or_reported(tmp_path, capsys):
    raw = write_raw(tmp_path / "raw.jsonl", [good(0), bad(1), good(2), bad(3)], jsonl=True)
    out = tmp_path / "stream.jsonl"
    assert main(["convert", "--input", str(raw), "--output", str(out), "--workers", "1"]) == 0
    converted = read_jsonl(out)
    assert [s["video_name"] for s in converted] == ["v0.mp4", "v2.mp4"]
    report = read_jsonl(tmp_path / "stream.rejects.jsonl")
    assert [(r["index"], r["status"]) for r in report] == [(1, "rejected"), (3, "rejected")]
    assert report[0]["problems"][0]["field"] == "response[0].end_time"
    err = capsys.readouterr().err
    assert "raw.jsonl: sample 1: response[0].end_time: end (1 s) is before start (2 s)" in err
    assert "4 samples: 2 converted (0 with warnings), 2 rejected" in err


def test_parallel_workers_keep_input_order(tmp_path):
    samples = [good(i) if i % 7 else bad(i) for i in range(700)]
    raw = write_raw(tmp_path / "raw.json", samples)
    outputs = []
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}.jsonl"
        assert main(["convert", "--input", str(raw), "--output", str(out), "--workers", workers]) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == 600


def test_strict_exit_status_and_custom_rejects_path(tmp_path):
    raw = write_raw(tmp_path / "raw.json", [good(0), bad(1)])
    rejects = tmp_path / "r" / "rejects.jsonl"
    args = ["convert", "--input", str(raw), "--output", str(tmp_path / "o.json"), "--rejects", str(rejects)]
    assert main(args + ["--strict"]) == 1
    assert len(read_jsonl(rejects)) == 1


def test_invalid_json_line_is_rejected_not_fatal(tmp_path):
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps(good(0)) + "\n{broken\n")
    out = tmp_path / "o.jsonl"
    assert main(["convert", "--input", str(raw), "--output", str(out)]) == 0
    report = read_jsonl(tmp_path / "o.rejects.jsonl")
    assert report[0]["index"] == 1 and "line 2" in report[0]["problems"][0]["message"]


def test_unusable_input_exits_2(tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text("not json")
    assert main(["validate", "--input", str(path)]) == 2
    assert "expected a JSON list" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["convert", "--input", str(tmp_path / "missing.json"), "--output", "o.json"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["convert", "--input", str(path), "--output", "o.json", "--fps", "0"])


def test_validate_writes_nothing_and_reports(tmp_path, capsys):
    raw = write_raw(tmp_path / "raw.json", [good(0), bad(1)])
    assert main(["validate", "--input", str(raw)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.json"]
    assert "2 samples: 1 converted (0 with warnings), 1 rejected" in capsys.readouterr().err


def test_stats_counts_states(tmp_path, capsys):
    raw = write_raw(tmp_path / "raw.json", [good(0), good(1, duration=40)])
    out = tmp_path / "s.json"
    main(["convert", "--input", str(raw), "--output", str(out)])
    assert main(["stats", "--input", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == 2 and stats["turns"] == 48
    assert stats["states"]["response"] == 2
    assert stats["states"]["standby"] == 4 and stats["states"]["silence"] == 42
    assert stats["duration_histogram"]["<30s"] == 1 and stats["duration_histogram"]["30s-1m"] == 1


def test_script_entry_point_help():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "convert_streaming_video.py"), "--help"],
        capture_output=True, text=True, check=True,
    )
    assert "to-stream" in result.stdout and "validate" in result.stdout and "stats" in result.stdout
