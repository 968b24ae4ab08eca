"""``benchmarks/serve_load.py`` at the tests' scale: both backends, each with the real
``streamo serve`` in its own process, and the transformers backend at ``--max-batch`` 1 and 4,
in one run that prints one JSON line."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import require_vllm

REPO = Path(__file__).resolve().parents[2]


def test_both_backends_in_one_run_lose_nothing_and_report_the_cache():
    require_vllm()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--backend", "transformers", "vllm",
               "--seconds", "3", "--max-sessions", "2", "--saturation-sessions", "2", "--saturation-frames", "12",
               "--engine-frames", "3", "--soak-seconds", "0", "--kv-cache-gib", "1", "--max-batch", "1", "4"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for backend in ("transformers", "vllm"):
        figures = report["backends"][backend]
        assert figures["lost"] == 0 and figures["sustained_sessions"] >= 1
        assert figures["decisions_per_s"] > 0 and 0.3 < figures["prefix_hit_rate"] < 1.0
        assert figures["computed_tokens_per_decision"] < figures["context_tokens_per_decision"]
        assert figures["quiet_p95_flooded_ms"] > 0 and figures["flood_frames_unread"] > 0
    assert set(report["vllm_over_transformers"]) == {"sustained_sessions", "decisions_per_s"}
    batched = report["backends"]["transformers"]
    assert set(batched["batches"]) == {"1", "4"} and batched["best_batch"] == 4
    assert all(row["lost"] == 0 and row["sustained_sessions"] >= 1 for row in batched["batches"].values())
    assert batched["batch_speedup"] > 0 and batched["batch_p95_ratio"] > 0
