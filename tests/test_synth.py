import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from streamo.batch import process_file
from streamo.cli import main
from streamo.convert import ConvertOptions, convert_sample
from streamo.protocol import State, parse_stream_messages
from streamo.synth import SynthOptions, generate, make_scene, parse_pause, parse_range, parse_size
from streamo.synth.render import BACKGROUND, CHANGED_BACKGROUND, EXPOSURE, MOVING_BACKGROUND, Canvas
from streamo.synth.scene import COLOURS, DEFAULT_DURATION, DEFAULT_PAUSE, FIRST_CHANGE, TASK_TYPES, annotate

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "dataset" / "example"


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, SynthOptions(videos=3, seed=7))
    return out


def _scene_samples(seed: int, index: int):
    scene = make_scene(seed, index)
    return scene, annotate(scene, seed, index, "v.mp4", "v.mp4")


def test_same_seed_same_files_and_other_seed_differs(synth_dir, tmp_path):
    again = generate(tmp_path / "again", SynthOptions(videos=3, seed=7))
    assert again.read_bytes() == (synth_dir / "raw_data.json").read_bytes()
    for video in sorted((synth_dir / "videos").iterdir()):
        assert (tmp_path / "again" / "videos" / video.name).read_bytes() == video.read_bytes()
    other = generate(tmp_path / "other", SynthOptions(videos=3, seed=8))
    assert other.read_bytes() != again.read_bytes()


def test_same_files_whatever_the_memory_the_encoder_is_handed(tmp_path):
    """A fresh process hands the encoder zeroed memory, one that has run for a while reused
    memory; glibc's MALLOC_PERTURB_ fills what malloc returns with a given byte, so the runs
    below differ only in what memory nobody wrote holds. (x264 with B-frames read some.)"""
    files = {}
    plain = {key: value for key, value in os.environ.items() if key != "MALLOC_PERTURB_"}
    for perturb in ("", "85", "170"):
        out = tmp_path / f"perturb{perturb}"
        command = [sys.executable, "-m", "streamo.cli", "synth", "--out", str(out), "--videos", "3", "--seed", "7"]
        environ = {**plain, "MALLOC_PERTURB_": perturb} if perturb else plain
        subprocess.run(command, check=True, capture_output=True, env=environ, cwd=REPO)
        files[perturb] = {video.name: video.read_bytes() for video in (out / "videos").iterdir()}
    assert files["85"] == files[""] and files["170"] == files[""]


def test_every_task_type_per_video_and_relative_paths(synth_dir):
    samples = json.loads((synth_dir / "raw_data.json").read_text())
    assert len(samples) == 3 * len(TASK_TYPES)
    for sample in samples:
        assert not Path(sample["video_path"]).is_absolute()
        assert (synth_dir / sample["video_path"]).is_file()
    assert [s["task_type"] for s in samples[: len(TASK_TYPES)]] == list(TASK_TYPES)
    multi = [s for s in samples if s["task_type"] == "MultiQA"]
    assert all(len(s["question"]) >= 2 for s in multi)
    assert any(len(s["question"]) == 3 for s in multi)


def test_converted_synth_validates_with_no_rejects_or_warnings(synth_dir):
    summary = process_file(
        synth_dir / "raw_data.json", ConvertOptions(video_prefix=str(synth_dir)), None, None, progress=False
    )
    assert summary.total == 3 * len(TASK_TYPES)
    assert summary.rejected == 0 and summary.with_warnings == 0


def test_files_last_exactly_the_annotated_duration(synth_dir):
    from streamo.video.probe import probe_duration

    samples = json.loads((synth_dir / "raw_data.json").read_text())
    for sample in samples[:: len(TASK_TYPES)]:
        assert probe_duration(synth_dir / sample["video_path"]) == pytest.approx(sample["duration"], abs=1e-3)


@pytest.mark.parametrize("seed,index", [(0, 0), (1, 5), (3, 2), (11, 9)])
def test_labels_follow_from_the_frames(seed, index):
    """Each Response turn's frame is the first to show its change; frames of QA turns are still."""
    scene, samples = _scene_samples(seed, index)
    for sample in samples:
        outcome = convert_sample(sample, ConvertOptions())
        assert outcome.sample is not None and not outcome.problems
        timeline = parse_stream_messages(outcome.sample["messages"])
        for turn in timeline.responses():
            k = turn.index
            if any(verb in turn.answer for verb in ("moved", "appeared", "disappeared", "changed from")):
                before, now, after = scene.state_at(k - 1), scene.state_at(k), scene.state_at(k + 0.9)
                assert before != now, (sample["task_type"], turn)
                assert now == after, "the answer turn must show the change complete"
            else:
                assert scene.state_at(k) == scene.state_at(k + 1 - 1e-6), "state questions are asked about a still scene"


def test_move_answers_name_the_columns_seen_in_the_frames():
    scene, samples = _scene_samples(2, 4)
    grounding = next(s for s in samples if s["task_type"] == "Grounding")
    for response in grounding["response"]:
        start, end = response["st_time"], response["end_time"]
        moving = [s for s in scene.state_at(end + 0.5) if s.kind in response["content"]]
        origin = [s for s in scene.state_at(start - 0.5) if s.kind in response["content"]]
        names = ("left", "centre", "right")
        assert response["content"].endswith(f"from the {names[round(origin[0].x)]} to the {names[round(moving[0].x)]}.")


def test_grounding_each_asks_about_every_moving_shape_and_keeps_the_standard_samples():
    for index in range(8):
        scene = make_scene(5, index)
        standard = annotate(scene, 5, index, "v.mp4", "v.mp4")
        each = annotate(scene, 5, index, "v.mp4", "v.mp4", grounding="each")
        assert each[: len(standard)] == standard, "the default samples come first, unchanged"
        grounding = [s for s in each if s["task_type"] == "Grounding"]
        moved = {c.shape for c in scene.changes if c.kind == "move"}
        named = [next(scene.shapes[i].kind for i in moved if scene.shapes[i].kind in g["question"][0]["content"]) for g in grounding]
        assert sorted(named) == sorted(scene.shapes[i].kind for i in moved), "one sample per moving shape, none twice"
        for sample, kind in zip(grounding, named):
            shape = next(i for i in moved if scene.shapes[i].kind == kind)
            ends = [c.end for c in scene.changes if c.kind == "move" and c.shape == shape]
            assert [r["end_time"] for r in sample["response"]] == ends
    with pytest.raises(ValueError, match="grounding"):
        annotate(make_scene(5, 0), 5, 0, "v.mp4", "v.mp4", grounding="all")


def test_decoded_frames_show_the_scene(synth_dir):
    sample = json.loads((synth_dir / "raw_data.json").read_text())[0]
    scene = make_scene(7, 0)
    canvas = Canvas(160, 128)
    with av.open(str(synth_dir / sample["video_path"])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == scene.duration * 5
    for second in range(scene.duration):
        frame = frames[second * 5].astype(int)
        if scene.moving_between(second - EXPOSURE, second):
            continue  # smeared by motion: test_motion_is_smeared_and_rest_is_sharp
        for shape in scene.state_at(second):
            cx, cy = canvas.centre(shape.x, shape.row)
            assert np.abs(frame[cy, cx] - COLOURS[shape.colour]).max() < 40
        assert np.abs(frame[1, 1] - BACKGROUND).max() < 20


def _colours(frame: np.ndarray) -> set[tuple[int, ...]]:
    return set(map(tuple, frame.reshape(-1, 3).tolist()))


def test_motion_is_smeared_and_rest_is_sharp():
    """Frames taken while a shape moves show it smeared (colours between it and the background);
    the frame before the move and the move's answer frame, the first after it, are sharp."""
    canvas = Canvas(160, 128)
    palette = {BACKGROUND, *COLOURS.values()}
    moves = 0
    for index in range(4):
        scene = make_scene(0, index)
        for change in (c for c in scene.changes if c.kind == "move"):
            first, last = int(change.start - 0.5), int(change.end - 0.5)
            for second in range(first + 1, last + 1):
                assert _colours(canvas.draw(scene, second)) - palette, f"scene {index}: second {second} is mid-move"
            for second in (first, last + 1):
                assert _colours(canvas.draw(scene, second)) <= palette, f"scene {index}: second {second} is at rest"
            moves += 1
    assert moves >= 4


@pytest.mark.parametrize("seed,index", [(0, 0), (1, 5), (3, 2)])
def test_timing_cue_marks_the_narration_answer_turns_and_the_moves(seed, index):
    """With the timing cue, the turns whose frames are red are exactly Narration's answer turns
    and the blue ones are its Standby turns after the first of each span (the frames taken
    mid-move); without it, every background is plain."""
    scene, samples = _scene_samples(seed, index)
    narration = next(s for s in samples if s["task_type"] == "Narration")
    outcome = convert_sample(narration, ConvertOptions())
    assert outcome.sample is not None
    states = parse_stream_messages(outcome.sample["messages"]).states()
    cued, plain = Canvas(160, 128, timing_cue=True), Canvas(160, 128)
    for k, state in enumerate(states):
        corner = tuple(int(v) for v in cued.draw(scene, float(k))[0, 0])
        mid_move = state is State.STANDBY and k > 0 and states[k - 1] is State.STANDBY
        expected = CHANGED_BACKGROUND if state is State.RESPONSE else MOVING_BACKGROUND if mid_move else BACKGROUND
        assert corner == expected, (k, state)
        assert tuple(int(v) for v in plain.draw(scene, float(k))[0, 0]) == BACKGROUND


@pytest.mark.parametrize("pause", [DEFAULT_PAUSE, (2, 9), (5, 5)])
def test_pause_sets_the_stillness_between_changes_and_every_label_still_converts(pause):
    """Each change starts MIN..MAX whole seconds after the previous one ended (both ends drawn),
    the first one up to MAX-MIN seconds after the standard start, and every sample converts
    without a reject or warning, so the timing conventions hold whatever the pauses."""
    gaps, firsts = set(), set()
    for index in range(40):
        scene = make_scene(2, index, pause)
        firsts.add(scene.changes[0].start - FIRST_CHANGE)
        gaps.update(b.start - a.end for a, b in zip(scene.changes, scene.changes[1:]))
        for sample in annotate(scene, 2, index, "v.mp4", "v.mp4"):
            outcome = convert_sample(sample, ConvertOptions())
            assert outcome.sample is not None and not outcome.warnings, (pause, index, sample["task_type"])
    assert gaps == set(range(pause[0], pause[1] + 1))
    assert firsts == ({0} if pause == DEFAULT_PAUSE else set(range(pause[1] - pause[0] + 1)))


def test_pause_outside_its_range_is_refused():
    assert parse_pause("2, 8") == (2, 8)
    for bad in ("2", "2-8", "a,b", "2,8,9", "-2,4"):
        with pytest.raises(ValueError, match="MIN,MAX"):
            parse_pause(bad)
    for bad in ((1, 4), (5, 3)):
        with pytest.raises(ValueError, match="2 <= MIN <= MAX"):
            make_scene(0, 0, bad)


@pytest.mark.parametrize("duration", [(10, 12), (120, 300)])
def test_duration_sets_the_clip_length_and_every_label_still_converts(duration):
    """Clips last MIN..MAX seconds, changes keep coming until the end of long clips, and every
    sample converts without a reject or warning, from the shortest allowed clip to minutes."""
    lengths = set()
    for index in range(12):
        scene = make_scene(4, index, duration=duration)
        lengths.add(scene.duration)
        assert duration[0] <= scene.duration <= duration[1]
        assert scene.changes[-1].end > scene.duration - 2.5 - 4 - DEFAULT_PAUSE[1]
        for sample in annotate(scene, 4, index, "v.mp4", "v.mp4"):
            outcome = convert_sample(sample, ConvertOptions())
            assert outcome.sample is not None and not outcome.warnings, (duration, index, sample["task_type"])
            assert len(outcome.sample["messages"]) == 1 + 2 * scene.duration
    assert len(lengths) > 1
    assert make_scene(4, 0).duration == make_scene(4, 0, duration=DEFAULT_DURATION).duration


def test_duration_outside_its_range_is_refused():
    assert parse_range("120, 300", "duration") == (120, 300)
    with pytest.raises(ValueError, match="duration must look like MIN,MAX"):
        parse_range("120", "duration")
    for bad in ((9, 20), (40, 20)):
        with pytest.raises(ValueError, match="10 <= MIN <= MAX"):
            make_scene(0, 0, duration=bad)


def test_parse_size():
    assert parse_size("224x160") == (224, 160)
    for bad in ("224", "ax2", "10x10x2"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_cli_synth_and_bad_arguments(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--videos", "1", "--seed", "3", "--size", "96x64", "--fps", "4"]) == 0
    raw = json.loads((tmp_path / "s" / "raw_data.json").read_text())
    assert len(raw) == len(TASK_TYPES)
    with av.open(str(tmp_path / "s" / raw[0]["video_path"])) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (96, 64)
        assert stream.frames == raw[0]["duration"] * 4
    assert main(["synth", "--out", str(tmp_path / "g"), "--videos", "1", "--seed", "3", "--grounding", "each"]) == 0
    each = json.loads((tmp_path / "g" / "raw_data.json").read_text())
    assert each[: len(raw)] == raw
    assert main(["synth", "--out", str(tmp_path / "t"), "--videos", "1", "--size", "95x64"]) == 2
    assert main(["synth", "--out", str(tmp_path / "t"), "--videos", "1", "--pause", "1,4"]) == 2
    assert main(["synth", "--out", str(tmp_path / "t"), "--videos", "1", "--duration", "5,8"]) == 2
    assert main(["synth", "--out", str(tmp_path / "d"), "--videos", "1", "--size", "64x64", "--fps", "1", "--duration", "12,12"]) == 0
    assert {sample["duration"] for sample in json.loads((tmp_path / "d" / "raw_data.json").read_text())} == {12}
    with pytest.raises(SystemExit) as exited:
        main(["synth", "--out", str(tmp_path / "t"), "--videos", "0"])
    assert exited.value.code == 2
    assert "--videos: must be > 0" in capsys.readouterr().err


def test_shipped_example_is_current_and_playable_from_the_repo_root(tmp_path):
    raw_path = generate(tmp_path, SynthOptions(videos=2, seed=0))
    assert json.loads(raw_path.read_text()) == json.loads((EXAMPLE / "raw_data.json").read_text())
    shipped = json.loads((EXAMPLE / "stream_format.json").read_text())
    raws = json.loads((EXAMPLE / "raw_data.json").read_text())
    assert len(shipped) == len(raws)
    for raw, stream in zip(raws, shipped):
        expected = convert_sample(raw, ConvertOptions(video_prefix="dataset/example")).sample
        assert stream == expected
        assert (REPO / stream["videos"][0]).is_file()
    assert sum(p.stat().st_size for p in (EXAMPLE / "videos").iterdir()) < 300_000
    states = {turn.state for s in shipped for turn in parse_stream_messages(s["messages"]).turns}
    assert states == set(State)
