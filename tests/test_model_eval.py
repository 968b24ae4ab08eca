"""``streamo eval --model`` and ``streamo ovobench``: the streaming engine over evaluation data.

The model is the tiny random Qwen2.5-VL with the state tokens (untrained: what it decides
does not matter here, only that every sample is played, written and scored by the same code
as a predictions file).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from streamo.cli import main
from streamo.metrics.data import TruthSample
from streamo.engine.model import EngineSettings
from streamo.model_eval import EvalSample, predict_sample
from streamo.protocol import State, Timeline, Turn

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "ovo_bench_annotations.json"
FRAME_BUDGET = "3136"  # 56x56 pixels: 4 visual tokens per frame


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from streamo.tiny_model import TinyModelSpec, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-state", TinyModelSpec(with_state_tokens=True))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from streamo.video.synthetic import frame_times, write_clip

    path = tmp_path_factory.mktemp("videos") / "clip.mp4"
    write_clip(path, frame_times(12 * 5, 5.0), width=96, height=64)
    return path


def _raw_file(folder: Path, clip: Path) -> Path:
    samples = [
        {"video_path": clip.name, "duration": 6, "question": [{"content": "When does it turn red?", "time": "0"}],
         "response": [{"content": "Now.", "st_time": 2.0, "end_time": 3.0, "time": ""}]},
        {"video_path": "missing.mp4", "duration": 5, "question": [{"content": "What is it?", "time": "1"}],
         "response": [{"content": "A square.", "time": "2", "st_time": "", "end_time": ""}]},
        {"video_path": clip.name, "duration": 4, "question": [{"content": "Say when it moves.", "time": "2"}],
         "response": [{"content": "It moved.", "time": "3", "st_time": "", "end_time": ""}]},
    ]
    shutil.copy(clip, folder / clip.name)
    path = folder / "raw.json"
    path.write_text(json.dumps(samples))
    return path


def test_eval_model_plays_every_sample_and_scores_like_its_predictions_file(tiny_model, clip, tmp_path, capsys):
    data = _raw_file(tmp_path, clip)
    predictions, report = tmp_path / "pred.jsonl", tmp_path / "report.json"
    status = main(["eval", "--model", str(tiny_model), "--data", str(data), "--video-prefix", str(tmp_path),
                   "--max-pixels", FRAME_BUDGET, "--max-new-tokens", "4", "--predictions-out", str(predictions),
                   "--out", str(report)])
    captured = capsys.readouterr()
    assert status == 0
    summary = json.loads(captured.out.strip().splitlines()[-1])
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    # Samples 0 and 2 play 6 and 4 turns; sample 1's video is missing and is reported, not dropped.
    assert [(r["sample"], r["t"]) for r in records] == [(0, float(t)) for t in range(6)] + [(2, float(t)) for t in range(4)]
    assert all(r["state"] in {"silence", "standby", "response"} for r in records)
    assert summary["samples"] == 2 and summary["turns"] == 10
    written = json.loads(report.read_text())
    assert written["samples_without_predictions"] == [1]
    assert any("sample 1" in p and "missing.mp4" in p for p in written["problems"])
    assert "missing.mp4" in captured.err

    assert main(["eval", "--predictions", str(predictions), "--data", str(data), "--video-prefix", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary


def test_eval_model_refuses_unusable_inputs_in_one_line(tiny_model, tmp_path, capsys):
    data = tmp_path / "raw.json"
    data.write_text(json.dumps([{"video_path": "x.mp4", "duration": 3, "question": [{"content": "Q?", "time": "0"}],
                                 "response": [{"content": "A.", "time": "1", "st_time": "", "end_time": ""}]}]))
    assert main(["eval", "--model", str(tmp_path / "nowhere"), "--data", str(data)]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert main(["eval", "--predictions", str(data), "--data", str(data), "--predictions-out", str(tmp_path / "p.jsonl")]) == 2
    assert "--predictions-out needs --model" in capsys.readouterr().err


def test_sessions_open_with_the_system_prompt_training_used(tiny_model, clip, tmp_path, capsys):
    from streamo.cli import build_parser
    from streamo.engine.model import StreamModel, engine_settings

    data = _raw_file(tmp_path, clip)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Watch the frames.")
    arguments = ["eval", "--model", str(tiny_model), "--data", str(data), "--system-prompt-file", str(prompt)]
    settings = engine_settings(build_parser().parse_args([*arguments, "--max-pixels", FRAME_BUDGET]))
    session = StreamModel(tiny_model, settings).session()
    assert session.context_messages() == [{"role": "system", "content": "Watch the frames."}]
    assert session.cache_length == len(session.tokens.system("Watch the frames."))

    prompt.write_text("  \n")
    with pytest.raises(SystemExit) as exited:
        main(arguments)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert f"argument --system-prompt-file: {prompt}: empty" in err and "Traceback" not in err


class _ScriptedSession:
    def __init__(self):
        self.asked: list[tuple[str, float]] = []
        self.pushed: list[float] = []

    def ask(self, text, t):
        self.asked.append((text, t))

    def push_frame(self, image, t):
        from streamo.engine.session import StreamEvent

        self.pushed.append(t)
        return StreamEvent(t, int(t * 2), State.SILENCE, "", 1.0)


class _ScriptedModel:
    settings = EngineSettings(fps=2.0)

    def __init__(self, frames: int):
        self.frame_count = frames
        self.last_session = _ScriptedSession()

    def session(self):
        return self.last_session

    def frames(self, video, turns):
        for turn in range(min(turns, self.frame_count)):
            yield turn, None


def _truth(turns: int, questions: dict[int, list[str]]) -> EvalSample:
    timeline = Timeline(system="s", fps=2.0, turns=[
        Turn(index=k, start=k / 2, end=(k + 1) / 2, questions=questions.get(k, []), state=State.SILENCE) for k in range(turns)
    ])
    return EvalSample(TruthSample("clip-1", 0, timeline), "clip.mp4")


def test_questions_are_shown_on_the_turns_the_truth_shows_them():
    model = _ScriptedModel(frames=5)
    records = predict_sample(model, _truth(5, {0: ["Q1"], 3: ["Q1", "Q2"]}))
    # At 2 fps, moment 2.0 s ends turn 3 (<1.5s-2s>), the moment "2" in an annotation.
    assert model.last_session.asked == [("Q1", 0.5), ("Q1", 2.0), ("Q2", 2.0)]
    assert model.last_session.pushed == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert [r["sample"] for r in records] == ["clip-1"] * 5


def test_a_video_shorter_than_the_truth_is_an_error_naming_it():
    with pytest.raises(ValueError, match="clip.mp4: gave 3 frames, the ground truth has 5 turns"):
        predict_sample(_ScriptedModel(frames=3), _truth(5, {0: ["Q"]}))


def test_ovobench_runs_the_engine_and_scores_by_the_benchmark_rules(tiny_model, tmp_path, capsys):
    from streamo.video.synthetic import frame_times, write_clip

    annotations = [record for record in json.loads(FIXTURE.read_text()) if record["id"] in (1, 10, 30)]
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    for record in annotations:
        video = tmp_path / "videos" / record["video"]
        video.parent.mkdir(parents=True, exist_ok=True)
        write_clip(video, frame_times(5 * 12 if record["id"] != 1 else 5 * 41, 5.0), width=64, height=64)
    replies, report = tmp_path / "replies.jsonl", tmp_path / "report.json"
    status = main(["ovobench", "--annotations", str(tmp_path / "ann.json"), "--video-root", str(tmp_path / "videos"),
                   "--model", str(tiny_model), "--max-pixels", FRAME_BUDGET, "--max-new-tokens", "3",
                   "--predictions-out", str(replies), "--out", str(report)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 0
    assert out["score"]["probes"] == {"REC": 3, "CRR": 4, "EPM": 1}
    assert set(out["latency"]["tasks"]) == {"REC", "CRR"}
    written = json.loads(report.read_text())
    assert not written["problems"]
    # The multiple-choice probe is answered (forced) at its time; forward probes are derived from the stream.
    epm = [p for p in written["probes"] if p["task"] == "EPM"][0]
    assert isinstance(epm["reply"], str) and epm["error"] is None
    assert {p["reply"] for p in written["probes"] if p["task"] == "CRR"} <= {"Yes", "No"}

    assert main(["ovobench", "--annotations", str(tmp_path / "ann.json"), "--predictions", str(replies)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["score"] == out["score"]


def test_ovobench_scores_a_replies_file_and_counts_missing_replies_wrong(tmp_path, capsys):
    replies = tmp_path / "replies.jsonl"
    replies.write_text("\n".join(json.dumps(r) for r in [
        {"id": 1, "index": 0, "reply": "C"},          # EPM, right
        {"id": 3, "index": 0, "reply": "A"},          # STU, wrong (B)
        {"id": 10, "index": 0, "reply": "0"}, {"id": 10, "index": 2, "reply": "2"},  # REC: probe 1 missing
        {"id": 10, "index": "x", "reply": "1"},       # unusable record
    ]) + "\n")
    report = tmp_path / "report.json"
    assert main(["ovobench", "--annotations", str(FIXTURE), "--tasks", "EPM", "STU", "REC",
                 "--predictions", str(replies), "--out", str(report)]) == 0
    scored = json.loads(report.read_text())
    assert scored["score"]["tasks"] == {"EPM": 100.0, "STU": 0.0, "REC": pytest.approx(200 / 3)}
    assert any("record 5" in p for p in scored["problems"])
    assert any("1 probes have no reply" in p for p in scored["problems"])
    assert main(["ovobench", "--annotations", str(FIXTURE), "--tasks", "NOPE", "--predictions", str(replies)]) == 2
    assert "unknown NOPE" in capsys.readouterr().err
