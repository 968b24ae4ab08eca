"""`streamo instruct prepare`'s video check records the size a player shows, and re-checks rows that lack it."""

import orjson

from streamo.instruct.videos import FOUND, REPORT_NAME, Video, check_videos, write_report
from streamo.video.synthetic import frame_times, write_clip


def _video(path) -> Video:
    return Video("phone", path.name, [str(path)])


def test_a_rotated_clip_is_recorded_at_its_shown_size(tmp_path):
    clip = tmp_path / "portrait.mov"
    write_clip(clip, frame_times(30, 10), 224, 112, rotation=90)
    out = tmp_path / "out"
    video = _video(clip)
    counts = check_videos([video], out)
    assert counts.probed == 1
    assert (video.status, video.width, video.height, video.cut_at) == (FOUND, 112, 224, None)
    assert abs(video.duration - 3.0) < 1e-6
    write_report([video], out)
    again = _video(clip)
    assert check_videos([again], out).reused == 1
    assert (again.width, again.height) == (112, 224)

    old = orjson.loads((out / REPORT_NAME).read_bytes())
    for field in ("width", "height", "cut_at"):
        del old[field]  # a report written before the shown size was recorded
    (out / REPORT_NAME).write_bytes(orjson.dumps(old) + b"\n")
    third = _video(clip)
    assert check_videos([third], out).probed == 1
    assert (third.width, third.height) == (112, 224)


def test_a_cut_off_clip_says_where_it_breaks(tmp_path):
    clip = tmp_path / "cut.mp4"
    write_clip(clip, frame_times(80, 10), 64, 48, options={"movflags": "faststart"})
    data = clip.read_bytes()
    clip.write_bytes(data[:len(data) // 2])
    video = _video(clip)
    check_videos([video], tmp_path / "out")
    assert video.status == FOUND
    assert video.cut_at is not None and 1 < video.cut_at < 7
    assert video.cut_at == video.duration
