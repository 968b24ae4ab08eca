"""Stream datasets for ms-swift: validation, long-clip windows and a report of removed samples.

Any stream-format JSON/JSONL file given to ``--dataset`` (or ``--val_dataset``) goes through
``StreamPreprocessor``, as does the named example dataset ``streamo-example``. Each sample is
checked before training instead of failing somewhere inside a training step: its messages
must follow the stream protocol, its one video must exist and decode, and the number of
``<stream>`` turns must match the frames the video yields. A sample that fails is removed,
its reason logged with the file and sample index and written to the run report; a sample
longer than ``--max_length`` is split into windows (``windows.py``), never dropped.

ms-swift picks a preprocessor per dataset only through its dataset registry, keyed by the
path exactly as given on the command line. So ``register_argument_datasets`` registers the
JSON/JSONL paths of the arguments object that is importing the plugin (ms-swift imports
``--external_plugins`` while that object is being initialised); it runs only when a command
is given datasets and changes nothing for any other path.
"""

from __future__ import annotations

import inspect
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swift.dataset import DatasetMeta, register_dataset
from swift.dataset.dataset_syntax import DatasetSyntax
from swift.dataset.preprocessor import RowPreprocessor
from swift.utils import get_logger, is_master

from ..jsonfiles import atomic_write
from ..protocol import ConversationError, parse_stream_messages, turn_count
from ..video import VideoError, probe_video, smart_resize
from .frames import FrameSource
from .windows import ChatMLCounter, WindowError, frame_tokens, split_windows

logger = get_logger()

EXAMPLE_DATASET = "streamo-example"
REPORT_NAME = "streamo_data_report.json"
_INDEX = "streamo_sample"
_DATA_SUFFIXES = (".json", ".jsonl")


class RemovedSample(ValueError):
    """A sample that cannot be trained on; the message is the logged reason."""


@dataclass
class StreamSettings:
    """What preprocessing needs from the run: the token budget, tokenizer and frame settings."""

    max_length: int | None = None
    tokenizer: Any = None
    frames: FrameSource = field(default_factory=FrameSource.from_env)
    report_dir: str | None = None


_arguments: Any = None
"""The ms-swift arguments object that imported the plugin (None outside a swift command)."""


def _load_tokenizer(model_dir: str, new_special_tokens: list[str]):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if new_special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(new_special_tokens)})
    return tokenizer


def settings_from_arguments(arguments: Any) -> StreamSettings:
    """Settings read from a (fully initialised) ms-swift arguments object."""
    model_dir = getattr(arguments, "model_dir", None)
    tokenizer = _load_tokenizer(model_dir, list(getattr(arguments, "new_special_tokens", None) or [])) if model_dir else None
    return StreamSettings(
        max_length=getattr(arguments, "max_length", None),
        tokenizer=tokenizer,
        frames=FrameSource.from_env(getattr(arguments, "max_pixels", None)),
        report_dir=getattr(arguments, "output_dir", None),
    )


def locate_video(video: str, data_file: str | None) -> str:
    """An absolute path for ``video``: as given, else from the current directory, else from
    the data file's directory or one of its parents (data files often name paths from the
    repository root). Returns the input unchanged when nothing exists."""
    if os.path.isabs(video):
        return video
    if os.path.exists(video):
        return os.path.abspath(video)
    if data_file:
        for base in Path(os.path.abspath(data_file)).parents:
            candidate = base / video
            if candidate.exists():
                return str(candidate)
    return video


class StreamPreprocessor(RowPreprocessor):
    """Validates stream samples, turns too-long ones into windows and reports removals."""

    def __init__(
        self, data_file: str | None = None, settings: StreamSettings | None = None, whole_videos: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.data_file = data_file
        # Training samples must cover their whole video; inference samples may stop early (a prefix).
        self.whole_videos = whole_videos
        self._settings = settings
        self._durations: dict[tuple[str, float], tuple[int, tuple[int, int]]] = {}

    @property
    def settings(self) -> StreamSettings:
        if self._settings is None:
            self._settings = settings_from_arguments(_arguments) if _arguments is not None else StreamSettings()
        return self._settings

    def _video_frames(self, video: str, fps: float) -> tuple[int, tuple[int, int]]:
        """(frame count, (height, width) of a frame) of ``video`` at ``fps``."""
        key = (video, fps)
        if key not in self._durations:
            frames = self.settings.frames
            cache = frames.cache(fps)
            if cache is not None:
                entry = cache.ensure(video)  # decodes once: a broken clip fails here, not in training
                self._durations[key] = (len(entry.times), (entry.height, entry.width))
            else:
                info = probe_video(video)  # the size a player shows: rotation and pixel aspect applied
                try:
                    size = smart_resize(info.height, info.width, frames.min_pixels, frames.max_pixels)
                except ValueError as exc:
                    raise VideoError(f"{video}: {exc}") from None
                self._durations[key] = (turn_count(info.duration, fps), size)
        return self._durations[key]

    def windows(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The training rows of one sample (one, or several windows). Raises RemovedSample."""
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RemovedSample("field 'messages': missing or empty")
        messages = [{"role": message.get("role"), "content": message.get("content")} for message in messages]
        try:
            timeline = parse_stream_messages(messages)
        except ConversationError as exc:
            raise RemovedSample(f"field 'messages': {exc}") from None
        if not timeline.turns:
            raise RemovedSample("field 'messages': no <stream> turns")
        videos = row.get("videos") or []
        if isinstance(videos, str):
            videos = [videos]
        if len(videos) != 1 or not isinstance(videos[0], str):
            raise RemovedSample(f"field 'videos': a stream sample needs exactly one video, got {len(videos)}")
        video = locate_video(videos[0], self.data_file)
        if not os.path.isfile(video):
            raise RemovedSample(f"field 'videos': video not found: {videos[0]}")
        fps = round(timeline.fps, 6)
        try:
            frames, (height, width) = self._video_frames(video, fps)
        except (VideoError, OSError, IndexError) as exc:
            raise RemovedSample(f"field 'videos': unreadable video: {exc}") from None
        indices = [round(turn.start * fps) for turn in timeline.turns]
        if indices != list(range(indices[0], indices[0] + len(indices))):
            raise RemovedSample("field 'messages': time tags are not consecutive turns")
        if self.whole_videos and indices[0] == 0 and len(indices) != frames:
            raise RemovedSample(f"{len(indices)} <stream> turns but {video} yields {frames} frames at {fps:g} fps")
        if indices[-1] >= frames:
            raise RemovedSample(f"turn {indices[-1]} is past the {frames} frames of {video} at {fps:g} fps")
        settings = self.settings
        if settings.max_length is None or settings.tokenizer is None:
            parts = [messages]
        else:
            try:
                parts = split_windows(messages, settings.max_length, ChatMLCounter(settings.tokenizer, frame_tokens(height, width)))
            except WindowError as exc:
                raise RemovedSample(str(exc)) from None
        return [{"messages": part, "videos": [video]} for part in parts]

    def prepare_dataset(self, dataset):
        if hasattr(dataset, "__len__") and _INDEX not in dataset.column_names:
            dataset = dataset.add_column(_INDEX, list(range(len(dataset))))
        return dataset

    def preprocess(self, row: dict[str, Any]):
        index = row.pop(_INDEX, None)
        try:
            rows = self.windows(row)
        except RemovedSample as exc:
            where = f"{self.data_file or 'dataset'}: sample {index if index is not None else '?'}"
            logger.warning(f"{where} removed: {exc}")
            self._record_removal(index, str(exc))
            return None
        for part in rows:
            part[_INDEX] = index
        return rows

    def _removals_path(self) -> Path | None:
        report_dir = self.settings.report_dir
        if not report_dir or self.data_file is None:
            return None
        stem = Path(self.data_file).name
        return Path(report_dir) / f".streamo_removed.{stem}.jsonl"

    def _record_removal(self, index: int | None, reason: str) -> None:
        path = self._removals_path()
        if path is None:
            return
        line = json.dumps({"file": self.data_file, "sample": index, "reason": reason}, ensure_ascii=False) + "\n"
        with open(path, "a", encoding="utf-8") as handle:  # one write per line: whole lines from every worker
            handle.write(line)

    def __call__(self, dataset, *args, **kwargs):
        removals = self._removals_path()
        master = is_master()
        if removals is not None and master:
            removals.parent.mkdir(parents=True, exist_ok=True)
            removals.unlink(missing_ok=True)
        samples = len(dataset) if hasattr(dataset, "__len__") else None
        mapped = super().__call__(dataset, *args, **kwargs)
        if samples is None or not hasattr(mapped, "__len__"):
            return mapped
        kept = len(set(mapped[_INDEX])) if len(mapped) else 0
        mapped = mapped.remove_columns([_INDEX]) if _INDEX in (mapped.column_names or []) else mapped
        if master:
            self._report(samples, kept, len(mapped), removals)
        if samples and not kept:
            raise RemovedSample(f"{self.data_file}: all {samples} samples were removed (reasons logged above and in the run report)")
        return mapped

    def _report(self, samples: int, kept: int, rows: int, removals: Path | None) -> None:
        reasons: Counter[str] = Counter()
        removed_samples = []
        if removals is not None and removals.exists():
            for line in removals.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                removed_samples.append(entry)
                reasons[entry["reason"].split(":")[0]] += 1
            removals.unlink()
        summary = {
            "file": self.data_file,
            "samples": samples,
            "kept_samples": kept,
            "removed_samples": samples - kept,
            "training_rows": rows,
            "split_into_windows": rows - kept,
            "removed_by_reason": dict(reasons),
            "removed": removed_samples,
        }
        logger.info(
            f"streamo data report for {self.data_file}: {samples} samples, {samples - kept} removed, "
            f"{rows} training rows ({rows - kept} extra from long-clip windows)"
        )
        report_dir = self.settings.report_dir
        if report_dir:
            path = Path(report_dir) / REPORT_NAME
            reports = []
            if path.exists():
                reports = [entry for entry in json.loads(path.read_text(encoding="utf-8")) if entry.get("file") != self.data_file]
            with atomic_write(path, "w") as handle:
                json.dump(reports + [summary], handle, indent=2, ensure_ascii=False)


def _running_arguments() -> Any:
    """The ms-swift arguments object whose initialisation is importing the plugin, if any."""
    from swift.arguments import BaseArguments

    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, BaseArguments):
            return candidate
        frame = frame.f_back
    return None


def register_stream_dataset(path: str, whole_videos: bool = True) -> None:
    """Route the stream file ``path`` (as written on the command line) through StreamPreprocessor."""
    preprocessor = StreamPreprocessor(data_file=os.path.abspath(path), whole_videos=whole_videos)
    register_dataset(DatasetMeta(dataset_path=path, preprocess_func=preprocessor), exist_ok=True)


def register_argument_datasets() -> Any:
    """Register the stream files named by the swift command being set up (see module doc);
    returns that command's arguments object (None outside a swift command)."""
    global _arguments
    arguments = _running_arguments()
    if arguments is None:
        return None
    _arguments = arguments
    training = list(getattr(arguments, "dataset", None) or [])
    for spec in list(getattr(arguments, "val_dataset", None) or []) + training:  # training files win
        syntax = DatasetSyntax.parse(spec)
        if syntax.dataset_type == "path" and syntax.dataset.lower().endswith(_DATA_SUFFIXES):
            register_stream_dataset(syntax.dataset, whole_videos=spec in training)
    return arguments


def example_data_file() -> Path:
    return Path(__file__).resolve().parents[2] / "dataset" / "example" / "stream_format.json"


def register_example_dataset() -> None:
    """``--dataset streamo-example``: the shipped example (in a source checkout)."""
    path = example_data_file()
    if path.is_file():
        register_dataset(
            DatasetMeta(dataset_name=EXAMPLE_DATASET, dataset_path=str(path), preprocess_func=StreamPreprocessor(data_file=str(path))),
            exist_ok=True,
        )
