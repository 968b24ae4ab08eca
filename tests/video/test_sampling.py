import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamo.protocol import turn_count
from streamo.video import MAX_PIXELS, MIN_PIXELS, VideoError, iter_frames, probe_duration, sample_frames, smart_resize
from streamo.video.synthetic import read_code

from .clips import expected_frames, make_clip, set_matroska_duration, true_turns

CLIPS = {
    # name: (fps, seconds, jitter, writer options)
    "cfr30.mp4": (30, 8.5, 0.0, {}),
    "cfr25.mp4": (25, 8.5, 0.0, {}),
    "vfr2997.mp4": (29.97, 8.5, 0.45, {}),
    "long_gop.mp4": (30, 8.5, 0.0, {"gop": 600, "bframes": 3}),  # one keyframe for the whole clip
    "cfr30.ts": (30, 8.5, 0.0, {"container_format": "mpegts"}),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    directory = tmp_path_factory.mktemp("clips")
    return {name: make_clip(directory, name, fps, seconds, jitter, **options)
            for name, (fps, seconds, jitter, options) in CLIPS.items()}


def codes(images):
    return [read_code(image) for image in images]


@pytest.mark.parametrize("name", CLIPS)
def test_every_second_gets_the_first_frame_at_or_after_it(clips, name):
    path, times = clips[name]
    turns = turn_count(probe_duration(path))
    assert turns == true_turns(times, 1.0) == 8
    images = sample_frames(path)
    assert len(images) == turns
    assert codes(images) == expected_frames(times, 1.0, turns)


@pytest.mark.parametrize("fps", [2.0, 0.5, 3.0])
def test_other_rates_follow_the_same_rule(clips, fps):
    path, times = clips["vfr2997.mp4"]
    turns = turn_count(probe_duration(path), fps)
    sampled = list(iter_frames(path, fps))
    assert [s.turn for s in sampled] == list(range(turns))
    assert codes(s.image for s in sampled) == expected_frames(times, fps, turns)
    for s in sampled:
        assert s.time >= s.turn / fps - 1e-6
        assert s.time == pytest.approx(times[read_code(s.image)], abs=1e-4)


def test_frames_are_resized_to_the_pixel_budget(clips):
    path, _ = clips["cfr30.mp4"]
    small = sample_frames(path, max_pixels=64 * 28 * 28)
    width, height = small[0].size
    assert (height, width) == smart_resize(144, 192, MIN_PIXELS, 64 * 28 * 28)
    assert width % 28 == 0 and height % 28 == 0 and width * height <= 64 * 28 * 28
    assert codes(small) == codes(sample_frames(path))


def test_a_live_stream_yields_the_same_turns_as_the_file(clips):
    path, _ = clips["cfr30.ts"]
    from_file = [(s.turn, round(s.time, 6), read_code(s.image)) for s in iter_frames(path)]
    with open(path, "rb") as handle:
        live = [(s.turn, round(s.time, 6), read_code(s.image)) for s in iter_frames(io.BufferedReader(handle))]
    assert live == from_file


@pytest.mark.parametrize("claimed", [60.0, 3.0])
def test_lying_container_duration_is_ignored(tmp_path, claimed):
    path, times = make_clip(tmp_path, "lie.mkv", 30, 10, container_format="matroska")
    set_matroska_duration(path, claimed)
    assert turn_count(probe_duration(path)) == 10
    assert codes(sample_frames(path)) == expected_frames(times, 1.0, 10)


@pytest.mark.parametrize("container, options", [("cut.ts", {"container_format": "mpegts"}),
                                                 ("cut.mp4", {"options": {"movflags": "faststart"}})])
def test_truncated_file_yields_the_probed_turn_count(tmp_path, container, options):
    whole, times = make_clip(tmp_path, container, 30, 8, **options)
    data = whole.read_bytes()
    for fraction in (0.3, 0.55, 0.8):
        cut = tmp_path / f"{fraction}{whole.suffix}"
        cut.write_bytes(data[:int(len(data) * fraction)])
        turns = turn_count(probe_duration(cut))
        assert 0 < turns < 8
        found = codes(sample_frames(cut))
        assert len(found) == turns
        want = expected_frames(times, 1.0, turns)
        assert found[:-1] == want[:-1]
        # the last turn may fall in the cut-off tail: then it repeats the last decodable frame
        assert found[-1] == want[-1] or want[-1] > found[-1] >= found[-2]


def test_missing_and_unreadable_videos_are_named(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoError, match="missing.mp4"):
        sample_frames(missing)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty.mp4"):
        sample_frames(empty)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video\xff" * 500)
    with pytest.raises(VideoError, match="garbage.mp4"):
        sample_frames(garbage)


def test_a_clip_shorter_than_one_turn_is_rejected(tmp_path):
    path, _ = make_clip(tmp_path, "short.mp4", 30, 0.5)
    with pytest.raises(VideoError, match="short.mp4.*shorter than one turn"):
        sample_frames(path)
    assert len(sample_frames(path, fps=4.0)) == 2


def test_explicit_turns_beyond_the_decodable_end_are_rejected(clips):
    path, _ = clips["cfr25.mp4"]
    assert len(list(iter_frames(path, turns=5))) == 5
    with pytest.raises(VideoError, match="cfr25.mp4.*decode only up to"):
        list(iter_frames(path, turns=30))


def test_default_budget_is_128_visual_tokens():
    assert MAX_PIXELS == 128 * 28 * 28 == 100352
    assert smart_resize(1080, 1920) == (224, 420)


@settings(max_examples=300, deadline=None)
@given(
    height=st.integers(1, 5000),
    width=st.integers(1, 5000),
    min_tokens=st.integers(1, 256),
    extra_tokens=st.integers(0, 2000),
)
def test_smart_resize_matches_qwen_vl_utils(height, width, min_tokens, extra_tokens):
    qwen_vl_utils = pytest.importorskip("qwen_vl_utils")
    min_pixels, max_pixels = min_tokens * 784, (min_tokens + extra_tokens) * 784
    if max(height, width) / min(height, width) > 200:
        with pytest.raises(ValueError):
            smart_resize(height, width, min_pixels, max_pixels)
        return
    theirs = qwen_vl_utils.smart_resize(height, width, 28, min_pixels=min_pixels, max_pixels=max_pixels)
    ours = smart_resize(height, width, min_pixels, max_pixels)
    if min(theirs) > 0:  # theirs collapses a side to 0 for some extreme ratios; ours keeps 28
        assert ours == theirs
    else:
        assert min(ours) == 28


def test_smart_resize_matches_qwen_vl_utils_on_common_sizes():
    qwen_vl_utils = pytest.importorskip("qwen_vl_utils")
    for height, width in [(360, 640), (480, 854), (720, 1280), (1080, 1920), (2160, 3840), (1920, 1080),
                          (240, 320), (100, 100), (28, 28), (10, 2000), (144, 192)]:
        for max_pixels in (MAX_PIXELS, 256 * 784, 768 * 784):
            theirs = qwen_vl_utils.smart_resize(height, width, 28, min_pixels=MIN_PIXELS, max_pixels=max_pixels)
            assert smart_resize(height, width, MIN_PIXELS, max_pixels) == theirs


def test_converter_turns_match_sampled_frames_on_every_clip(clips, tmp_path):
    from streamo.convert import ConvertOptions, convert_sample

    lying, _ = make_clip(tmp_path, "lie.mkv", 25, 7, container_format="matroska")
    set_matroska_duration(lying, 30.0)
    paths = [path for path, _ in clips.values()] + [lying]
    for path in paths:
        raw = {"video_path": str(path), "question": [{"content": "What is shown?", "time": "1"}], "response": []}
        outcome = convert_sample(raw, ConvertOptions(), probe_duration)
        assert outcome.sample is not None, outcome.problems
        user_turns = [m for m in outcome.sample["messages"] if m["role"] == "user"]
        assert len(user_turns) == len(sample_frames(path)), path.name
