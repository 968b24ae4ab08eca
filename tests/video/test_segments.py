"""Decoding a file in pieces from its IDR frames gives exactly the one-pass frames."""

import pytest

from streamo.video import segments
from streamo.video.cache import FrameCache
from streamo.video.sampling import FrameScaler, turn_frames
from streamo.video.synthetic import frame_times, write_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """12 s at 30 fps with an IDR frame every second (a variable frame rate) and B-frames."""
    path = tmp_path_factory.mktemp("segments") / "clip.mp4"
    write_clip(path, frame_times(360, 30, jitter=0.3), width=192, height=144, gop=30, bframes=3)
    return path


def decoded(path, split: bool) -> list[tuple[int, float, bytes]]:
    return [(turn, moment, b"".join(bytes(plane) for plane in frame.planes))
            for turn, moment, frame, _ in turn_frames(str(path), 1.0, split=split)]


def test_pieces_decode_to_the_one_pass_frames(clip, monkeypatch):
    monkeypatch.setattr(segments, "parts_for", lambda threads: 2)
    monkeypatch.setattr(segments, "_BYTES_IN_FLIGHT", 192 * 144 * 3 // 2 * 3 * 2)  # 2 turns a piece
    found = segments.plan(str(clip), 1.0, 12, 2, 1e-6, 1.0)
    assert found is not None and len(found.pieces) >= 5
    assert decoded(clip, split=True) == decoded(clip, split=False)


def test_the_cache_writes_the_bytes_of_one_pass(clip, tmp_path, monkeypatch):
    monkeypatch.setattr(segments, "parts_for", lambda threads: 2)
    monkeypatch.setattr(segments, "_BYTES_IN_FLIGHT", 192 * 144 * 3 // 2 * 3 * 3)
    entry = FrameCache(tmp_path / "cache").ensure(clip)
    scale = FrameScaler(str(clip))
    for path, (turn, moment, frame, display) in zip(entry.paths, turn_frames(str(clip), 1.0), strict=True):
        expected = tmp_path / "one-pass.jpg"
        scale(frame, display).save(expected, "JPEG", quality=90)
        assert path.read_bytes() == expected.read_bytes()
        assert entry.times[turn] == round(moment, 6)


def test_a_piece_that_goes_wrong_is_finished_in_one_pass(clip, monkeypatch):
    monkeypatch.setattr(segments, "parts_for", lambda threads: 2)
    monkeypatch.setattr(segments, "_BYTES_IN_FLIGHT", 192 * 144 * 3 // 2 * 3 * 3)
    decode = segments._decode

    def failing(path, piece):
        if piece.start is not None:
            raise segments.Diverged("as a decoder error would")
        return decode(path, piece)

    monkeypatch.setattr(segments, "_decode", failing)
    assert decoded(clip, split=True) == decoded(clip, split=False)


@pytest.mark.parametrize("options", [{"codec": "libx265"}, {"container_format": "mpegts"}, {"gop": 400}])
def test_files_that_cannot_be_cut_exactly_are_not_split(tmp_path, options):
    path = tmp_path / ("clip.ts" if "container_format" in options else "clip.mp4")
    write_clip(path, frame_times(90, 30), width=64, height=48, **options)
    assert segments.plan(str(path), 1.0, 3, 2, 1e-6, 1.0) is None
