import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamo.convert import ConvertOptions, convert_sample
from streamo.protocol import State, parse_stream_messages

EXAMPLE_RAW = Path(__file__).resolve().parents[1] / "dataset" / "example" / "raw_data.json"


def make_raw(questions=(("Q?", "0"),), responses=(), duration=10, **extra):
    raw = {
        "video_name": "v.mp4",
        "video_path": "dir/v.mp4",
        "task_type": "QA",
        "source": "unit",
        "question": [{"content": c, "time": t} for c, t in questions],
        "response": list(responses),
        **extra,
    }
    if duration is not None:
        raw["duration"] = duration
    return raw


def interval(content, st, end):
    return {"content": content, "st_time": st, "end_time": end, "time": ""}


def instant(content, time):
    return {"content": content, "st_time": "", "end_time": "", "time": time}


def convert(raw, **options):
    return convert_sample(raw, ConvertOptions(system_prompt="S", **options))


def assistant_contents(sample):
    return [m["content"] for m in sample["messages"] if m["role"] == "assistant"]


def user_contents(sample):
    return [m["content"] for m in sample["messages"] if m["role"] == "user"]


def test_golden_reference_example(reference_dir):
    raw = json.loads((reference_dir / "raw_data.json").read_text())
    expected_text = (reference_dir / "stream_format.json").read_text()
    expected = json.loads(expected_text)
    options = ConvertOptions(system_prompt=expected[0]["messages"][0]["content"])
    outputs = [convert_sample({**sample, "duration": 76}, options) for sample in raw]
    assert all(not o.rejected and not o.warnings for o in outputs)
    assert [o.sample for o in outputs] == expected


def test_golden_reference_example_bytes_through_cli(reference_dir, tmp_path):
    from streamo.cli import main

    raw = json.loads((reference_dir / "raw_data.json").read_text())
    raw_path = tmp_path / "raw.json"
    raw_path.write_text(json.dumps([{**sample, "duration": "1:16"} for sample in raw]))
    expected = (reference_dir / "stream_format.json").read_text()
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(json.loads(expected)[0]["messages"][0]["content"])
    out = tmp_path / "stream.json"
    code = main(["to-stream", "--input", str(raw_path), "--output", str(out), "--system-prompt-file", str(prompt)])
    assert code == 0
    assert out.read_text() == expected


@pytest.mark.parametrize(
    "content, option, reason",
    [
        (b"\xff\xfe not UTF-8", "--system-prompt-file", "utf-8"),
        (b"  \n", "--system-prompt-file", "empty"),
        (None, "--system-prompt", "must not be empty"),
    ],
)
def test_unusable_system_prompt_is_a_one_line_usage_error(tmp_path, capsys, content, option, reason):
    """A blank prompt is refused like an unreadable file: `streamo stream` and `eval` refuse it, so a
    stream converted with one could never be run."""
    from streamo.cli import main

    prompt = tmp_path / "prompt.txt"
    if content is None:
        value = " "
    else:
        prompt.write_bytes(content)
        value = str(prompt)
    out = tmp_path / "stream.json"
    with pytest.raises(SystemExit) as exited:
        main(["to-stream", "--input", str(EXAMPLE_RAW), "--output", str(out), option, value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and not out.exists()
    assert f"argument {option}" in err and reason in err and "Traceback" not in err
    if content is not None:
        assert str(prompt) in err


def test_interval_response_standby_then_answer():
    outcome = convert(make_raw(responses=[interval("Done.", 3, 5)], duration=8))
    assert assistant_contents(outcome.sample) == ["</Silence>"] * 2 + ["</Standby>"] * 3 + ["</Response> Done."] + ["</Silence>"] * 2


def test_instant_response_answers_at_its_turn():
    outcome = convert(make_raw(responses=[instant("Now.", "4")], duration=6))
    assert assistant_contents(outcome.sample)[3] == "</Response> Now."
    assert assistant_contents(outcome.sample).count("</Silence>") == 5


def test_question_shown_at_its_turn_and_at_start_by_default():
    outcome = convert(make_raw(questions=[("Q?", "3")], duration=5))
    users = user_contents(outcome.sample)
    assert users[0] == "Q?\n<0s-1s>\n<stream>"
    assert users[2] == "Q?\n<2s-3s>\n<stream>"
    assert users[1] == "<1s-2s>\n<stream>"


def test_initial_question_can_be_turned_off():
    outcome = convert(make_raw(questions=[("Q?", "3")], duration=5), initial_question=False)
    users = user_contents(outcome.sample)
    assert users[0] == "<0s-1s>\n<stream>"
    assert sum("Q?" in u for u in users) == 1


def test_several_questions_in_time_order_and_only_first_repeated():
    outcome = convert(make_raw(questions=[("Later?", "4"), ("First?", "2"), ("Same?", "2")], duration=5))
    users = user_contents(outcome.sample)
    assert users[0].startswith("First?\n<0s-1s>")
    assert users[1] == "First?\nSame?\n<1s-2s>\n<stream>"
    assert users[3].startswith("Later?\n<3s-4s>")


def test_fractional_times_and_other_fps():
    outcome = convert(make_raw(questions=[("Q?", 0)], responses=[interval("A.", 1.2, 2.4)], duration=4), fps=2.0)
    assert len(user_contents(outcome.sample)) == 8
    assert user_contents(outcome.sample)[1] == "<0.5s-1s>\n<stream>"
    states = assistant_contents(outcome.sample)
    # st 1.2 s -> turn ceil(2.4)-1 = 2, end 2.4 s -> turn ceil(4.8)-1 = 4, answer at turn 5
    assert states[2:5] == ["</Standby>"] * 3 and states[5] == "</Response> A."
    assert states[:2] == ["</Silence>"] * 2


def test_time_formats_are_equivalent():
    outcomes = [convert(make_raw(responses=[instant("A.", t)], duration=100)) for t in (65, "65", "1:05", "00:01:05", 65.0)]
    assert all(o.sample == outcomes[0].sample for o in outcomes)


def test_response_never_overwritten_by_other_events_standby():
    raw = make_raw(responses=[instant("Early.", 4), interval("Long.", 2, 7)], duration=10)
    states = assistant_contents(convert(raw).sample)
    assert states[3] == "</Response> Early."
    assert states[1:3] == ["</Standby>"] * 2 and states[4:7] == ["</Standby>"] * 3
    assert states[7] == "</Response> Long."


def test_two_responses_on_one_turn_are_joined_in_time_order_with_warning():
    raw = make_raw(responses=[instant("Second.", 5.0), interval("First.", 2, 4)], duration=8)
    outcome = convert(raw)
    assert not outcome.rejected
    assert assistant_contents(outcome.sample)[4] == "</Response> First. Second."
    assert [p.severity for p in outcome.problems] == ["warning"]
    assert "same turn" in outcome.problems[0].message


def test_extra_fields_carried_and_video_resolved():
    outcome = convert(make_raw(responses=[], duration=3, custom="x"), video_prefix="/data")
    sample = outcome.sample
    assert list(sample) == ["messages", "videos", "video_name", "task_type", "source", "custom"]
    assert sample["videos"] == ["/data/dir/v.mp4"]
    assert "duration" not in sample


def test_duration_probed_when_absent():
    seen = []

    def probe(path):
        seen.append(path)
        return 3.5

    outcome = convert_sample(make_raw(duration=None), ConvertOptions(video_prefix="p"), probe)
    assert seen == ["p/dir/v.mp4"]
    assert len(user_contents(outcome.sample)) == 3


def test_unreadable_video_rejects_with_reason():
    def probe(path):
        raise RuntimeError("moov atom not found")

    outcome = convert_sample(make_raw(duration=None), ConvertOptions(), probe)
    assert outcome.rejected
    assert outcome.problems[0].field == "video_path"
    assert "moov atom" in outcome.problems[0].message


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (make_raw(responses=[interval("A.", 5, 10)], duration=10), "response[0].end_time", "beyond the video end"),
        (make_raw(responses=[instant("A.", 10.5)], duration=10), "response[0].time", "beyond the video end"),
        (make_raw(responses=[interval("A.", 6, 4)], duration=10), "response[0].end_time", "before start"),
        (make_raw(responses=[instant("A.", -1)], duration=10), "response[0].time", "negative"),
        (make_raw(responses=[instant("A.", "soon")], duration=10), "response[0].time", "not a time"),
        (make_raw(responses=[instant("A.", "1:75")], duration=10), "response[0].time", "not a time"),
        (make_raw(responses=[instant(" ", 3)], duration=10), "response[0].content", "empty"),
        (make_raw(responses=[{"content": "A."}], duration=10), "response[0]", "no time"),
        (make_raw(responses=[{"content": "A.", "st_time": 3}], duration=10), "response[0].end_time", "both"),
        (make_raw(questions=[("Q?", "12")], duration=10), "question[0].time", "after the video end"),
        (make_raw(questions=[("", "1")], duration=10), "question[0].content", "empty"),
        (make_raw(duration=0.5), "duration", "no whole frame"),
        (make_raw(duration="abc"), "duration", "not a time"),
        ({"question": []}, "video_path", "required"),
        ([1, 2], "sample", "expected a json object"),
    ],
)
def test_each_reject_reason_names_the_field(raw, field, words):
    outcome = convert(raw)
    assert outcome.rejected
    errors = [p for p in outcome.problems if p.severity == "error"]
    assert any(p.field == field and words in p.message.lower() for p in errors), outcome.problems


def test_a_rejected_sample_reports_every_problem_of_its_readable_parts():
    """An unreadable field leaves out only its own part: the other responses and questions are still checked."""
    raw = make_raw(questions=[("Q?", "x"), ("Q2?", "12")], duration=10,
                   responses=[instant("A.", "soon"), interval("B.", 6, 4), instant("C.", 10.5), {"content": 3}])
    fields = [(p.field, p.message) for p in convert(raw).problems]
    assert fields == [
        ("question[0].time", "not a time: 'x'"),
        ("response[0].time", "not a time: 'soon'"),
        ("response[3].content", "Input should be a valid string"),
        ("response[1].end_time", "end (4 s) is before start (6 s)"),
        ("question[1].time", "12 s is after the video end (10 s)"),
        ("response[2].time", "answer at 10.5 s falls beyond the video end (10 s)"),
    ]


def test_interval_with_time_too_warns_and_uses_interval():
    outcome = convert(make_raw(responses=[{"content": "A.", "st_time": 1, "end_time": 2, "time": 7}], duration=5))
    assert assistant_contents(outcome.sample)[2] == "</Response> A."
    assert outcome.warnings[0].field == "response[0].time"


moments = st.floats(min_value=0, max_value=60, allow_nan=False).map(lambda x: round(x, 2))


@st.composite
def raw_samples(draw):
    duration = draw(st.floats(min_value=1, max_value=60).map(lambda x: round(x, 1)))
    questions = draw(st.lists(st.tuples(st.text(min_size=1, max_size=5).filter(str.strip), moments), max_size=3))
    responses = []
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            a, b = sorted((draw(moments), draw(moments)))
            responses.append(interval(f"answer {len(responses)}", a, b))
        else:
            responses.append(instant(f"answer {len(responses)}", draw(moments)))
    return make_raw(questions=questions, responses=responses, duration=duration)


@settings(max_examples=300, deadline=None)
@given(raw=raw_samples(), fps=st.sampled_from([1.0, 2.0, 0.5]))
def test_every_response_accounted_for(raw, fps):
    outcome = convert(raw, fps=fps)
    if outcome.rejected:
        assert any(p.severity == "error" for p in outcome.problems)
        return
    timeline = parse_stream_messages(outcome.sample["messages"])
    messages = outcome.sample["messages"][1:]
    assert len(messages) == 2 * len(timeline.turns)
    assert [m["role"] for m in messages] == ["user", "assistant"] * len(timeline.turns)
    assert all(turn.state in (State.SILENCE, State.STANDBY, State.RESPONSE) for turn in timeline.turns)
    answered = [turn.answer for turn in timeline.responses()]
    pieces = " ".join(answered)
    for response in raw["response"]:
        assert pieces.count(response["content"]) == 1
    assert 0 < len(answered) <= len(raw["response"]) or not raw["response"]
