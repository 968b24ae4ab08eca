"""Many live sessions, one model: every session's work runs in model threads, fairly.

Each session has a FIFO of work (its start, questions, frames, markers) so a question lands
between the frames it was asked between. The model threads serve the sessions round-robin,
one item each in turn, so a flooding session cannot starve a quiet one; a session has at
most one item in progress, so its items run in order. The backend says how many threads
(``Engine.model_threads``): the transformers engine runs in one (its sessions share one model
and one device stream); vLLM gets one per session, so that every session's next request can
be in its batch at once. Only frames are bounded: when ``max_queue`` frames wait, the oldest
waiting frame is dropped and counted, and the next decided frame reports the count. Frames keep their absolute times, so a
dropped second leaves a gap in turn numbers, as the engine allows.

Results go back through each session's ``deliver`` callback, called in the model thread
(the server turns it into a thread-safe hand-over to its event loop). Nothing here knows of
sockets or HTTP; the engine session is any ``engine.backend.Session``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..engine.backend import Session
from ..engine.context import ContextBudgetError
from ..engine.decoding import DecisionRule

log = logging.getLogger("streamo.live")


@dataclass
class Decided:
    """One frame's decision, with what the session's queue looked like after it."""

    event: Any
    """The engine's ``StreamEvent``."""
    wait_ms: float
    waiting: int
    dropped: int
    """Frames dropped since the previous decision."""
    forced: bool = False
    """Decided as Response because the client asked for an answer (``force``)."""


@dataclass
class Failed:
    """The model raised on one item of a session's work; the session goes on."""

    code: str
    """``context_full`` when the item cannot fit the context's token budget, else ``internal``."""
    message: str
    frame: bool
    """Whether the item was a frame (it gets no decision and counts as dropped)."""
    questions: int
    """Questions the item took out of waiting (or never let in) that no event will show."""
    forced: bool = False
    """The frame had taken a ``force``: the answer asked for will not come."""


@dataclass
class _Push:
    image: Any
    t: float
    received: float


@dataclass
class _Ask:
    text: str
    t: float | None


@dataclass
class _Marker:
    payload: Any
    """Delivered as is once every earlier item of the session is done."""


@dataclass
class _Session:
    id: str
    deliver: Callable[[Any], None]
    decision: DecisionRule
    work: deque = field(default_factory=deque)
    frames_waiting: int = 0
    dropped_since_event: int = 0
    engine: Session | None = None
    removed: bool = False
    busy: bool = False
    """An item of this session is being executed."""
    forced: bool = False
    """The next frame the model reads answers, whatever its state would have been."""


class Scheduler:
    """Runs the sessions opened on it with ``open_engine()`` engine sessions, in ``threads`` model threads."""

    def __init__(self, open_engine: Callable[[], Session], max_queue: int, threads: int = 1) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._open_engine = open_engine
        self.max_queue = max_queue
        self._cond = threading.Condition()
        self._sessions: dict[str, _Session] = {}
        self._ring: list[str] = []
        self._turn = 0
        self._stopping = False
        self._threads = [threading.Thread(target=self._run, name=f"streamo-model-{n}", daemon=True) for n in range(threads)]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------ event-loop side

    def open(self, session_id: str, deliver: Callable[[Any], None], decision: DecisionRule) -> None:
        """Register a session; its engine session is created in the model thread before its first item."""
        with self._cond:
            if session_id in self._sessions:
                raise ValueError(f"session {session_id} is already open")
            self._sessions[session_id] = _Session(session_id, deliver, decision)
            self._ring.append(session_id)

    def remove(self, session_id: str) -> None:
        """Forget a session at once: its waiting work is dropped and its engine (with its KV cache)
        is released as soon as the model thread is not using it."""
        with self._cond:
            session = self._sessions.pop(session_id, None)
            if session is None:
                return
            self._ring.remove(session_id)
            session.removed = True
            session.work.clear()
            session.engine = None

    def submit_frame(self, session_id: str, image: Any, t: float) -> int:
        """Queue a frame (a PIL image at time ``t``); returns how many waiting frames this dropped."""
        with self._cond:
            session = self._sessions[session_id]
            dropped = 0
            while session.frames_waiting >= self.max_queue:
                for position, item in enumerate(session.work):
                    if isinstance(item, _Push):
                        del session.work[position]
                        break
                session.frames_waiting -= 1
                dropped += 1
            session.work.append(_Push(image, t, time.perf_counter()))
            session.frames_waiting += 1
            session.dropped_since_event += dropped
            self._cond.notify()
        return dropped

    def drop_unread(self, session_id: str) -> None:
        """Count a frame the server dropped before reading it; the next decided frame reports it."""
        with self._cond:
            self._sessions[session_id].dropped_since_event += 1

    def frames_waiting(self, session_id: str) -> int:
        with self._cond:
            return self._sessions[session_id].frames_waiting

    def submit_ask(self, session_id: str, text: str, t: float | None) -> None:
        self._submit(session_id, _Ask(text, t))

    def submit_marker(self, session_id: str, payload: Any) -> None:
        """``payload`` is delivered once everything submitted before it is done."""
        self._submit(session_id, _Marker(payload))

    def configure(self, session_id: str, decision: DecisionRule) -> None:
        """The rule applies from the next frame the model reads, queued ones included."""
        with self._cond:
            self._sessions[session_id].decision = decision

    def force(self, session_id: str) -> None:
        """The next frame the model reads (a queued one included) is decided as Response."""
        with self._cond:
            self._sessions[session_id].forced = True

    def unforce(self, session_id: str) -> bool:
        """Take back ``force``; False when a frame has already taken it."""
        with self._cond:
            session = self._sessions[session_id]
            forced, session.forced = session.forced, False
            return forced

    @property
    def open_sessions(self) -> int:
        with self._cond:
            return len(self._sessions)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _submit(self, session_id: str, item: Any) -> None:
        with self._cond:
            self._sessions[session_id].work.append(item)
            self._cond.notify()

    # ------------------------------------------------------------ model thread

    def _next(self) -> tuple[_Session, Any] | None:
        count = len(self._ring)
        for step in range(count):
            position = (self._turn + step) % count
            session = self._sessions[self._ring[position]]
            if session.work and not session.busy:
                self._turn = position + 1
                session.busy = True
                item = session.work.popleft()
                if isinstance(item, _Push):
                    session.frames_waiting -= 1
                return session, item
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                picked = None
                while not self._stopping and (picked := self._next()) is None:
                    self._cond.wait()
                if self._stopping:
                    return
                session, item = picked
                engine, decision, forced = session.engine, session.decision, False
                if isinstance(item, _Push) and session.forced:
                    # A threshold of 0 on P(Response) always answers; the bias still shapes the probabilities.
                    decision, forced, session.forced = DecisionRule(decision.bias, response_threshold=0.0), True, False
            result, waiting = None, int(isinstance(item, _Ask))
            try:
                if engine is None:
                    engine = self._open_engine()
                    with self._cond:
                        if not session.removed:
                            session.engine = engine
                waiting += len(engine.waiting_questions)
                result = self._execute(session, engine, decision, item, forced)
            except ContextBudgetError as exc:
                result = Failed("context_full", str(exc), isinstance(item, _Push), _lost(engine, waiting), forced)
            except Exception as exc:  # the model thread must outlive any one frame
                log.exception("session %s: the model failed", session.id)
                result = Failed("internal", f"{type(exc).__name__}: {exc}", isinstance(item, _Push),
                                _lost(engine, waiting), forced)
            if isinstance(result, Failed) and result.frame:
                with self._cond:  # undecided, so counted with the dropped: every frame is decided or dropped
                    session.dropped_since_event += 1
            del engine
            if result is not None and not session.removed:
                session.deliver(result)
            with self._cond:
                session.busy = False
                if session.work:
                    self._cond.notify()

    def _execute(self, session: _Session, engine: Any, decision: DecisionRule, item: Any, forced: bool) -> Any:
        if isinstance(item, _Ask):
            engine.ask(item.text, item.t)
            return None
        if isinstance(item, _Marker):
            return item.payload
        engine.decision = decision
        started = time.perf_counter()
        event = engine.push_frame(item.image, item.t)
        with self._cond:
            dropped, session.dropped_since_event = session.dropped_since_event, 0
            waiting = session.frames_waiting
        return Decided(event, (started - item.received) * 1000, waiting, dropped, forced)



def _lost(engine: Any, expected: int) -> int:
    """Questions a failed item should have left waiting (or shown) but did not."""
    if engine is None:
        return expected
    try:
        return max(0, expected - len(engine.waiting_questions))
    except Exception:  # an engine too broken to say: its questions are gone
        return expected
