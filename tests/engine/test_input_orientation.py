"""`streamo stream`, server-side sources (both through ``open_input``), `eval` and `ovobench`
(through ``StreamModel.frames``) see a phone's rotated clip upright."""

from PIL import Image

from streamo.video.inputs import open_input
from streamo.video import MIN_PIXELS, smart_resize
from streamo.video.synthetic import frame_times, read_code, write_clip

BUDGET = 128 * 784


def _portrait(tmp_path):
    video = tmp_path / "portrait.mp4"
    write_clip(video, frame_times(40, 10), 224, 112, rotation=-90)  # stored landscape, shown 112x224
    height, width = smart_resize(224, 112, max_pixels=BUDGET)
    return video, (width, height)


def _codes(images):
    return [read_code(image.transpose(Image.Transpose.ROTATE_90)) for image in images]


def test_stream_and_server_sources_get_upright_frames(tmp_path):
    video, size = _portrait(tmp_path)
    source = open_input(str(video), 1.0, BUDGET, MIN_PIXELS)
    frames = list(source.frames)
    assert source.turns == len(frames) == 4
    assert [image.size for _, image in frames] == [size] * 4
    assert _codes(image for _, image in frames) == [0, 10, 20, 30]


def test_eval_and_ovobench_get_upright_frames(tmp_path, stream_model):
    from streamo.engine.model import EngineSettings, StreamModel

    video, size = _portrait(tmp_path)
    model = StreamModel(stream_model.directory, EngineSettings(max_pixels=BUDGET), "cpu")
    frames = list(model.frames(str(video), 4))
    assert [turn for turn, _ in frames] == [0, 1, 2, 3]
    assert [image.size for _, image in frames] == [size] * 4
    assert _codes(image for _, image in frames) == [0, 10, 20, 30]
