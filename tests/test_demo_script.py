"""scripts/demo.sh, read without running it (tests/live/test_page.py runs its page model): each
``streamo`` line parses with the real parsers, the page model is built the way the page tests
build it, and the closing hint serves the example's videos."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from streamo.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DEMO = (REPO / "scripts" / "demo.sh").read_text()


def _commands() -> list[list[str]]:
    joined = DEMO.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("streamo ")]


def test_every_streamo_line_of_the_demo_parses(tmp_path):
    (tmp_path / "stream.json").write_text("[]")
    values = {"$out": str(tmp_path), "$model": str(tmp_path / "tiny"), "$checkpoint": str(tmp_path / "checkpoint"),
              "$fitted": str(tmp_path / "fitted")}
    commands = _commands()
    assert {command[0] for command in commands} >= {"tiny-model", "convert", "frames", "fit-head", "stream"}
    for command in commands:
        build_parser().parse_args([re.sub(r"\$[a-z]+", lambda m: values[m.group(0)], part) for part in command])


def test_the_page_model_is_the_one_the_page_tests_build():
    from live.test_page import SAMPLE

    from engine.stream_model import MAX_PIXELS

    fit = build_parser().parse_args(next(command for command in _commands() if command[0] == "fit-head"))
    assert fit.sample == [SAMPLE] and fit.max_pixels == MAX_PIXELS
    assert ["tiny-model", "--with-state-tokens"] == next(c for c in _commands() if "--with-state-tokens" in c)[:2]


def test_the_closing_hint_serves_the_example_videos_with_the_fitted_model():
    hint = re.search(r'echo "\s+\$STREAMO_VENV/bin/streamo (serve [^"]*)"', DEMO)
    assert hint, "no serve hint"
    args = build_parser().parse_args(hint.group(1).replace("$fitted", "output/demo/example-fitted").split())
    assert [str(path) for path in args.sources] == ["dataset/example/videos"]
    assert args.model == "output/demo/example-fitted"
