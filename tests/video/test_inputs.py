"""``--video`` inputs: one rule for what is a stream URL, clear errors for what is not."""

import pytest

from streamo.video import MIN_PIXELS
from streamo.video.inputs import InputError, is_url, open_input

from .clips import make_clip


@pytest.mark.parametrize("source, url", [
    ("http://127.0.0.1:8080/clip.mp4", True), ("HTTPS://example.org/a.m3u8", True), ("rtsp://cam.local:554/s", True),
    ("rtsps://cam/s", True), ("rtmp://host/live/key", True),
    ("https:/etc/passwd", False),  # a scheme but no host: a (relative) path, never a URL
    ("file:///etc/passwd", False), ("udp://@:1234", False), ("concat:a.mp4|b.mp4", False),
    ("http://[::1", False), ("clip.mp4", False), ("-", False),
])
def test_a_stream_url_is_an_allowed_scheme_with_a_host(source, url):
    assert is_url(source) is url


def test_what_only_looks_like_a_url_is_named_not_opened(tmp_path):
    with pytest.raises(InputError, match=r"udp://@:1234: not a stream URL Streamo opens \(schemes: http, https, rtmp"):
        open_input("udp://@:1234", 1.0, 3136, MIN_PIXELS)
    with pytest.raises(InputError, match="no such file or directory"):
        open_input("https:/nowhere/clip.mp4", 1.0, 3136, MIN_PIXELS)


def test_a_file_has_its_turns_up_front(tmp_path):
    clip, _ = make_clip(tmp_path, "clip.mp4", fps=10, seconds=3, width=112, height=84)
    source = open_input(str(clip), 1.0, 3136, MIN_PIXELS)
    assert source.turns == 3 and [turn for turn, _ in source.frames] == [0, 1, 2]
