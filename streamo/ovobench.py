"""OVO-Bench: reading its annotation file, asking a model, and scoring by the benchmark's rules.

Annotation file: one JSON list. Backward-tracing (EPM, ASI, HLD) and real-time (STU, OJR, ATR,
ACR, OCR, FPD) items are multiple choice asked at ``realtime`` seconds::

    {"id": 7, "task": "EPM", "video": "src/a.mp4", "realtime": 41, "question": "...", "options": [...], "gt": 2}

Forward-active items (REC, SSR, CRR) are probed at several ``test_info[].realtime`` moments:
REC counts an ``activity`` (``count`` per probe; ``start_times``/``end_times`` per occurrence),
SSR asks whether a tutorial ``step`` is being performed (``type`` 1 = yes; ``all_steps``,
``start_time``, ``end_time``), CRR asks whether a ``question`` asked at ``ask_time`` can be
answered yet (``type`` 1 after ``clue_time``).

Scoring rules, as in the benchmark's own scorer (``utils/OVOBenchScore.py``): a multiple-choice
reply is right when it contains the letter of the right option; REC when the digits of the
reply, joined, equal the count; SSR/CRR when the reply is exactly "Y"/"N" for type 1/0, or
contains "Yes"/"No" (case matters); a missing reply is wrong. The numbers, as that scorer
prints them: a task's accuracy is the mean over its probes (its "Task: ..., Acc:"); a
category's is the mean of its tasks' accuracies ("Backward/Realtime/Forward Avg."); ``overall``
is the mean of the category means ("Total Avg."), so the six real-time tasks weigh no more
than the three of each other category. When only some tasks are scored, the means are over
those tasks and their categories. Earlier versions of that scorer printed other totals (one
the mean over all tasks), so an older published total may not be this number.

Two ways to run a model: ``run_offline`` calls ``answer(probe)`` for each probe with the video
cut at the probe time (the benchmark's protocol); ``run_streaming`` plays each video once per
question through ``stream(request)`` and lets the model decide when to answer: its events are
turned into probe replies (CRR: "Yes" once it has answered; SSR: "Yes" while it is in Standby
or answers; REC: the number of answers so far) and also scored for latency against the
annotated evidence times (CRR ``clue_time``, REC ``end_times``, SSR the step's ``end_time``).
The prompts are Streamo's own wording, not the benchmark's. ``ovobench_model`` plugs the
streaming engine into both; ``read_replies`` scores a saved run instead.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

from .jsonfiles import iter_records
from .metrics.scoring import match_responses
from .metrics.text import rouge_l
from .protocol import State

BACKWARD_TASKS = ("EPM", "ASI", "HLD")
REALTIME_TASKS = ("STU", "OJR", "ATR", "ACR", "OCR", "FPD")
FORWARD_TASKS = ("REC", "SSR", "CRR")
CATEGORIES: dict[str, tuple[str, ...]] = {"backward": BACKWARD_TASKS, "realtime": REALTIME_TASKS, "forward": FORWARD_TASKS}
CATEGORY_OF = {task: category for category, tasks in CATEGORIES.items() for task in tasks}


@dataclass(frozen=True)
class Probe:
    """One question the benchmark scores: ask ``prompt`` about ``video`` up to ``time`` seconds."""

    item_id: Any
    task: str
    video: str
    time: float
    prompt: str
    expected: str
    """The option letter, the count, or "Yes"/"No"."""
    index: int = 0
    step: str = ""
    """SSR: the tutorial step asked about."""


@dataclass
class Item:
    id: Any
    task: str
    video: str
    probes: list[Probe]
    question: str
    """What a streaming model is asked (once, at ``ask_time``)."""
    ask_time: float
    evidence: list[float] = field(default_factory=list)
    """Forward tasks: moments the answer becomes available (for the latency score)."""
    reference_answer: str = ""
    step_ends: dict[str, float] = field(default_factory=dict)
    """SSR: when each tutorial step ends."""

    @property
    def category(self) -> str:
        return CATEGORY_OF[self.task]


class AnnotationError(ValueError):
    pass


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _seconds(record: dict, key: str, where: str) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise AnnotationError(f"{_path(where, key)}: expected seconds >= 0, got {value!r}")
    return float(value)


def _text(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise AnnotationError(f"{_path(where, key)}: expected non-empty text, got {value!r}")
    return value.strip()


def _list(record: dict, key: str, where: str) -> list:
    value = record.get(key)
    if not isinstance(value, list) or not value:
        raise AnnotationError(f"{_path(where, key)}: expected a non-empty list")
    return value


def multiple_choice_prompt(question: str, options: Sequence[str]) -> str:
    lines = [question, "Options:"] + [f"{chr(65 + i)}. {option}" for i, option in enumerate(options)]
    return "\n".join(lines + ["Reply with the letter of the right option only."])


def _parse_item(record: Any, video_root: str | None) -> Item:
    if not isinstance(record, dict):
        raise AnnotationError(f"expected a JSON object, got {type(record).__name__}")
    task = record.get("task")
    if task not in CATEGORY_OF:
        raise AnnotationError(f"task: unknown task {task!r}")
    item_id = record.get("id")
    video = _text(record, "video", "")
    if video_root:
        video = os.path.join(video_root, video)
    if task not in FORWARD_TASKS:
        question = _text(record, "question", "")
        options = _list(record, "options", "")
        gt = record.get("gt")
        if isinstance(gt, bool) or not isinstance(gt, int) or not 0 <= gt < len(options):
            raise AnnotationError(f"gt: expected an option index below {len(options)}, got {gt!r}")
        time = _seconds(record, "realtime", "")
        prompt = multiple_choice_prompt(question, [str(option) for option in options])
        probe = Probe(item_id, task, video, time, prompt, chr(65 + gt))
        return Item(item_id, task, video, [probe], prompt, time)

    infos = _list(record, "test_info", "")
    probes, evidence, reference, step_ends = [], [], "", {}
    if task == "REC":
        activity = _text(record, "activity", "")
        question = f"How many times did they {activity}? Answer with one number each time it happens again."
        ask_time = 0.0
        if "end_times" in record:
            evidence = sorted(_seconds({"end_times[]": t}, "end_times[]", "") for t in _list(record, "end_times", ""))
    elif task == "SSR":
        question = ""
        ask_time = 0.0
        steps, ends = record.get("all_steps"), record.get("end_time")
        if isinstance(steps, list) and isinstance(ends, list) and len(steps) == len(ends):
            step_ends = {str(step): float(end) for step, end in zip(steps, ends) if isinstance(end, (int, float))}
    else:
        question = _text(record, "question", "")
        ask_time = _seconds(record, "ask_time", "")
        evidence = [_seconds(record, "clue_time", "")]
        reference = str(record.get("answer") or "")
    for index, info in enumerate(infos):
        where = f"test_info[{index}]"
        if not isinstance(info, dict):
            raise AnnotationError(f"{where}: expected a JSON object")
        time = _seconds(info, "realtime", where)
        if task == "REC":
            count = info.get("count")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise AnnotationError(f"{where}.count: expected a count, got {count!r}")
            probes.append(Probe(item_id, task, video, time, f"How many times did they {activity}? Reply with one number.", str(count), index))
            continue
        kind = info.get("type")
        if kind not in (0, 1) or isinstance(kind, bool):
            raise AnnotationError(f"{where}.type: expected 0 or 1, got {kind!r}")
        expected = "Yes" if kind == 1 else "No"
        if task == "SSR":
            step = _text(info, "step", where)
            prompt = f"Is the person in the video performing this step right now: {step}? Reply Yes or No."
            probes.append(Probe(item_id, task, video, time, prompt, expected, index, step))
        else:
            prompt = f"{question}\nDo the frames so far, the latest ones above all, show enough to answer this? Reply Yes or No."
            probes.append(Probe(item_id, task, video, time, prompt, expected, index))
    return Item(item_id, task, video, probes, question, ask_time, evidence, reference, step_ends)


def load_annotations(
    path: str | os.PathLike[str], video_root: str | None = None, tasks: Iterable[str] | None = None
) -> tuple[list[Item], list[str]]:
    """Items of an OVO-Bench annotation file (optionally only ``tasks``) and the problems of unusable ones."""
    wanted = set(tasks) if tasks is not None else None
    items: list[Item] = []
    problems: list[str] = []
    for index, record in enumerate(iter_records(path)):
        if wanted is not None and isinstance(record, dict) and record.get("task") not in wanted:
            continue
        try:
            items.append(_parse_item(record, video_root))
        except AnnotationError as exc:
            identity = f" (id {record.get('id')!r})" if isinstance(record, dict) else ""
            problems.append(f"{path}: item {index}{identity}: {exc}")
    return items, problems


# ------------------------------------------------------------------ scoring by the benchmark's rules


def probe_correct(task: str, reply: str | None, expected: str) -> bool:
    """The benchmark's rule for one reply (see the module docstring)."""
    if reply is None:
        return False
    if task == "REC":
        return "".join(re.findall(r"\d+", reply)) == expected
    if task in ("SSR", "CRR"):
        if reply == expected[0]:  # a bare "Y" or "N"
            return True
        return expected in reply
    return expected in reply


@dataclass
class ProbeResult:
    probe: Probe
    reply: str | None
    error: str | None = None

    @property
    def correct(self) -> bool:
        return probe_correct(self.probe.task, self.reply, self.probe.expected)


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def score(results: Iterable[ProbeResult]) -> dict[str, Any]:
    """Per-task accuracy, category means and ``overall`` (mean of the category means), in %,
    computed as the benchmark's scorer computes them (see the module docstring)."""
    by_task: dict[str, list[bool]] = {}
    for result in results:
        by_task.setdefault(result.probe.task, []).append(result.correct)
    tasks = {task: 100 * sum(marks) / len(marks) for task, marks in by_task.items()}
    categories = {}
    for category, members in CATEGORIES.items():
        present = [tasks[task] for task in members if task in tasks]
        if present:
            categories[category] = _mean(present)
    return {
        "tasks": tasks,
        "probes": {task: len(marks) for task, marks in by_task.items()},
        "categories": categories,
        "overall": _mean(categories.values()),
    }


# ------------------------------------------------------------------ running a model


AnswerFn = Callable[[Probe], "str | None"]


def run_offline(items: Iterable[Item], answer: AnswerFn) -> list[ProbeResult]:
    """Ask ``answer`` every probe (video up to ``probe.time``); a failing call is a missing reply."""
    results = []
    for item in items:
        for probe in item.probes:
            try:
                reply = answer(probe)
            except Exception as exc:  # one failing probe must not end the run
                results.append(ProbeResult(probe, None, f"{type(exc).__name__}: {exc}"))
                continue
            results.append(ProbeResult(probe, reply if isinstance(reply, str) else None))
    return results


@dataclass(frozen=True)
class StreamRequest:
    """Play ``video`` from 0 to ``until`` seconds, asking ``question`` at ``ask_time``."""

    item_id: Any
    task: str
    video: str
    question: str
    ask_time: float
    until: float


@dataclass(frozen=True)
class DecidedTurn:
    """One turn's decision, as the streaming engine reports it (``t`` = start of the turn)."""

    t: float
    state: State
    text: str = ""


StreamFn = Callable[[StreamRequest], Sequence[DecidedTurn]]


@dataclass
class StreamRun:
    request: StreamRequest
    events: list[DecidedTurn]
    evidence: list[float]
    reference_answer: str = ""
    error: str | None = None

    def responses(self) -> list[DecidedTurn]:
        """Answers from the turn in which the question was asked on."""
        asked = max((e.t for e in self.events if e.t <= self.request.ask_time + 1e-9), default=self.request.ask_time)
        return [e for e in self.events if e.state is State.RESPONSE and e.t >= asked]


def _requests(item: Item, answer_window: float, horizon: float) -> list[tuple[StreamRequest, list[Probe], list[float]]]:
    """The streams to play for one item; forward streams run ``horizon`` past the last evidence."""
    last = max(probe.time for probe in item.probes)
    if item.task == "SSR":
        groups: dict[str, list[Probe]] = {}
        for probe in item.probes:
            groups.setdefault(probe.step, []).append(probe)
        requests = []
        for step, probes in groups.items():
            evidence = [item.step_ends[step]] if step in item.step_ends else []
            question = f"Tell me when the person finishes this step: {step}"
            until = max([last] + [e + horizon for e in evidence])
            requests.append((StreamRequest(item.id, item.task, item.video, question, 0.0, until), probes, evidence))
        return requests
    if item.task in FORWARD_TASKS:
        until = max([last] + [e + horizon for e in item.evidence])
        return [(StreamRequest(item.id, item.task, item.video, item.question, item.ask_time, until), item.probes, item.evidence)]
    probe = item.probes[0]
    return [(StreamRequest(item.id, item.task, item.video, probe.prompt, probe.time, probe.time + answer_window), [probe], [])]


def _reply_from_events(probe: Probe, run: StreamRun) -> str | None:
    """The reply a streaming run gives to one probe (see the module docstring)."""
    responses = [e for e in run.responses() if e.t <= probe.time]
    if probe.task == "REC":
        return str(len(responses))
    if probe.task == "CRR":
        return "Yes" if responses else "No"
    if probe.task == "SSR":
        seen = [e for e in run.events if e.t <= probe.time]
        return "Yes" if seen and seen[-1].state in (State.STANDBY, State.RESPONSE) else "No"
    answers = run.responses()
    return answers[0].text if answers else None


def run_streaming(
    items: Iterable[Item], stream: StreamFn, answer_window: float = 5.0, horizon: float = 10.0
) -> tuple[list[ProbeResult], list[StreamRun]]:
    """Play each question once through ``stream``; the model decides when to answer.

    Multiple-choice questions are asked at their ``realtime`` and take the first answer within
    ``answer_window`` seconds. SSR plays one stream per probed step (asked at 0). Forward
    streams run until the last probe or ``horizon`` seconds past the last evidence, whichever
    is later (a stream function stops earlier at the end of the video).
    """
    results: list[ProbeResult] = []
    runs: list[StreamRun] = []
    for item in items:
        for request, probes, evidence in _requests(item, answer_window, horizon):
            try:
                events = sorted(stream(request), key=lambda e: e.t)
                error = None
            except Exception as exc:  # one failing stream must not end the run
                events, error = [], f"{type(exc).__name__}: {exc}"
            run = StreamRun(request, list(events), evidence, item.reference_answer, error)
            runs.append(run)
            for probe in probes:
                results.append(ProbeResult(probe, None if error else _reply_from_events(probe, run), error))
    return results, runs


def latency_score(runs: Iterable[StreamRun], tolerance: float = 1.0, horizon: float = 10.0) -> dict[str, Any]:
    """How long after the evidence the forward answers came, per task.

    Each evidence moment e is matched one-to-one to an answer in [e − tolerance, e + horizon]
    (most matches, then least total shift). Credit is 1 up to ``tolerance`` late, falling
    linearly to 0 at ``horizon``; a missed evidence scores 0. Answers before e − tolerance are
    premature and count as unmatched.
    """
    if not (0 <= tolerance < horizon):
        raise ValueError(f"need 0 <= tolerance < horizon, got {tolerance} and {horizon}")
    centre, half = (horizon - tolerance) / 2, (horizon + tolerance) / 2
    per_task: dict[str, dict[str, Any]] = {}
    for run in runs:
        if run.request.task not in FORWARD_TASKS or not run.evidence:
            continue
        answers = run.responses()
        pairs = match_responses([e + centre for e in run.evidence], [a.t for a in answers], half)
        stats = per_task.setdefault(run.request.task, {"evidence": 0, "answered": 0, "answers": 0, "credit": 0.0, "delays": [], "rouge_l": []})
        stats["evidence"] += len(run.evidence)
        stats["answers"] += len(answers)
        stats["answered"] += len(pairs)
        for i, j in pairs:
            delay = answers[j].t - run.evidence[i]
            stats["delays"].append(delay)
            stats["credit"] += 1.0 if delay <= tolerance else max(0.0, (horizon - delay) / (horizon - tolerance))
            if run.reference_answer:
                stats["rouge_l"].append(rouge_l(answers[j].text, run.reference_answer).f1)
    report: dict[str, Any] = {"tolerance_s": tolerance, "horizon_s": horizon, "tasks": {}}
    for task, stats in sorted(per_task.items()):
        delays = stats["delays"]
        report["tasks"][task] = {
            "evidence": stats["evidence"],
            "answered": stats["answered"],
            "answers": stats["answers"],
            "score": 100 * stats["credit"] / stats["evidence"] if stats["evidence"] else None,
            "mean_delay_s": sum(delays) / len(delays) if delays else None,
            "median_delay_s": sorted(delays)[len(delays) // 2] if delays else None,
            "answer_rouge_l": sum(stats["rouge_l"]) / len(stats["rouge_l"]) if stats["rouge_l"] else None,
        }
    scores = [entry["score"] for entry in report["tasks"].values() if entry["score"] is not None]
    report["mean"] = sum(scores) / len(scores) if scores else None
    return report


def results_as_records(results: Iterable[ProbeResult]) -> list[dict[str, Any]]:
    """Probe results as JSON-ready records (for saving a run and scoring it later)."""
    return [{**asdict(result.probe), "reply": result.reply, "error": result.error, "correct": result.correct} for result in results]


def read_replies(path: str | os.PathLike[str], items: list) -> tuple[list, list[str]]:
    """Probe results from a replies file (JSON lines ``{"id", "index", "reply"}``, as
    ``streamo ovobench --predictions-out`` writes them); a probe without a reply is wrong."""
    replies: dict[tuple[str, int], Any] = {}
    problems = []
    for number, record in enumerate(iter_records(path), start=1):
        index = record.get("index", 0) if isinstance(record, dict) else None
        reply = record.get("reply") if isinstance(record, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or not (reply is None or isinstance(reply, str)):
            problems.append(f"{path}: record {number}: expected {{id, index, reply}} with a text or null reply")
            continue
        key = (str(record.get("id")), index)
        if key in replies:
            problems.append(f"{path}: record {number}: second reply for item {key[0]} probe {index}; kept the first")
            continue
        replies[key] = reply
    results, unanswered = [], 0
    for item in items:
        for probe in item.probes:
            key = (str(probe.item_id), probe.index)
            unanswered += key not in replies
            results.append(ProbeResult(probe, replies.get(key), None if key in replies else "no reply in the predictions"))
    if unanswered:
        problems.append(f"{path}: {unanswered} probes have no reply and count as wrong")
    return results, problems
