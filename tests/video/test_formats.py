"""Formats users bring (phones, browsers, cameras): each gives the exact frames the rule picks, or one clear error."""

import io
import logging
import subprocess
import sys
from fractions import Fraction

import av
import pytest

from streamo.protocol import turn_count
from streamo.video import FrameCache, VideoError, iter_frames, probe_duration, probe_video, sample_frames
from streamo.video.synthetic import frame_times, read_code, write_clip

from .clips import expected_frames

MEDIA_RECORDER = {"container_format": "webm", "options": {"live": "1"}}
"""WebM as a browser's MediaRecorder writes it: no duration and no index in the header."""

FORMATS = {
    # name: (writer options, (width, height))
    "h264.mp4": ({}, (192, 144)),
    "h264.mov": ({}, (192, 144)),
    "hevc.mp4": ({"codec": "libx265"}, (192, 144)),
    "hevc.mov": ({"codec": "libx265"}, (192, 144)),
    "vp8.webm": ({"codec": "libvpx", **MEDIA_RECORDER}, (192, 144)),
    "vp9.webm": ({"codec": "libvpx-vp9", **MEDIA_RECORDER}, (192, 144)),
    "av1.mp4": ({"codec": "libsvtav1"}, (192, 144)),
    "mjpeg.mov": ({"codec": "mjpeg", "pix_fmt": "yuvj420p"}, (192, 144)),
    "h264_10bit.mp4": ({"pix_fmt": "yuv420p10le"}, (192, 144)),
    "hevc_10bit.mkv": ({"codec": "libx265", "pix_fmt": "yuv420p10le"}, (192, 144)),
    "h264_full_range.mp4": ({"pix_fmt": "yuvj420p"}, (192, 144)),
    "vp9_odd.webm": ({"codec": "libvpx-vp9", **MEDIA_RECORDER}, (193, 145)),
    "h264_444_odd.mp4": ({"pix_fmt": "yuv444p"}, (193, 145)),
}


def _encodes(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
        return True
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_gives_the_exact_frames(tmp_path, name):
    options, (width, height) = FORMATS[name]
    codec = options.get("codec", "libx264")
    if not _encodes(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = tmp_path / name
    times = frame_times(45, 15, jitter=0.3)  # variable frame rate, 3 s
    write_clip(path, times, width, height, gop=20, **options)
    info = probe_video(path)
    assert (info.width, info.height, info.cut_at) == (width, height, None)
    turns = turn_count(info.duration)
    assert turns == 3
    assert [read_code(image) for image in sample_frames(path)] == expected_frames(times, 1.0, turns)


@pytest.mark.parametrize("name", ["vp8.webm", "vp9.webm"])
def test_a_media_recorder_upload_streams_like_the_file(tmp_path, name):
    path = tmp_path / name
    write_clip(path, frame_times(60, 30, jitter=0.3), gop=30, **FORMATS[name][0])
    with av.open(str(path)) as container:
        assert container.duration is None and container.streams.video[0].duration is None  # nothing in the header
    from_file = [(s.turn, read_code(s.image)) for s in iter_frames(path)]
    with open(path, "rb") as handle:
        streamed = [(s.turn, read_code(s.image)) for s in iter_frames(io.BufferedReader(handle))]
    assert streamed == from_file and len(from_file) == turn_count(probe_duration(path)) == 2


def _audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for index in range(20):
            frame = av.AudioFrame(format="fltp", layout="mono", samples=1024)
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.pts, frame.sample_rate = index * 1024, 44100
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.mark.parametrize("kind, message", [("audio_only.m4a", "no video stream"), ("zero_length.mp4", "cannot open")])
def test_files_without_pictures_give_one_clear_error(tmp_path, kind, message):
    path = tmp_path / kind
    if kind.startswith("audio"):
        _audio_only(path)
    else:
        path.write_bytes(b"")
    for attempt in (lambda: sample_frames(path), lambda: probe_video(path), lambda: FrameCache(tmp_path / "c").ensure(path)):
        with pytest.raises(VideoError) as raised:
            attempt()
        text = str(raised.value)
        assert kind in text and message in text and "\n" not in text


@pytest.mark.parametrize("name, options", [("cut.mp4", {"options": {"movflags": "faststart"}}),
                                           ("cut.mkv", {"container_format": "matroska"})])
def test_a_file_cut_mid_stream_gives_its_frames_and_a_warning_naming_the_second(tmp_path, caplog, name, options):
    whole = tmp_path / f"whole{name[3:]}"
    times = frame_times(240, 30)
    write_clip(whole, times, 64, 48, **options)
    cut = tmp_path / name
    data = whole.read_bytes()
    cut.write_bytes(data[:int(len(data) * 0.55)])
    info = probe_video(cut)
    assert info.cut_at is not None and 2 < info.cut_at < 6
    turns = turn_count(info.duration)
    with caplog.at_level(logging.WARNING, logger="streamo.video"):
        codes = [read_code(image) for image in sample_frames(cut)]
    assert codes == expected_frames(times, 1.0, turns)
    warnings = [record.getMessage() for record in caplog.records if record.name == "streamo.video"]
    assert warnings == [f"{cut}: the video breaks off at {info.cut_at:.2f} s (damaged or cut short); "
                        "frames up to there are used"]


_MEASURE_8K = """
import resource, sys
from streamo.video import FrameCache
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
entry = FrameCache(sys.argv[2]).ensure(sys.argv[1])
growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(len(entry.times), entry.width, entry.height, growth // 1024)
"""


def test_an_8k_clip_decodes_within_bounded_memory(tmp_path):
    path = tmp_path / "8k.mp4"
    write_clip(path, frame_times(4, 1.0), 7680, 4320, gop=2, bframes=0, preset="ultrafast")
    result = subprocess.run([sys.executable, "-c", _MEASURE_8K, str(path), str(tmp_path / "cache")],
                            capture_output=True, text=True, check=True)
    turns, width, height, growth_mb = map(int, result.stdout.split())
    assert (turns, width, height) == (4, 420, 224)
    frame_mb = 7680 * 4320 * 3 / 2 / 2**20  # one decoded 8K picture: 47 MB
    assert growth_mb < 10 * frame_mb, f"peak RSS grew {growth_mb} MB decoding 8K"


def test_pixel_aspect_writer_round_trip(tmp_path):
    path = tmp_path / "sar.mkv"
    write_clip(path, frame_times(15, 15), 192, 144, container_format="matroska", sample_aspect=Fraction(3, 4))
    assert probe_video(path)[1:3] == (192, 192)
