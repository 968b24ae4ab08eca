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


def test_validate_reports_every_problem_of_a_sample_at_once(tmp_path, capsys):
    """An unreadable duration does not hide the answer that ends before it starts, nor an empty question."""
    sample = bad(0)
    sample["duration"] = "abc"
    sample["question"].append({"content": " ", "time": 2})
    raw = write_raw(tmp_path / "raw.json", [sample])
    assert main(["validate", "--input", str(raw)]) == 0
    err = capsys.readouterr().err
    assert "raw.json: sample 0: duration: not a time: 'abc'" in err
    assert "raw.json: sample 0: response[0].end_time: end (1 s) is before start (2 s)" in err
    assert "raw.json: sample 0: question[1].content: empty text" in err


def test_an_answer_beyond_the_end_is_reported_at_its_own_second(tmp_path, capsys):
    sample = good(0, duration=40)
    sample["response"] = [{"content": "Late.", "time": 50}, {"content": "Late too.", "st_time": 38, "end_time": 39.5}]
    raw = write_raw(tmp_path / "raw.json", [sample])
    assert main(["validate", "--input", str(raw)]) == 0
    err = capsys.readouterr().err
    assert "sample 0: response[0].time: answer at 50 s falls beyond the video end (40 s)" in err
    assert "sample 0: response[1].end_time: answer after end_time 39.5 s falls beyond the video end (40 s)" in err


def test_validate_writes_the_rejects_report_only_where_asked(tmp_path, capsys):
    """Its --help says so: no report by default (more problems than are printed say how to see them all)."""
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    assert "default: none: validate writes no file" in " ".join(capsys.readouterr().out.split())
    raw = write_raw(tmp_path / "raw.json", [bad(i) for i in range(25)])
    assert main(["validate", "--input", str(raw)]) == 0
    assert "5 more problems not shown; --rejects FILE lists them all" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.json"]
    report = tmp_path / "checked" / "rejects.jsonl"
    assert main(["validate", "--input", str(raw), "--rejects", str(report)]) == 0
    assert [entry["index"] for entry in read_jsonl(report)] == list(range(25))
    assert f"all in {report}" in capsys.readouterr().err


def test_version(capsys):
    """``streamo --version`` names the version that pyproject.toml gives the package."""
    import tomllib

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out == f"streamo {version}\n"


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
