import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamo.cli import main
from streamo.protocol import turn_count
from streamo.video import probe_duration

from .replica import Replica, build, clip

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    return build(tmp_path_factory.mktemp("replica"))


def prepare(replica, out, *extra, capsys=None):
    code = main(["instruct", "prepare", "--annotations", str(replica.annotations), *replica.video_root_args(),
                 "--out", str(out), "--workers", "2", *extra])
    summary = json.loads((out / "summary.json").read_text()) if code == 0 else None
    return code, summary


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_sample_is_converted_or_rejected_with_its_reason(replica, tmp_path, capsys):
    out = tmp_path / "out"
    code, summary = prepare(replica, out)
    assert code == 0
    converted = read_jsonl(out / "stream.jsonl")
    rejects = read_jsonl(out / "rejects.jsonl")
    rejected = [row for row in rejects if row["status"] == "rejected"]

    converted_ids = [sample["id"] for sample in converted]
    assert len(converted_ids) == len(set(converted_ids))
    assert set(converted_ids) == {id_ for id_, outcome in replica.expected.items() if outcome is None}
    by_place = {}
    for row in rejected:
        by_place[(row["file"], row["index"])] = row
    assert len(by_place) == len(rejected)
    assert len(converted) + len(rejected) == len(replica.expected) + len(replica.unreadable_records)
    for place in replica.unreadable_records:
        assert by_place[place]["problems"][0]["field"] == "sample"
    for id_, outcome in replica.expected.items():
        if outcome is not None:
            reason = by_place[replica.places[id_]]["reason"]
            assert outcome in reason, (id_, reason)

    (warned,) = [row for row in rejects if row["status"] == "converted_with_warnings"]
    assert (warned["file"], warned["index"]) == replica.places["na-one"]
    assert "the annotation says 30 s but the video lasts 8.00 s" in warned["reason"]
    assert summary["converted_with_warnings"] == 1

    for sample in converted:
        (video,) = sample["videos"]
        assert os.path.isabs(video) and os.path.isfile(video)
        turns = sum(message["role"] == "assistant" for message in sample["messages"])
        assert turns == turn_count(probe_duration(video))
    assert {sample["videos"][0] for sample in converted if sample["id"].startswith("qa-yc")} == {
        str(replica.roots["YouCook2"] / "c.mp4")}

    task_files = {path.name: read_jsonl(path) for path in (out / "tasks").iterdir()}
    assert set(task_files) == {"QA.jsonl", "Grounding.jsonl", "Narration.jsonl"}
    assert sorted(s["id"] for rows in task_files.values() for s in rows) == sorted(converted_ids)
    assert all(s["id"].startswith("gr-") for s in task_files["Grounding.jsonl"])

    sources = {row["source"]: row for row in summary["by_source"]}
    assert sources["ActivityNet"] | {"hours": 0} == {
        "source": "ActivityNet", "samples": 7, "videos": 5, "found": 1, "missing": 1, "unreadable": 3, "hours": 0,
        "converted": 2, "rejected": 5}
    assert sources["YouCook2"]["samples"] == 13 and sources["YouCook2"]["videos"] == 1
    assert sources["HACS"]["missing"] == 1 and sources["HACS"]["rejected"] == 1
    assert summary["total"]["samples"] == len(converted) + len(rejected)
    assert summary["probes"] == {"probed": 6, "reused": 0, "retried": 0}  # 8 videos: the zero-byte and the missing one need no probe
    printed = capsys.readouterr().out
    assert "ActivityNet" in printed and summary["commands"]["train"] in printed


def test_a_second_run_probes_only_what_changed(replica, tmp_path):
    copy = tmp_path / "replica"
    shutil.copytree(replica.root, copy)
    replica = Replica(copy, copy / "annotations",
                      {source: copy / path.relative_to(replica.root) for source, path in replica.roots.items()})
    out = tmp_path / "out"
    first = prepare(replica, out)[1]
    assert first["probes"]["probed"] == 6
    stream = (out / "stream.jsonl").stat()

    second = prepare(replica, out)[1]
    assert second["probes"] == {"probed": 0, "reused": 6, "retried": 0}
    assert second["conversion"] == "unchanged since the last run"
    assert second["total"] == first["total"]
    assert (out / "stream.jsonl").stat().st_mtime_ns == stream.st_mtime_ns

    anet = replica.roots["activitynet"]
    clip(anet / "v_missing.mp4", 8)  # downloaded since
    clip(anet / "v_damaged.mp4", 8)  # downloaded again
    third = prepare(replica, out)[1]
    assert third["probes"] == {"probed": 2, "reused": 5, "retried": 0}
    assert third["conversion"] == "written"
    ids = {sample["id"] for sample in read_jsonl(out / "stream.jsonl")}
    assert {"qa-missing", "qa-damaged"} <= ids
    row = {r["source"]: r for r in third["by_source"]}["ActivityNet"]
    assert (row["found"], row["missing"], row["unreadable"]) == (3, 0, 2)


def test_a_limited_subset_is_reproducible_and_honours_the_filters(replica, tmp_path):
    def ids(out, *extra):
        code, summary = prepare(replica, out, *extra)
        assert code == 0
        rejects = read_jsonl(out / "rejects.jsonl")
        return {s["id"] for s in read_jsonl(out / "stream.jsonl")} | {(r["file"], r["index"]) for r in rejects}, summary

    first, summary = ids(tmp_path / "a", "--limit", "6", "--seed", "1")
    again, _ = ids(tmp_path / "b", "--limit", "6", "--seed", "1")
    other, _ = ids(tmp_path / "c", "--limit", "6", "--seed", "2")
    assert first == again and len(first) == 6 and other != first
    assert summary["total"]["samples"] == 6
    assert summary["probes"]["probed"] <= 6

    youcook, summary = ids(tmp_path / "d", "--tasks", "qa", "--sources", "youcook")
    assert youcook == {f"qa-yc-{i}" for i in range(12)}
    assert [row["source"] for row in summary["by_source"]] == ["YouCook2"]
    assert summary["probes"]["probed"] == 1

    subset, _ = ids(tmp_path / "e", "--tasks", "QA", "--sources", "youcook2", "--limit", "3")
    assert len(subset) == 3 and subset <= youcook


@pytest.mark.parametrize("args, message", [
    (["--tasks", "Captioning"], "--tasks: no sample has Captioning"),
    (["--video-root", "COIN=/nonexistent/coin"], "no such directory"),
    (["--video-root", "=/tmp"], "empty source name"),
    (["--task-weight", "Captioning=2"], "--task-weight: no selected task is Captioning"),
])
def test_unusable_arguments_exit_with_status_2(replica, tmp_path, capsys, args, message):
    assert prepare(replica, tmp_path / "out", *args)[0] == 2
    assert message in capsys.readouterr().err


def test_a_source_without_root_falls_back_to_the_default_root(replica, tmp_path):
    hacs = tmp_path / "default" / "hacs"
    clip(hacs / "x.mp4", 6)
    code, summary = prepare(replica, tmp_path / "out", "--video-root", str(tmp_path / "default"))
    assert code == 0
    assert {r["source"]: r for r in summary["by_source"]}["HACS"]["converted"] == 1


def test_the_printed_commands_fill_the_frame_cache_and_start_training(replica, tmp_path):
    """The train.sh line, run against a stand-in ``swift`` that records its arguments, passes each
    task file to ``--dataset`` in ms-swift's syntax; the frames line fills the cache."""
    swift_syntax = pytest.importorskip("swift.dataset.dataset_syntax")
    out = tmp_path / "out"
    code, summary = prepare(replica, out, "--task-weight", "QA=2", "--task-weight", "Grounding=0")
    assert code == 0
    commands = summary["commands"]

    frames = shlex.split(commands["frames"])
    assert frames[:2] == ["streamo", "frames"] and main(frames[1:]) == 0
    manifest = read_jsonl(out / "frames" / "stream.manifest.jsonl")
    assert len(manifest) == len({s["videos"][0] for s in read_jsonl(out / "stream.jsonl")})
    assert not (out / "frames" / "stream.failures.jsonl").read_text()

    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    (venv / "swift").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\necho "$STREAMO_FRAME_CACHE" > {tmp_path}/cache\n')
    (venv / "swift").chmod(0o755)
    # The CPU recipe with a local MODEL: the GPU one stops without CUDA, before the stand-in would run.
    env = {**os.environ, "STREAMO_VENV": str(venv.parent), "PRESET": "cpu-tiny", "MODEL": str(tmp_path),
           "DEEPSPEED": "none", "NPROC_PER_NODE": "1", "PATH": os.environ["PATH"]}
    result = subprocess.run(["bash", "-c", commands["train"]], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    argv = (tmp_path / "argv").read_text().splitlines()
    datasets = argv[argv.index("--dataset") + 1:argv.index("--split_dataset_ratio")]
    parsed = {Path(syntax.dataset).name: syntax.dataset_sample
              for syntax in map(swift_syntax.DatasetSyntax.parse, datasets)}
    tasks = summary["files"]["tasks"]
    assert parsed == {"QA.jsonl": 2 * tasks["QA"]["samples"], "Narration.jsonl": None}
    assert (tmp_path / "cache").read_text().strip() == str((out / "frames").resolve())


def test_a_narrower_run_into_the_same_directory_leaves_no_stale_task_file(replica, tmp_path):
    out = tmp_path / "out"
    prepare(replica, out)
    assert len(list((out / "tasks").iterdir())) == 3
    code, summary = prepare(replica, out, "--tasks", "Narration")
    assert code == 0 and summary["probes"]["probed"] == 0
    assert [path.name for path in (out / "tasks").iterdir()] == ["Narration.jsonl"]
    assert {s["id"] for s in read_jsonl(out / "stream.jsonl")} == {"na-one", *(f"na-b-{i}" for i in range(5))}
