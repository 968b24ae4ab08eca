"""Display orientation and pixel aspect: every path that makes frames shows a video as a player does."""

import json
import os
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

import streamo.video.cache as cache_module
from streamo.video import FrameCache, iter_frames, probe_video, sample_frames, smart_resize
from streamo.video.synthetic import frame_times, read_code, write_clip

from .clips import expected_frames

T = Image.Transpose
ORIENTATIONS = {
    # (rotation counter-clockwise, mirror): what a player does to the stored picture (as ffmpeg shows it)
    (0, False): None,
    (90, False): T.ROTATE_90,
    (180, False): T.ROTATE_180,
    (-90, False): T.ROTATE_270,
    (0, True): T.FLIP_LEFT_RIGHT,
    (90, True): T.TRANSVERSE,
    (180, True): T.FLIP_TOP_BOTTOM,
    (-90, True): T.TRANSPOSE,
}
UNDO = {None: None, T.ROTATE_90: T.ROTATE_270, T.ROTATE_270: T.ROTATE_90}
WIDTH, HEIGHT = 224, 112  # stored landscape, as a phone stores a portrait clip


def _undo(image: Image.Image, op) -> Image.Image:
    inverse = UNDO.get(op, op)  # flips, 180 and the transposes are their own inverse
    return image if inverse is None else image.transpose(inverse)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    directory = tmp_path_factory.mktemp("oriented")
    times = frame_times(40, 10)  # 4 s
    made = {}
    for (rotation, mirror) in ORIENTATIONS:
        path = directory / f"r{rotation}{'m' if mirror else ''}.mp4"
        # without B-frames x264 encodes the same picture to the same bytes (with them it reads memory it
        # never wrote, so two encodes of one picture can differ), and the clips compare pixel for pixel
        write_clip(path, times, WIDTH, HEIGHT, rotation=rotation, mirror=mirror, bframes=0)
        made[rotation, mirror] = path
    return made, times


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_every_orientation_is_shown_upright(clips, orientation):
    made, times = clips
    op = ORIENTATIONS[orientation]
    upright = sample_frames(made[0, False])
    turned = sample_frames(made[orientation])
    swaps = op in (T.ROTATE_90, T.ROTATE_270, T.TRANSPOSE, T.TRANSVERSE)
    shown = (HEIGHT, WIDTH) if swaps else (WIDTH, HEIGHT)
    assert probe_video(made[orientation])[1:3] == shown
    height, width = smart_resize(shown[1], shown[0])
    assert all(image.size == (width, height) for image in turned)
    for plain, image in zip(upright, turned):  # the same pictures, turned as the player turns them
        expected = plain if op is None else plain.transpose(op)
        assert np.abs(np.asarray(image, np.float32) - np.asarray(expected, np.float32)).mean() < 1
    assert [read_code(_undo(image, op)) for image in turned] == expected_frames(times, 1.0, 4)


@pytest.mark.parametrize("orientation", [(90, False), (-90, True), (180, True)])
def test_orientation_matches_ffmpeg(clips, orientation, tmp_path):
    if shutil.which("ffmpeg") is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI must install Debian's ffmpeg (see .ci/run)")
        pytest.skip("no ffmpeg binary to compare with (apt-get install ffmpeg)")
    made, _ = clips
    picture = tmp_path / "first.png"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(made[orientation]), "-frames:v", "1", str(picture)], check=True)
    theirs = np.asarray(Image.open(picture).convert("L"), np.float32)
    ours = next(iter_frames(made[orientation], max_pixels=10**6, min_pixels=1)).image
    assert ours.size == (theirs.shape[1], theirs.shape[0])
    assert np.abs(np.asarray(ours.convert("L"), np.float32) - theirs).mean() < 2


@pytest.mark.parametrize("aspect, shown", [(Fraction(4, 3), (299, 112)), (Fraction(1, 2), (224, 224))])
def test_non_square_pixels_are_scaled_to_the_display_aspect(tmp_path, aspect, shown):
    path = tmp_path / "anamorphic.mp4"
    times = frame_times(30, 10)
    write_clip(path, times, WIDTH, HEIGHT, sample_aspect=aspect)
    assert probe_video(path)[1:3] == shown
    images = sample_frames(path)
    height, width = smart_resize(shown[1], shown[0])
    assert images[0].size == (width, height)
    assert [read_code(image) for image in images] == expected_frames(times, 1.0, 3)


def test_rotation_and_pixel_aspect_together(tmp_path):
    path = tmp_path / "both.mov"
    write_clip(path, frame_times(20, 10), WIDTH, HEIGHT, rotation=90, sample_aspect=Fraction(4, 3))
    assert probe_video(path)[1:3] == (112, 299)  # widened first (as stored), then turned


def test_the_cache_stores_oriented_frames_and_never_reuses_old_entries(tmp_path, clips, monkeypatch):
    made, times = clips
    video = made[90, False]
    monkeypatch.setattr(cache_module, "_FORMAT_VERSION", 1)
    old = FrameCache(tmp_path)
    old_key, old_entry = old.key(video), old.ensure(video)  # where a version-1 cache kept this video
    monkeypatch.undo()
    cache = FrameCache(tmp_path)
    assert cache.key(video) != old_key
    assert cache.lookup(video) is None, "an entry made the old way is not read"
    entry = cache.ensure(video)
    assert entry.directory != old_entry.directory
    height, width = smart_resize(WIDTH, HEIGHT)
    assert (entry.width, entry.height) == (width, height)
    images = cache.load(video)
    assert all(image.size == (width, height) for image in images)
    assert [read_code(image.transpose(T.ROTATE_270)) for image in images] == expected_frames(times, 1.0, 4)


def test_streamo_frames_caches_a_rotated_clip_upright(tmp_path, clips):
    from streamo.cli import main

    made, times = clips
    video = made[90, True]
    data = tmp_path / "raw.json"
    data.write_text(json.dumps([{"video_path": str(video), "duration": 4, "question": [], "response": []}]))
    assert main(["frames", "--input", str(data), "--cache-dir", str(tmp_path / "cache"), "--workers", "1"]) == 0
    entry = FrameCache(tmp_path / "cache").lookup(video)
    height, width = smart_resize(WIDTH, HEIGHT)
    assert (entry.width, entry.height) == (width, height)
    images = FrameCache(tmp_path / "cache").load(video)
    assert [read_code(image.transpose(T.TRANSVERSE)) for image in images] == expected_frames(times, 1.0, 4)


def test_matroska_rotation_is_honoured(tmp_path):
    path = tmp_path / "portrait.mkv"
    times = frame_times(20, 10)
    write_clip(path, times, WIDTH, HEIGHT, container_format="matroska", rotation=90)
    assert probe_video(path)[1:3] == (HEIGHT, WIDTH)
    assert [read_code(image.transpose(T.ROTATE_270)) for image in sample_frames(path)] == expected_frames(times, 1.0, 2)
