"""Synthetic scenes: a few coloured shapes, a timed list of visible changes, and the questions
and answers that can be read off the pictures.

Timing convention (why the numbers look the way they do). Turn k shows the frame at k
seconds (issue 3's sampling rule) and the converter puts a moment t in turn ceil(t) − 1.
Every change therefore happens at a half second (``a + 0.5``) so that no sampled frame sits
on a boundary, and the annotations are chosen so that each label follows from the frames:

* a change at ``a + 0.5`` is first visible in turn ``a + 1``; its instant answer carries
  ``time = a + 2``, the end of that turn, which the converter maps back to turn ``a + 1``;
* a move from ``a + 0.5`` to ``b + 0.5`` is annotated with exactly those times, giving
  ``</Standby>`` in turns a..b and ``</Response>`` in turn b + 1, the first frame showing the
  shape at rest in its new place (frames a + 1..b show it smeared by motion, see
  ``render.EXPOSURE``; the converter's first Standby turn, a, still shows the shape before it
  starts: that one turn is the converter's convention, not visible in the frame);
* a question about the present state asked at integer second q is shown and answered in turn
  q − 1; the scene does not change between that turn's frame and q.

Every shape kind appears at most once per scene and each shape keeps its own row, so "the
circle" always names one object and shapes never overlap.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import UsageError


class SynthOptionError(UsageError, ValueError):
    """A synthetic-video option out of its range (a usage error of ``streamo synth``)."""


SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (50, 100, 235),
    "yellow": (240, 215, 40),
}
COLUMNS = ("left", "centre", "right")
ROWS = 3
NUMBERS = ("no", "one", "two", "three", "four")

TASK_TYPES = ("QA", "Grounding", "Narration", "MultiQA")
"""Instant QA, event grounding with Standby spans, narration with several responses, several
questions in one stream: each scene yields one raw sample of each (more Grounding ones on request)."""

SOURCE = "streamo-synth"
MIN_DURATION, MAX_DURATION = 20, 40
DEFAULT_DURATION = (MIN_DURATION, MAX_DURATION)
"""Whole seconds a scene lasts (drawn uniformly from this range). Longer ranges give the
clips of realistic length that training at full size is measured on (minutes, several
windows of ``--max_length`` each)."""
SHORTEST_DURATION = 10
"""A shorter clip leaves no room for a move after ``FIRST_CHANGE`` and before ``END_MARGIN``."""
FIRST_CHANGE = 3.5
"""Frames 0..3 are fixed, so a question asked at second 1 is answered from a still scene."""
END_MARGIN = 2.5
"""The last change ends this long before the end so that its answer turn exists."""
DEFAULT_PAUSE = (2, 4)
"""Whole seconds of stillness between one change's end and the next change's start (drawn
uniformly from this range). Longer, more varied pauses make *when* the next change comes hard
to guess without looking, which is what a training set that must teach looking needs."""
MIN_PAUSE = 2
"""A shorter pause would put a move's first Standby turn on the previous change's answer turn."""

ChangeKind = Literal["appear", "disappear", "recolour", "move"]


@dataclass
class Shape:
    kind: str
    row: int
    colour: str
    column: int
    appears: float = 0.0
    disappears: float | None = None


@dataclass(frozen=True)
class Change:
    """One visible change, from ``start`` to ``end`` (equal for instant changes)."""

    kind: ChangeKind
    shape: int
    start: float
    end: float
    before: str | int | None = None
    after: str | int | None = None


@dataclass(frozen=True)
class ShapeState:
    kind: str
    colour: str
    x: float
    """Horizontal position in columns (0 = left, 2 = right); fractional while moving."""
    row: int


@dataclass
class Scene:
    duration: int
    shapes: list[Shape]
    changes: list[Change] = field(default_factory=list)

    def state_at(self, t: float) -> list[ShapeState]:
        """The shapes visible at time ``t``, in shape order."""
        visible = []
        for index, shape in enumerate(self.shapes):
            if t < shape.appears or (shape.disappears is not None and t >= shape.disappears):
                continue
            colour, x = shape.colour, float(shape.column)
            for change in self.changes:
                if change.shape != index or change.start > t:
                    continue
                if change.kind == "recolour":
                    colour = str(change.after)
                elif change.kind == "move":
                    before, after = float(change.before), float(change.after)  # type: ignore[arg-type]
                    progress = min((t - change.start) / (change.end - change.start), 1.0)
                    x = before + (after - before) * progress
            visible.append(ShapeState(shape.kind, colour, x, shape.row))
        return visible

    def moving_between(self, start: float, end: float) -> bool:
        """True when a shape is in motion at some moment of ``(start, end)``."""
        return any(c.kind == "move" and c.start < end and c.end > start for c in self.changes)

    def stable_around(self, second: int) -> bool:
        """True when nothing changes near the frame of turn ``second - 1`` up to ``second``."""
        return all(c.end <= second - 2 or c.start >= second + 1 for c in self.changes)


def _place_phrase(column: int) -> str:
    return "in the centre" if COLUMNS[column] == "centre" else f"on the {COLUMNS[column]}"


def _count_phrase(count: int) -> str:
    return f"there {'is' if count == 1 else 'are'} now {NUMBERS[count]} shape{'' if count == 1 else 's'}"


def _build_scene(rng: random.Random, pause: tuple[int, int], duration_range: tuple[int, int]) -> Scene:
    duration = rng.randint(*duration_range)
    count = rng.randint(2, 3)
    kinds = rng.sample(SHAPES, count)
    rows = rng.sample(range(ROWS), count)
    shapes = [Shape(kind, row, rng.choice(list(COLOURS)), rng.randrange(len(COLUMNS))) for kind, row in zip(kinds, rows)]
    late = [index for index in range(1, count) if rng.random() < 0.5]
    for index in late:
        shapes[index].appears = float("inf")
    scene = Scene(duration, shapes)

    cursor = FIRST_CHANGE
    if pause != DEFAULT_PAUSE:  # the standard scenes keep their draws, hence their videos
        cursor += rng.randint(0, pause[1] - pause[0])
    while True:
        visible = [i for i, s in enumerate(shapes) if s.appears <= cursor and s.disappears is None]
        waiting = [i for i in late if shapes[i].appears == float("inf")]
        options: list[ChangeKind] = ["move", "move", "recolour"]
        if waiting:
            options.append("appear")
        if len(visible) > 1:
            options.append("disappear")
        kind = rng.choice(options)
        length = rng.randint(2, 4) if kind == "move" else 0
        if cursor + length > duration - END_MARGIN:
            break
        if kind == "appear":
            index = rng.choice(waiting)
            shapes[index].appears = cursor
            change = Change("appear", index, cursor, cursor, after=shapes[index].colour)
        elif kind == "disappear":
            index = rng.choice(visible)
            shapes[index].disappears = cursor
            change = Change("disappear", index, cursor, cursor)
        elif kind == "recolour":
            index = rng.choice(visible)
            current = scene.state_at(cursor - 0.5)
            colour = next(s.colour for s in current if s.kind == shapes[index].kind)
            change = Change("recolour", index, cursor, cursor, colour, rng.choice([c for c in COLOURS if c != colour]))
        else:
            index = rng.choice(visible)
            current = scene.state_at(cursor - 0.5)
            column = round(next(s.x for s in current if s.kind == shapes[index].kind))
            change = Change("move", index, cursor, cursor + length, column, rng.choice([c for c in range(3) if c != column]))
        scene.changes.append(change)
        cursor += length + rng.randint(*pause)
    for shape in shapes:
        if shape.appears == float("inf"):  # never got its turn: simply not part of the scene
            shape.appears = float(duration)
    return scene


def make_scene(seed: int, index: int, pause: tuple[int, int] = DEFAULT_PAUSE,
               duration: tuple[int, int] = DEFAULT_DURATION) -> Scene:
    """The scene for video ``index`` of a data set generated with ``seed``; always the same one.

    Draws again until the scene has a move (event grounding needs one). ``pause`` other than
    the default also delays the first change by up to the range's width; ``duration`` is the
    range of the clip's length in whole seconds.
    """
    if not MIN_PAUSE <= pause[0] <= pause[1]:
        raise SynthOptionError(f"pause must be whole seconds {MIN_PAUSE} <= MIN <= MAX, got {pause[0]},{pause[1]}")
    if not SHORTEST_DURATION <= duration[0] <= duration[1]:
        raise SynthOptionError(f"duration must be whole seconds {SHORTEST_DURATION} <= MIN <= MAX, got {duration[0]},{duration[1]}")
    rng = random.Random(f"streamo-synth:{seed}:{index}")
    while True:
        scene = _build_scene(rng, pause, duration)
        if any(change.kind == "move" for change in scene.changes):
            return scene


# ---------------------------------------------------------------- annotations


def _instant(content: str, time: float) -> dict[str, Any]:
    return {"content": content, "st_time": "", "end_time": "", "time": time}


def _interval(content: str, start: float, end: float) -> dict[str, Any]:
    return {"content": content, "st_time": start, "end_time": end, "time": ""}


def _question(content: str, time: float) -> dict[str, Any]:
    return {"content": content, "time": time}


def _change_answer(scene: Scene, change: Change) -> dict[str, Any]:
    shape = scene.shapes[change.shape]
    if change.kind == "move":
        text = f"The {shape.kind} moved from the {COLUMNS[int(change.before)]} to the {COLUMNS[int(change.after)]}."  # type: ignore[arg-type]
        return _interval(text, change.start, change.end)
    count = len(scene.state_at(change.start))
    if change.kind == "appear":
        text = f"A {change.after} {shape.kind} appeared; {_count_phrase(count)}."
    elif change.kind == "disappear":
        text = f"The {shape.kind} disappeared; {_count_phrase(count)}."
    else:
        text = f"The {shape.kind} changed from {change.before} to {change.after}."
    return _instant(text, int(change.start + 1.5))


def _state_question(scene: Scene, second: int, rng: random.Random) -> tuple[str, str]:
    """A question about the scene at turn ``second - 1`` and its answer."""
    visible = scene.state_at(second - 1)
    kinds = ["count"] + (["colour", "position"] if visible else [])
    kind = rng.choice(kinds)
    if kind == "count":
        count = len(visible)
        noun = "shape is" if count == 1 else "shapes are"
        return "How many shapes are on the screen?", f"{NUMBERS[count].capitalize()} {noun} on the screen."
    target = rng.choice(visible)
    if kind == "colour":
        return f"What colour is the {target.kind}?", f"The {target.kind} is {target.colour}."
    return f"Where is the {target.kind}?", f"The {target.kind} is {_place_phrase(round(target.x))}."


def _moved_shapes(scene: Scene) -> list[int]:
    return sorted({c.shape for c in scene.changes if c.kind == "move"})


def _grounding_for(scene: Scene, shape: int) -> tuple[str, list[dict[str, Any]]]:
    kind = scene.shapes[shape].kind
    answers = [_change_answer(scene, c) for c in scene.changes if c.kind == "move" and c.shape == shape]
    return f"Tell me each time the {kind} finishes moving, and where it went.", answers


def _grounding_question(scene: Scene, rng: random.Random) -> tuple[str, list[dict[str, Any]]]:
    return _grounding_for(scene, rng.choice(_moved_shapes(scene)))


GROUNDING_CHOICES = ("one", "each")
"""``one``: one Grounding sample per scene, about a random moving shape. ``each``: also one for
every other shape that moves, so the same frames come with different answers depending on the
shape named -- the contrast that teaches a model to tie a word to a shape."""


def annotate(
    scene: Scene, seed: int, index: int, video_path: str, video_name: str, grounding: str = "one"
) -> list[dict[str, Any]]:
    """The raw samples (one per task type, plus the extra Grounding ones of ``grounding="each"``)
    for one scene, in the README's raw format."""
    if grounding not in GROUNDING_CHOICES:
        raise SynthOptionError(f"grounding must be one of {', '.join(GROUNDING_CHOICES)}, got {grounding!r}")
    rng = random.Random(f"streamo-synth-questions:{seed}:{index}")
    common = {"video_name": video_name, "video_path": video_path, "source": SOURCE}
    samples = []

    question, answer = _state_question(scene, 1, rng)
    samples.append({**common, "task_type": "QA", "question": [_question(question, 1)], "response": [_instant(answer, 1)]})

    asked = rng.choice(_moved_shapes(scene))
    question, answers = _grounding_for(scene, asked)
    samples.append({**common, "task_type": "Grounding", "question": [_question(question, 1)], "response": answers})

    narration = [_change_answer(scene, change) for change in scene.changes]
    samples.append(
        {
            **common,
            "task_type": "Narration",
            "question": [_question("Describe each change to the shapes as it happens.", 1)],
            "response": narration,
        }
    )

    question, answers = _grounding_question(scene, rng)
    questions, responses = [_question(question, 1)], list(answers)
    stable = [s for s in range(3, scene.duration) if scene.stable_around(s)]
    for second in sorted(rng.sample(stable, min(2, len(stable)))):
        question, answer = _state_question(scene, second, rng)
        questions.append(_question(question, second))
        responses.append(_instant(answer, second))
    samples.append({**common, "task_type": "MultiQA", "question": questions, "response": responses})

    if grounding == "each":
        for shape in _moved_shapes(scene):
            if shape != asked:
                question, answers = _grounding_for(scene, shape)
                samples.append({**common, "task_type": "Grounding", "question": [_question(question, 1)], "response": answers})

    for sample in samples:
        sample["duration"] = scene.duration
    return samples

