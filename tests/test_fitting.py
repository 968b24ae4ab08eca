"""``streamo fit-head``: bad input is named (file, sample, field) before any model work, and a
fit that cannot reproduce its conversations says so instead of saving a wrong model."""

from __future__ import annotations

import json

from streamo.cli import main


def test_bad_samples_are_named_before_the_model_loads(tmp_path, capsys):
    data = tmp_path / "stream.json"
    data.write_text(json.dumps([{"messages": [], "videos": ["v.mp4"]}, {"messages": []}]))
    missing_model = str(tmp_path / "no-model")
    common = ["fit-head", "--model", missing_model, "--data", str(data), "--out", str(tmp_path / "out")]
    assert main([*common, "--sample", "5"]) == 2
    assert f"{data}: no sample 5 (2 records)" in capsys.readouterr().err
    assert main([*common, "--sample", "1"]) == 2
    assert f"{data}: sample 1: needs 'messages' and one entry in 'videos'" in capsys.readouterr().err
    data.write_text("{not json")
    assert main([*common, "--sample", "0"]) == 2
    assert str(data) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_video_names_its_sample(stream_model, tmp_path, capsys):
    data = tmp_path / "stream.json"
    data.write_text(json.dumps([{"messages": [{"role": "system", "content": "s"}], "videos": ["gone.mp4"]}]))
    assert main(["fit-head", "--model", str(stream_model.directory), "--data", str(data), "--video-prefix", str(tmp_path),
                 "--sample", "0", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{data}: sample 0: videos[0] {tmp_path / 'gone.mp4'}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
