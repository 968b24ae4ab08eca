import json
from pathlib import Path

import pytest

from streamo.cli import main
from streamo.metrics import evaluate_files, load_truth
from streamo.metrics.plot import MAX_STACKED, write_plots

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "dataset" / "example"


def _truth():
    samples, problems = load_truth(EXAMPLE / "stream_format.json")
    assert not problems
    return samples


def _write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def perfect_records(samples, shift=0):
    """Per-second records that copy the truth, answers moved by ``shift`` turns."""
    records = []
    for sample in samples:
        turns = sample.timeline.turns
        states = [turn.state.value if turn.state.value != "response" else "silence" for turn in turns]
        texts = [""] * len(turns)
        for turn in sample.timeline.responses():
            target = min(max(turn.index + shift, 0), len(turns) - 1)
            states[target], texts[target] = "response", turn.answer
        for turn, state, text in zip(turns, states, texts):
            records.append({"sample": sample.index, "t": turn.start, "state": state, "text": text, "latency_ms": 5.0})
    return records


def test_perfect_predictions_score_one_and_raw_data_gives_the_same_truth(tmp_path):
    samples = _truth()
    predictions = _write(tmp_path / "pred.jsonl", perfect_records(samples))
    from_stream = evaluate_files(predictions, EXAMPLE / "stream_format.json")
    from_raw = evaluate_files(predictions, EXAMPLE / "raw_data.json")
    for evaluation in (from_stream, from_raw):
        summary = evaluation.report["summary"]
        assert summary["samples"] == len(samples) and not evaluation.problems
        assert summary["timing_f1"] == 1 and summary["macro_f1"] == 1 and summary["answer_exact"] == 1
        assert evaluation.report["latency_ms"]["mean"] == 5.0
    assert from_stream.report["summary"] == from_raw.report["summary"]


def test_late_predictions_within_tolerance(tmp_path):
    predictions = _write(tmp_path / "pred.jsonl", perfect_records(_truth(), shift=1))
    summary = evaluate_files(predictions, EXAMPLE / "stream_format.json").report["summary"]
    assert summary["timing_f1"] == 1 and summary["mean_abs_delay_s"] == 1
    strict = evaluate_files(predictions, EXAMPLE / "stream_format.json", tolerance=0).report["summary"]
    assert strict["timing_f1"] < 0.1 and strict["late"] > 0 and strict["missed"] > 0


def test_bad_records_are_reported_and_the_rest_is_scored(tmp_path):
    samples = _truth()
    good = [r for r in perfect_records(samples[:1])]
    bad = [
        {"sample": 0, "t": -1, "state": "silence"},
        {"sample": 0, "t": 3, "state": "talking"},
        {"sample": 99, "t": 0, "state": "silence"},
        {"sample": 0, "t": 1000, "state": "silence"},
        {"sample": 0, "t": 0.0, "state": "</Response>", "text": "again"},
        [1, 2],
    ]
    evaluation = evaluate_files(_write(tmp_path / "pred.jsonl", good + bad), EXAMPLE / "stream_format.json")
    problems = "\n".join(evaluation.problems)
    n = len(good)
    assert f"record {n + 1}: t:" in problems and f"record {n + 2}: state:" in problems
    assert f"record {n + 3}: sample: 99" in problems and f"record {n + 4}: t=1000" in problems
    assert f"record {n + 5}: second prediction for turn 0" in problems and f"record {n + 6}: expected a JSON object" in problems
    assert evaluation.report["summary"]["samples"] == 1 and evaluation.report["summary"]["timing_f1"] == 1
    assert evaluation.report["samples_without_predictions"] == [s.key for s in samples[1:]]


def test_single_sample_data_needs_no_sample_field_and_accepts_tokens(tmp_path):
    raw = json.loads((EXAMPLE / "raw_data.json").read_text())[0]
    data = tmp_path / "one.json"
    data.write_text(json.dumps([raw]))
    truth = load_truth(data)[0][0].timeline
    records = [{"t": turn.start, "state": turn.state.token, "text": turn.answer} for turn in truth.turns]
    evaluation = evaluate_files(_write(tmp_path / "pred.jsonl", records), data)
    assert evaluation.report["summary"]["timing_f1"] == 1 and not evaluation.problems


def test_unusable_truth_samples_are_reported(tmp_path):
    raw = json.loads((EXAMPLE / "raw_data.json").read_text())[:2]
    raw[1]["response"][0]["end_time"] = 999
    data = tmp_path / "raw.json"
    data.write_text(json.dumps(raw))
    samples, problems = load_truth(data)
    assert len(samples) == 1 and len(problems) == 1 and "sample 1: response[0].end_time" in problems[0]


def test_cli_eval_writes_report_and_plots(tmp_path, capsys):
    samples = _truth()
    predictions = _write(tmp_path / "pred.jsonl", perfect_records(samples, shift=-2))
    data = EXAMPLE / "stream_format.json"
    report, picture, pictures = tmp_path / "report.json", tmp_path / "all.png", tmp_path / "plots"
    args = ["eval", "--predictions", str(predictions), "--data", str(data), "--out", str(report)]
    assert main(args + ["--plot", str(picture)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == evaluate_files(predictions, data).report["summary"] and summary["early"] > 0
    full = json.loads(report.read_text())
    assert full["summary"] == summary and len(full["per_sample"]) == len(samples)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 20_000
    assert main(args + ["--plot", str(pictures)]) == 0
    assert sorted(p.name for p in pictures.iterdir()) == sorted(f"sample_{s.key}.png" for s in samples)
    assert main(args + ["--tolerance", "-1"]) == 2
    empty = _write(tmp_path / "empty.jsonl", [])
    assert main(["eval", "--predictions", str(empty), "--data", str(data)]) == 2
    assert "no sample" in capsys.readouterr().err


def test_one_picture_refuses_too_many_samples(tmp_path):
    samples = _truth()
    evaluation = evaluate_files(_write(tmp_path / "p.jsonl", perfect_records(samples[:1])), EXAMPLE / "stream_format.json")
    items = evaluation.items * (MAX_STACKED + 1)
    with pytest.raises(ValueError, match="directory"):
        write_plots(tmp_path / "x.png", items, evaluation.scores * (MAX_STACKED + 1))
    assert not (tmp_path / "x.png").exists()
