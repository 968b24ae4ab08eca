"""A stream model on OVO-Bench: the engine plugged into ``streamo.ovobench``'s two protocols.

Forward-active tasks stream (``run_streaming``: one session per question, the model decides
when to answer); multiple-choice tasks make it answer at the probe time (``run_offline``: the
video played up to the probe, the question shown with the last frame, the answer forced there).
``ovobench`` itself stays free of the engine; torch is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .protocol import State, turn_count, turn_of

if TYPE_CHECKING:
    from .engine.model import StreamModel

FORCE_RESPONSE_BIAS = 1e4
"""Added to the Response logit on a multiple-choice probe's frame: the model must answer there."""


def _video_turns(video: str, fps: float) -> int:
    from .video import probe_duration

    return turn_count(probe_duration(video), fps)


def ovobench_stream(model: StreamModel) -> Callable:
    """``stream(request)`` for ``streamo.ovobench.run_streaming``: one session per request."""
    from .ovobench import DecidedTurn

    fps = model.settings.fps

    def stream(request) -> list:
        turns = min(_video_turns(request.video, fps), turn_of(request.until, fps) + 1)
        if turn_of(request.ask_time, fps) >= turns:
            raise ValueError(f"{request.video}: question at {request.ask_time:g} s is after the video's end")
        session = model.session()
        session.ask(request.question, request.ask_time)
        events = []
        for turn, image in model.frames(request.video, turns):
            event = session.push_frame(image, turn / fps)
            events.append(DecidedTurn(event.t, event.state, event.text))
        return events

    return stream


def ovobench_answer(model: StreamModel) -> Callable:
    """``answer(probe)`` for ``streamo.ovobench.run_offline``: play the video up to the probe
    time, show the question with the last frame, and make the engine answer on that frame."""
    fps = model.settings.fps

    def answer(probe) -> str:
        last = turn_of(probe.time, fps)
        turns = _video_turns(probe.video, fps)
        if last >= turns:
            raise ValueError(f"{probe.video}: probe at {probe.time:g} s is after the video's end")
        from .engine.decoding import DecisionRule

        session, event = model.session(), None
        session.ask(probe.prompt, probe.time)
        for turn, image in model.frames(probe.video, last + 1):
            if turn == last:
                session.decision = DecisionRule(bias={State.RESPONSE: FORCE_RESPONSE_BIAS})
            event = session.push_frame(image, turn / fps)
        return event.text if event is not None else ""

    return answer


def ovobench_run(items: list, model: StreamModel, progress: bool = False) -> tuple[list, list]:
    """Forward-active items stream (the model decides when to answer); multiple-choice items
    are answered at their probe time. Returns (probe results, forward stream runs)."""
    from tqdm import tqdm

    from .ovobench import FORWARD_TASKS, run_offline, run_streaming

    forward = [item for item in items if item.task in FORWARD_TASKS]
    choice = [item for item in items if item.task not in FORWARD_TASKS]
    results, runs = run_streaming(tqdm(forward, desc="forward", unit="item", disable=not progress), ovobench_stream(model))
    results += run_offline(tqdm(choice, desc="multiple choice", unit="item", disable=not progress), ovobench_answer(model))
    return results, runs
