import multiprocessing
import os
import time

import pytest

import streamo.video.cache as cache_module
from streamo.video import FrameCache, VideoError
from streamo.video.cache import MARKER
from streamo.video.synthetic import read_code

from .clips import expected_frames, make_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("cache_clips"), "clip.mp4", 25, 6.2)


def test_frames_are_extracted_once_and_read_back(tmp_path, clip, monkeypatch):
    path, times = clip
    cache = FrameCache(tmp_path / "cache", max_pixels=64 * 784)
    frames = cache.frames(path)
    assert len(frames) == 6 and all(frame.is_file() for frame in frames)
    images = cache.load(path)
    assert [read_code(image) for image in images] == expected_frames(times, 1.0, 6)
    assert images[0].size[0] * images[0].size[1] <= 64 * 784
    assert cache.lookup(path).times == pytest.approx([times[i] for i in expected_frames(times, 1.0, 6)], abs=1e-4)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a complete entry must not be decoded again")

    monkeypatch.setattr(cache_module, "turn_frames", no_decoding)
    assert FrameCache(tmp_path / "cache", max_pixels=64 * 784).frames(path) == frames


def test_key_follows_video_identity_and_settings(tmp_path, clip):
    path, _ = clip
    base = FrameCache(tmp_path)
    assert base.key(path) == FrameCache(tmp_path, quality=50).key(path)
    assert base.key(path) != FrameCache(tmp_path, fps=2.0).key(path)
    assert base.key(path) != FrameCache(tmp_path, max_pixels=200704).key(path)
    assert base.key(path) != FrameCache(tmp_path, min_pixels=784).key(path)
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(path.read_bytes())
    before = base.key(copy)
    os.utime(copy, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert base.key(copy) != before


def _slow_frames(*args, **kwargs):
    """Decoding that records who decodes and leaves time for a second process to collide."""
    with open(os.environ["STREAMO_TEST_DECODE_LOG"], "a") as log:
        log.write(f"{os.getpid()}\n")
    for sampled in _real_turn_frames(*args, **kwargs):
        time.sleep(0.05)
        yield sampled


_real_turn_frames = cache_module.turn_frames


def _extract_in_child(cache_dir, video, barrier, results):
    cache_module.turn_frames = _slow_frames
    barrier.wait()
    entry = FrameCache(cache_dir).ensure(video)
    results.put((len(entry.paths), [p.stat().st_size > 0 for p in entry.paths].count(True)))


def _watch_in_child(cache_dir, video, stop, results):
    """A reader that polls while the writers work: it must only ever see complete entries."""
    cache = FrameCache(cache_dir)
    seen = set()
    while not stop.is_set():
        entry = cache.lookup(video)
        if entry is not None:
            seen.add((len(entry.paths), all(p.is_file() for p in entry.paths)))
        time.sleep(0.005)
    results.put(sorted(seen))


def test_two_concurrent_extractors_decode_once_and_never_expose_half_entries(tmp_path, clip, monkeypatch):
    path, _ = clip
    log = tmp_path / "decoders.log"
    monkeypatch.setenv("STREAMO_TEST_DECODE_LOG", str(log))
    context = multiprocessing.get_context("fork")
    barrier, results, watched, stop = context.Barrier(2), context.Queue(), context.Queue(), context.Event()
    watcher = context.Process(target=_watch_in_child, args=(tmp_path / "cache", path, stop, watched))
    watcher.start()
    writers = [context.Process(target=_extract_in_child, args=(tmp_path / "cache", path, barrier, results))
               for _ in range(2)]
    for writer in writers:
        writer.start()
    outcomes = [results.get(timeout=60) for _ in writers]
    for writer in writers:
        writer.join(timeout=60)
        assert writer.exitcode == 0
    stop.set()
    seen = watched.get(timeout=60)
    watcher.join(timeout=60)
    assert outcomes == [(6, 6), (6, 6)]
    assert len(log.read_text().split()) == 1, "exactly one process decodes"
    assert seen in ([], [(6, True)])
    shard = next(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    assert [p.name for p in shard.iterdir()] == [FrameCache(tmp_path / "cache").key(path)]


def test_a_killed_extraction_leaves_nothing_that_is_used(tmp_path, clip, monkeypatch):
    path, times = clip
    cache = FrameCache(tmp_path)

    def dies_midway(*args, **kwargs):
        for sampled in _real_turn_frames(*args, **kwargs):
            if sampled[0] == 3:
                raise KeyboardInterrupt
            yield sampled

    monkeypatch.setattr(cache_module, "turn_frames", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        cache.frames(path)
    assert cache.lookup(path) is None
    # a temporary directory left by a process killed outright (no cleanup ran)
    key = cache.key(path)
    stale = tmp_path / key[:2] / f".{key}.dead.tmp"
    stale.mkdir()
    (stale / "000000.jpg").write_bytes(b"half")
    monkeypatch.setattr(cache_module, "turn_frames", _real_turn_frames)
    assert [read_code(image) for image in cache.load(path)] == expected_frames(times, 1.0, 6)
    assert sorted(p.name for p in (tmp_path / key[:2]).iterdir()) == [key]


def test_an_entry_without_its_marker_is_rebuilt(tmp_path, clip):
    path, _ = clip
    cache = FrameCache(tmp_path)
    entry = cache.ensure(path)
    (entry.directory / MARKER).unlink()
    assert cache.lookup(path) is None
    assert len(cache.frames(path)) == 6


def test_bad_videos_raise_a_named_error_and_leave_no_entry(tmp_path):
    cache = FrameCache(tmp_path / "cache")
    with pytest.raises(VideoError, match="absent.mp4"):
        cache.frames(tmp_path / "absent.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    for _ in range(2):  # the lock is released after a failure
        with pytest.raises(VideoError, match="broken.mp4"):
            cache.frames(broken)
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if not p.name.endswith(".lock") and p.is_file()]
    assert leftovers == []
    assert cache.lookup(broken) is None


def test_settings_are_validated(tmp_path):
    with pytest.raises(ValueError):
        FrameCache(tmp_path, fps=0)
    with pytest.raises(ValueError):
        FrameCache(tmp_path, quality=101)
    with pytest.raises(ValueError):
        FrameCache(tmp_path, min_pixels=10_000, max_pixels=5_000)


def _extract_all_in_child(cache_dir, videos, barrier, results):
    cache_module.turn_frames = _slow_frames
    barrier.wait()
    results.put([len(FrameCache(cache_dir).ensure(video).paths) for video in videos])


def test_two_ranks_filling_one_cache_in_opposite_orders_leave_one_entry_per_video(tmp_path, clip, monkeypatch):
    """What two training ranks do when both preprocess the same dataset into one frame cache."""
    first, _ = clip
    second, _ = make_clip(tmp_path, "second.mp4", 25, 4.2)
    log = tmp_path / "decoders.log"
    monkeypatch.setenv("STREAMO_TEST_DECODE_LOG", str(log))
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    orders = [[first, second], [second, first]]
    ranks = [context.Process(target=_extract_all_in_child, args=(tmp_path / "cache", order, barrier, results))
             for order in orders]
    for rank in ranks:
        rank.start()
    counts = sorted(results.get(timeout=60) for _ in ranks)
    for rank in ranks:
        rank.join(timeout=60)
        assert rank.exitcode == 0
    assert counts == [[4, 6], [6, 4]]
    assert len(log.read_text().split()) == 2, "each video is decoded by one process only"
    cache = FrameCache(tmp_path / "cache")
    entries = sorted(p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").glob("*/*") if p.is_dir())
    assert entries == sorted(cache.entry_name(cache.lookup(video)) for video in (first, second))
    assert not list((tmp_path / "cache").rglob("*.tmp"))
