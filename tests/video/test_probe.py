import random

import pytest

from streamo.video import VideoError, probe_duration, probe_video

from .clips import make_clip


def test_a_damaged_payload_is_caught_only_by_decoding_the_first_frame(tmp_path):
    path, _ = make_clip(tmp_path, "damaged.mp4", 10, 4, width=64, height=48, options={"movflags": "faststart"})
    data = bytearray(path.read_bytes())
    payload = data.index(b"mdat") + 4
    data[payload:] = random.Random(0).randbytes(len(data) - payload)
    path.write_bytes(bytes(data))
    assert probe_duration(path) == pytest.approx(4.0)  # the index is intact
    with pytest.raises(VideoError, match="damaged.mp4: first frame does not decode"):
        probe_video(path)


def test_decoding_the_first_frame_keeps_the_true_duration(tmp_path):
    path, _ = make_clip(tmp_path, "good.mp4", 10, 4, width=64, height=48)
    info = probe_video(path)
    assert info.duration == probe_duration(path) == pytest.approx(4.0)
    assert (info.width, info.height, info.cut_at) == (64, 48, None)
