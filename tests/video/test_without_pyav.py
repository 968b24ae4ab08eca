"""A lent GPU has no PyAV: training and streaming from a warm frame cache must not import ``av``.

Here the frames are extracted with PyAV, then a child process where ``import av`` fails
imports what training and serving import, reads the warm entry, streams it with the tiny
model, and fails, naming PyAV, only where decoding is really needed (a setting not extracted).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from streamo.tiny_model import TinyModelSpec, build_tiny_model
from streamo.video import FrameCache

from .clips import make_clip

REPO = Path(__file__).resolve().parents[2]
NO_PYAV = "import sys\nsys.modules['av'] = None  # import av raises ImportError\n"
CHILD = """
import json, sys
import streamo.cli, streamo.engine, streamo.live.server
import streamo.swift_plugin.dataset, streamo.swift_plugin.frames, streamo.swift_plugin.loss, streamo.swift_plugin.template
from streamo.video import FrameCache

clip, cache_dir = sys.argv[1:3]
entry = FrameCache(cache_dir, fps=2.0, max_pixels=3136).ensure(clip)
try:
    FrameCache(cache_dir, fps=1.0, max_pixels=3136).ensure(clip)
    cold = None
except ImportError as exc:
    cold = str(exc)
print(json.dumps({"times": list(entry.times), "directory": str(entry.directory), "cold": cold,
                  "av_loaded": sys.modules.get("av") is not None}))
"""


def test_training_imports_and_a_warm_cache_stream_without_pyav(tmp_path):
    clip, _ = make_clip(tmp_path, "clip.mp4", fps=10, seconds=3, width=112, height=112)
    warm = FrameCache(tmp_path / "cache", fps=2.0, max_pixels=3136).ensure(clip)
    model = build_tiny_model(tmp_path / "model", TinyModelSpec(with_state_tokens=True))
    (tmp_path / "shim").mkdir()
    (tmp_path / "shim" / "sitecustomize.py").write_text(NO_PYAV, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shim"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("STREAMO_FRAME_CACHE", None)

    done = subprocess.run([sys.executable, "-c", CHILD, str(clip), str(tmp_path / "cache")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    child = json.loads(done.stdout.strip().splitlines()[-1])
    assert child["times"] == list(warm.times) and child["directory"] == str(warm.directory)
    assert child["cold"] and "av" in child["cold"] and child["av_loaded"] is False

    stream = subprocess.run([sys.executable, "-m", "streamo.cli", "stream", "--model", str(model), "--video",
                             str(warm.directory), "--question", "What moves?", "--at", "0", "--json",
                             "--max-new-tokens", "4"], env=env, capture_output=True, text=True, timeout=300)
    assert stream.returncode == 0, stream.stderr[-3000:]
    events = [json.loads(line) for line in stream.stdout.splitlines() if line.startswith("{")]
    assert len(events) == len(warm.times) and all(event["state"] in ("silence", "standby", "response") for event in events)
