"""Reading and atomically writing sample files: JSON list, single JSON object, or JSONL.

Inputs are streamed (JSONL line by line, JSON arrays through ijson) so a 465K-sample
file never has to sit in memory; outputs go to a temporary file that replaces the
target only when complete, so a crash never leaves a half-written dataset behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, NamedTuple

import ijson
import orjson

from .errors import UsageError


class Unparsed(NamedTuple):
    """A JSONL line kept as bytes so that parsing can happen in a worker process
    (a named tuple: cheap to send there)."""

    line: bytes
    line_number: int


class InvalidRecord(UsageError, ValueError):
    """A record that is not valid JSON."""


def parse_record(item: Any) -> Any:
    """Parse an ``Unparsed`` line; pass already-parsed records through."""
    if isinstance(item, Unparsed):
        try:
            return orjson.loads(item.line)
        except orjson.JSONDecodeError as exc:
            raise InvalidRecord(f"line {item.line_number}: invalid JSON ({exc})") from None
    return item


def _first_char(path: Path) -> bytes:
    with open(path, "rb") as handle:
        while chunk := handle.read(4096):
            stripped = chunk.lstrip()
            if stripped.startswith(b"\xef\xbb\xbf"):
                stripped = stripped[3:].lstrip()
            if stripped:
                return stripped[:1]
    return b""


def _looks_like_jsonl(path: Path) -> bool:
    """A file of objects, one per line (a pretty-printed single object is not)."""
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    orjson.loads(line)
                    return True
                except orjson.JSONDecodeError:
                    return False
    return False


def iter_records(path: str | os.PathLike[str], lazy: bool = False) -> Iterator[Any]:
    """Yield the records of a JSON list, a single JSON object, or a JSONL file.

    With ``lazy=True`` JSONL lines come back as ``Unparsed`` (call ``parse_record``).
    Raises InvalidRecord for a file that is none of these.
    """
    path = Path(path)
    first = _first_char(path)
    if first == b"[":
        with open(path, "rb") as handle:
            try:
                yield from ijson.items(handle, "item", use_float=True)
            except ijson.JSONError as exc:
                raise InvalidRecord(f"{path}: invalid JSON array ({exc})") from None
        return
    if first == b"{" and (path.suffix == ".jsonl" or _looks_like_jsonl(path)):
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    item = Unparsed(line, number)
                    yield item if lazy else parse_record(item)
        return
    if first == b"{":
        try:
            yield orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise InvalidRecord(f"{path}: invalid JSON ({exc})") from None
        return
    if first == b"":
        return
    raise InvalidRecord(f"{path}: expected a JSON list, a JSON object or JSON lines")


def output_format(path: str | os.PathLike[str]) -> str:
    """``jsonl`` for ``*.jsonl`` outputs, otherwise an indented JSON list like the original data."""
    return "jsonl" if str(path).endswith(".jsonl") else "json"


def encode_record(record: Any, fmt: str) -> bytes:
    """Serialise one record for ``RecordWriter`` (done in workers to spread the cost)."""
    if fmt == "jsonl":
        return orjson.dumps(record)
    body = orjson.dumps(record, option=orjson.OPT_INDENT_2)
    return b"  " + body.replace(b"\n", b"\n  ")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path`` and rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class RecordWriter:
    """Append encoded records to an atomically written JSON list or JSONL file."""

    def __init__(self, path: str | os.PathLike[str]):
        self.format = output_format(path)
        self._context = atomic_write(path, "wb")
        self._handle: IO[bytes] | None = None
        self.count = 0

    def __enter__(self) -> "RecordWriter":
        self._handle = self._context.__enter__()
        if self.format == "json":
            self._handle.write(b"[")
        return self

    def write_encoded(self, data: bytes) -> None:
        assert self._handle is not None
        if self.format == "jsonl":
            self._handle.write(data + b"\n")
        else:
            self._handle.write((b",\n" if self.count else b"\n") + data)
        self.count += 1

    def write(self, record: Any) -> None:
        self.write_encoded(encode_record(record, self.format))

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        assert self._handle is not None
        if exc_type is None and self.format == "json":
            self._handle.write(b"\n]" if self.count else b"]")
        return self._context.__exit__(exc_type, exc, tb)
