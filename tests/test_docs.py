"""Every command in a runnable block of README.md and docs/*.md parses with the real parsers,
and every relative link between them leads to a file and heading that exist.

A fenced block whose info string is ``bash runnable`` is checked line by line: each ``streamo
…`` (or ``python -m streamo.cli …``) command is parsed by ``streamo.cli.build_parser()``, each
``python scripts/convert_streaming_video.py …`` by the data commands' parser and each ``python
benchmarks/NAME.py …`` by the parser that script builds; ``bash FILE`` must name a file of the
repository. Sub-commands at any depth (``streamo instruct prepare``) are whatever the parsers
hold, so new sub-commands are checked as soon as their docs mark a block runnable. Values are
not opened or converted (``--model output/streamo/checkpoint-100`` need not exist): only the
command, its option names, their arity and choices, and the required options are checked.

A ``python runnable`` block is a whole program: it must compile here, and it must be run,
against the real thing it talks to, by the test its doc names (``PYTHON_EXAMPLES``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import runpy
import shlex
import sys
from pathlib import Path
from unittest import mock

import pytest

from streamo.cli import DATA_COMMANDS, build_parser

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```bash runnable[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
OPERATORS = {"|", "||", "&&", ";", "&"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def runnable_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, body) of every ``bash runnable`` block."""
    return [(text.count("\n", 0, match.start()) + 1, match.group(1)) for match in FENCE.finditer(text)]


def simple_commands(block: str) -> list[list[str]]:
    """The block's commands as word lists: continuations joined, comments dropped, split at
    pipes and list operators, leading ``VAR=value`` assignments removed."""
    commands: list[list[str]] = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
        lexer.whitespace_split = True
        current: list[str] = []
        for word in [*lexer, ";"]:
            if word in OPERATORS:
                while current and ASSIGNMENT.match(current[0]):
                    current.pop(0)
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    return commands


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def script_parser(script: Path) -> argparse.ArgumentParser:
    """The parser a script builds in ``main``, caught when it first parses (nothing else runs)."""

    def capture(parser, *args, **kwargs):
        raise _Captured(parser)

    with mock.patch.object(argparse.ArgumentParser, "parse_known_args", capture), \
            mock.patch.object(sys, "argv", [str(script)]), mock.patch.object(sys, "path", [str(script.parent), *sys.path]):
        try:
            runpy.run_path(str(script), run_name="__main__")
        except _Captured as caught:
            return caught.parser
    raise AssertionError(f"{script} parsed no arguments")


def _values_unchecked(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Leaves names, arity, choices and required options to argparse; values stay strings, so
    files need not exist (choices are compared as the strings a command line gives). Options
    must be spelt out: docs do not rely on argparse's abbreviations."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _values_unchecked(sub)
            continue
        action.type = None
        if action.choices is not None:
            action.choices = [str(choice) for choice in action.choices]
    return parser


def parse_error(parser: argparse.ArgumentParser, words: list[str]) -> str | None:
    """argparse's own message when ``words`` do not parse, else None."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            _values_unchecked(parser).parse_args(words)
    except SystemExit as exc:
        if exc.code:
            return stderr.getvalue().strip().splitlines()[-1]
    return None


def command_error(words: list[str]) -> str | None:
    """What is wrong with one documented command line, or None (commands we do not know pass)."""
    program, *rest = words
    if program in ("python", "python3") and rest[:2] == ["-m", "streamo.cli"]:
        program, rest = "streamo", rest[2:]
    if program == "streamo":
        return parse_error(build_parser(), rest)
    if program in ("python", "python3") and rest and rest[0].endswith(".py"):
        script = REPO / rest[0]
        if not script.is_file():
            return f"no such script: {rest[0]}"
        if rest[0] == "scripts/convert_streaming_video.py":
            return parse_error(build_parser(script.name, DATA_COMMANDS), rest[1:])
        if rest[0].startswith("benchmarks/"):
            return parse_error(script_parser(script), rest[1:])
    if program == "bash" and rest and not (REPO / rest[0]).is_file():
        return f"no such file: {rest[0]}"
    return None


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOCS:
        for line, block in runnable_blocks(path.read_text(encoding="utf-8")):
            found += [(f"{path.relative_to(REPO)}:{line}", words) for words in simple_commands(block)]
    return found


COMMANDS = documented_commands()


@pytest.mark.parametrize(("where", "words"), COMMANDS, ids=[f"{where} {' '.join(words[:3])}" for where, words in COMMANDS])
def test_documented_command_parses(where, words):
    error = command_error(words)
    assert error is None, f"{where}: {shlex.join(words)}\n{error}"


def test_the_docs_have_runnable_streamo_commands():
    """Guards against the marker being dropped or misspelt everywhere: then nothing is checked."""
    checked = {words[1] for _, words in COMMANDS if words[0] == "streamo"}
    assert {"convert", "frames", "stream", "eval", "ovobench", "synth", "tiny-model"} <= checked


PYTHON_FENCE = re.compile(r"^```python runnable[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
PYTHON_EXAMPLES = {"docs/serving.md": "tests/live/test_realtime.py"}
"""Each doc with ``python runnable`` blocks, and the test that runs them (``python_blocks``)."""


def python_blocks(doc: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, program) of every ``python runnable`` block of ``doc``."""
    text = (REPO / doc).read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start()) + 1, match.group(1)) for match in PYTHON_FENCE.finditer(text)]


def test_python_examples_compile_and_a_test_runs_them():
    for path in DOCS:
        doc = str(path.relative_to(REPO))
        blocks = python_blocks(doc)
        assert bool(blocks) == (doc in PYTHON_EXAMPLES), f"{doc}: name the test that runs its python runnable blocks"
        for line, program in blocks:
            compile(program, f"{doc}:{line}", "exec")
            assert "python_blocks" in (REPO / PYTHON_EXAMPLES[doc]).read_text(encoding="utf-8")


LINK = re.compile(r"\]\(([^)\s]+)\)")
ANY_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as '-'."""
    headings = re.findall(r"^#+ (.+)$", ANY_FENCE.sub("", text), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in LINK.findall(ANY_FENCE.sub("", path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file) if file else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text(encoding="utf-8")):
            broken.append(target)
    return broken


@pytest.mark.parametrize("path", DOCS, ids=[str(path.relative_to(REPO)) for path in DOCS])
def test_relative_links_lead_somewhere(path):
    assert broken_links(path) == []


def test_a_missing_heading_is_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Loss: `stream_focal`\n\n[ok](#loss-stream_focal) [bad](#loss) [gone](other.md)\n"
                    "```text\n[in code](nowhere.md)\n```\n", encoding="utf-8")
    assert broken_links(page) == ["#loss", "other.md"]


DOC = """Intro.

```bash runnable
PRESET=cpu-tiny bash train.sh   # a comment
streamo eval --predictions p.jsonl \\
    --data d.json --tolerance 2 | tee out.txt && echo done
```

```bash
streamo never --checked
```
"""


def test_blocks_are_split_into_commands():
    blocks = runnable_blocks(DOC)
    assert [line for line, _ in blocks] == [3]
    assert simple_commands(blocks[0][1]) == [
        ["bash", "train.sh"],
        ["streamo", "eval", "--predictions", "p.jsonl", "--data", "d.json", "--tolerance", "2"],
        ["tee", "out.txt"],
        ["echo", "done"],
    ]


@pytest.mark.parametrize("words", [
    ["streamo", "eval", "--predictions", "p.jsonl", "--data", "d.json", "--tolerence", "2"],  # misspelt option
    ["streamo", "evaluate", "--data", "d.json"],  # no such sub-command
    ["streamo", "eval", "--data", "d.json"],  # --predictions or --model is required
    ["streamo", "synth", "--out", "o", "--grounding", "all"],  # not a choice
    ["streamo", "stream", "--model", "m", "--video", "v.mp4", "--json", "yes"],  # a flag takes no value
    ["python", "scripts/convert_streaming_video.py", "eval", "--data", "d.json"],  # not a data command
    ["python", "benchmarks/learnability.py", "--preset", "fast"],
    ["python", "benchmarks/learnability.py", "--step", "10"],  # an abbreviation of --steps
    ["python", "benchmarks/nothing.py"],
    ["bash", "scripts/nothing.sh"],
])
def test_wrong_commands_are_caught(words):
    assert command_error(words) is not None


def test_nested_sub_commands_are_followed():
    parser = argparse.ArgumentParser(prog="streamo")
    outer = parser.add_subparsers(dest="command", required=True).add_parser("instruct")
    inner = outer.add_subparsers(dest="step", required=True).add_parser("prepare")
    inner.add_argument("--input", required=True, type=argparse.FileType("r"))
    assert parse_error(parser, ["instruct", "prepare", "--input", "missing.json"]) is None
    assert "--inptu" in parse_error(parser, ["instruct", "prepare", "--input", "missing.json", "--inptu", "x"])
    assert "invalid choice" in parse_error(parser, ["instruct", "prep"])
