"""scripts/demo.sh, read without running it (tests/live/test_page.py runs its page model): each
``streamo`` line parses with the real parsers, the page model is built the way the page tests
build it, and the closing hint, printed from another directory, serves the example's videos
by absolute paths and names the sample the page's downloads belong to."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from streamo.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DEMO = (REPO / "scripts" / "demo.sh").read_text()


def _commands(values: dict[str, str]) -> list[list[str]]:
    """Every ``streamo`` line of the demo, its ``$variables`` replaced from ``values``."""
    joined = DEMO.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    return [[re.sub(r"\$[a-z]+", lambda m: values[m.group(0)], part) for part in shlex.split(line)[1:]]
            for line in lines if line.startswith("streamo ")]


def _values(tmp_path: Path) -> dict[str, str]:
    return {"$out": str(tmp_path), "$model": str(tmp_path / "tiny"), "$checkpoint": str(tmp_path / "checkpoint"),
            "$fitted": str(tmp_path / "fitted"), "$example": str(REPO / "dataset" / "example"), "$sample": "2"}


def test_every_streamo_line_of_the_demo_parses(tmp_path):
    (tmp_path / "stream.json").write_text("[]")
    commands = _commands(_values(tmp_path))
    assert {command[0] for command in commands} >= {"tiny-model", "convert", "frames", "fit-head", "stream", "eval"}
    for command in commands:
        build_parser().parse_args(command)


def test_the_page_model_is_the_one_the_page_tests_build(tmp_path):
    from live.test_page import SAMPLE

    from engine.stream_model import MAX_PIXELS

    assert re.search(r"^sample=(\d+)", DEMO, re.M).group(1) == str(SAMPLE)
    commands = _commands(_values(tmp_path))
    fit = build_parser().parse_args(next(command for command in commands if command[0] == "fit-head"))
    assert fit.sample == [SAMPLE] and fit.max_pixels == MAX_PIXELS
    assert ["tiny-model", "--with-state-tokens"] == next(c for c in commands if "--with-state-tokens" in c)[:2]


def _closing_hint(cwd: Path) -> list[str]:
    """The demo's closing lines as it prints them from ``cwd``: its own path settings, then its hint."""
    settings = "\n".join(line for line in DEMO.splitlines() if re.match(r"(out|example|model|sample|fitted)=", line))
    hint = DEMO[DEMO.index("\nquestion="):]
    env = {key: value for key, value in os.environ.items() if key != "DEMO_DIR"}
    env.update(STREAMO_ROOT=str(REPO), STREAMO_VENV="/opt/streamo venv")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", f'cd "$STREAMO_ROOT"\n{settings}\ncd {shlex.quote(str(cwd))}\n{hint}'],
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()


def test_the_closing_hint_serves_the_example_videos_by_absolute_paths(tmp_path, monkeypatch):
    """Copied from the terminal into any directory, the printed commands find the demo's files."""
    from live.test_page import SAMPLE

    lines = _closing_hint(tmp_path)
    monkeypatch.chdir(tmp_path)
    Path("predictions.jsonl").write_text("")  # the page's download
    prefix = "/opt/streamo venv/bin/streamo "
    serve, score = (shlex.split(line.strip().removeprefix(prefix)) for line in lines if line.strip().startswith(prefix))
    args = build_parser().parse_args(serve)
    assert args.command == "serve"
    assert args.model == str(REPO / "output" / "demo" / "example-fitted")
    assert args.sources == [REPO / "dataset" / "example"] and (args.sources[0] / "raw_data.json").is_file()
    args = build_parser().parse_args(score)
    assert args.command == "eval" and args.data == REPO / "dataset" / "example" / "raw_data.json"
    assert Path(args.video_prefix).is_absolute()
    assert f"sample id for downloads to {SAMPLE} " in " ".join(lines)
    assert "Describe each change to the shapes as it happens." in " ".join(lines)  # sample 2's question
