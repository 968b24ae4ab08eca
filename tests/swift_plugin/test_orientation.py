"""Training sees a rotated phone clip upright, whether frames are decoded on the fly or read from the cache."""

import numpy as np
from PIL import Image

from streamo.swift_plugin.dataset import StreamPreprocessor, StreamSettings
from streamo.swift_plugin.frames import FrameSource
from streamo.video import smart_resize
from streamo.video.synthetic import frame_times, read_code, write_clip

BUDGET = 128 * 784


def test_on_the_fly_and_cached_frames_are_upright_and_equal(tmp_path):
    video = tmp_path / "portrait.mp4"
    times = frame_times(50, 10)  # 5 s, stored 224x112, shown 112x224
    write_clip(video, times, 224, 112, rotation=90)
    height, width = smart_resize(224, 112, max_pixels=BUDGET)
    on_the_fly = FrameSource(max_pixels=BUDGET)
    cached = FrameSource(cache_dir=str(tmp_path / "cache"), max_pixels=BUDGET)
    for source in (on_the_fly, cached):
        preprocessor = StreamPreprocessor(settings=StreamSettings(frames=source))
        assert preprocessor._video_frames(str(video), 1.0) == (5, (height, width))  # the grid training plans with
    decoded = on_the_fly.frames(str(video), 1.0, [0, 2, 4])
    read = cached.frames(str(video), 1.0, [0, 2, 4])
    assert [image.size for image in decoded] == [image.size for image in read] == [(width, height)] * 3
    assert [read_code(image.transpose(Image.Transpose.ROTATE_270)) for image in decoded] == [0, 20, 40]
    for a, b in zip(decoded, read):  # the cache's JPEG is all that differs
        assert np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean() < 4
