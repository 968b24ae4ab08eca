"""The conversation a live session holds, whatever runs the model.

Both backends (the transformers KV-cache engine and vLLM) share this bookkeeping, so a
stream reads the same tokens on either: which turn a frame and a question belong to, the
token layout of each turn (``PromptTokens``), the reply each decision writes, and the
bounded window. When the window is full, the oldest ``eviction_block`` seconds are dropped
and the retained turns are laid out as a training window: the first retained turn repeats
the questions asked before it. The transformers engine re-encodes that layout after its
cached system prompt; vLLM receives it whole and its prefix cache finds what it has read.

The window is also bounded in tokens (``max_tokens``: system prompt, retained turns, the new
turn and room for its reply): past it, the oldest turns are evicted until the context fills at
most three quarters of the budget (so evictions, each a re-read of the window, stay rare). A
question that could not fit even with no older turn kept (with the questions waiting for the
same frame, a frame at the pixel budget and a full answer) is refused when asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..protocol import (DEFAULT_SYSTEM_PROMPT, State, assistant_text, carried_questions, frame_turn, state_token_ids,
                        turn_of, window_turns)
from ..video.sampling import MAX_PIXELS, MIN_PIXELS, PATCH_FACTOR
from .decoding import AnswerDecoder, DecisionRule
from .prompt import PromptTokens


class ContextBudgetError(ValueError):
    """A question or frame that cannot fit the session's token budget even with no older turn kept."""


@dataclass
class ContextTurn:
    """One second of the conversation: its frame's place in the prompt and the reply to it."""

    index: int
    questions: list[str]
    grid: tuple[int, int]
    """Frame size in merged patches (height, width)."""
    user_ids: list[int]
    state: State = State.SILENCE
    answer: str = ""
    reply_ids: list[int] = field(default_factory=list)
    frame: Any = None
    """What the backend keeps to read this frame again (embeddings, or a picture and its id)."""


class StreamContext:
    """Turns, questions and window of one session; ``prompt_ids`` is what the model reads next."""

    def __init__(self, tokens: PromptTokens, system_prompt: str, window: float | None = None,
                 eviction_block: float | None = None, max_tokens: int | None = None, reply_tokens: int = 0,
                 max_frame_tokens: int = 0) -> None:
        if not system_prompt or not system_prompt.strip():
            raise ValueError("system_prompt must not be empty")
        self.tokens = tokens
        self.fps = tokens.fps
        self.system_prompt = system_prompt
        self.system_ids = tokens.system(system_prompt)
        self.window_turns, self.block_turns = window_turns(window, eviction_block, tokens.fps)
        self.max_tokens = max_tokens
        self.reserve = reply_tokens + len(tokens.reply(State.RESPONSE))
        """Room kept for the longest reply (state token, answer, end of message)."""
        self.max_frame_tokens = max_frame_tokens
        """Image pads of the largest frame (the pixel budget's), for checking a question before its frame comes."""
        self.turns: list[ContextTurn] = []
        """Turns in the context, oldest first (after an eviction, the retained window)."""
        self.next_turn = 0
        self._asked: list[tuple[int, str]] = []  # (turn, question) of every question shown so far
        self._waiting: list[tuple[int, str]] = []  # questions for frames not read yet
        if max_tokens is not None and self._fixed([]) > max_tokens:
            raise ContextBudgetError(f"the system prompt, one frame and an answer need {self._fixed([])} tokens; "
                                     f"the context's budget is {max_tokens}")

    def ask(self, text: str, t: float | None = None) -> int:
        """Show ``text`` with the frame of moment ``t`` (seconds; "5" means the turn <4s-5s>),
        or with the next frame when ``t`` is None or that frame was already read.
        Returns the turn that will carry the question."""
        question = text.strip() if isinstance(text, str) else ""
        if not question:
            raise ValueError("empty question")
        if t is not None and not (math.isfinite(t) and t >= 0):
            raise ValueError(f"question time must be a number of seconds >= 0, got {t!r}")
        turn = self.next_turn if t is None else max(turn_of(t, self.fps), self.next_turn)
        if self.max_tokens is not None:
            together = [waiting for at, waiting in self._waiting if at <= turn] + [question]
            need = self._fixed(together, turn)
            if need > self.max_tokens:
                raise ContextBudgetError(
                    f"with the {len(together) - 1} question(s) waiting for the same frame it needs {need} tokens "
                    f"(system prompt, frame, questions, answer); the context's budget is {self.max_tokens}")
        self._waiting.append((turn, question))
        return turn

    @property
    def waiting_questions(self) -> list[tuple[int, str]]:
        """(turn, text) of questions whose frame has not been read yet."""
        return list(self._waiting)

    def turn_at(self, t: float | None) -> int:
        """The turn of a frame at ``t`` (None: the next); frames must come in time order."""
        turn = self.next_turn if t is None else frame_turn(t, self.fps)
        if turn < self.next_turn:
            raise ValueError(f"frame at t={t} belongs to turn {turn}, but turn {self.next_turn - 1} was already read")
        return turn

    def open_turn(self, turn: int, grid: tuple[int, int], frame: Any = None) -> ContextTurn:
        """The new turn with the questions due by it (they stop waiting)."""
        questions = [question for at, question in self._waiting if at <= turn]
        self._waiting = [(at, question) for at, question in self._waiting if at > turn]
        return ContextTurn(turn, questions, grid, self.tokens.user(turn, questions, grid[0] * grid[1]), frame=frame)

    @property
    def evicts(self) -> bool:
        """Turns may be dropped (a window or a token budget): the backend keeps what re-reads them."""
        return self.window_turns is not None or self.max_tokens is not None

    def evict(self, current: ContextTurn) -> bool:
        """Make room for ``current``; True when turns were dropped (the retained window must be re-read).
        Raises ``ContextBudgetError`` (nothing dropped) when ``current`` cannot fit even alone."""
        drop = 0
        if self.window_turns is not None and len(self.turns) + 1 > self.window_turns:
            # block < window, so at least one old turn stays and opens the window.
            drop = max(self.block_turns, len(self.turns) + 1 - self.window_turns)
        if self.max_tokens is not None:
            fixed = len(self.system_ids) + len(current.user_ids) + self.reserve
            if fixed > self.max_tokens:
                raise ContextBudgetError(f"this turn needs {fixed} tokens with the system prompt and an answer; "
                                         f"the context's budget is {self.max_tokens}")
            sizes = [len(turn.user_ids) + len(turn.reply_ids) for turn in self.turns]
            after = [0] * (len(sizes) + 1)  # tokens of the turns after each one
            for position in range(len(sizes) - 1, -1, -1):
                after[position] = after[position + 1] + sizes[position]

            def size(first: int) -> int:
                if first >= len(self.turns):
                    return fixed
                turn = self.turns[first]
                opening = self.tokens.user(turn.index, self.first_questions(turn), turn.grid[0] * turn.grid[1])
                return fixed + len(opening) + len(turn.reply_ids) + after[first + 1]

            if size(drop) > self.max_tokens:
                target = fixed + (self.max_tokens - fixed) * 3 // 4
                while drop < len(self.turns) and size(drop) > target:
                    drop += 1
        if not drop:
            return False
        self.turns = self.turns[drop:]
        return True

    def retained_ids(self) -> list[int]:
        """Token ids of the turns in the context, laid out as a training window."""
        ids: list[int] = []
        for position, turn in enumerate(self.turns):
            if position == 0:
                ids += self.tokens.user(turn.index, self.first_questions(turn), turn.grid[0] * turn.grid[1])
            else:
                ids += turn.user_ids
            ids += turn.reply_ids
        return ids

    def prompt_ids(self, current: ContextTurn) -> list[int]:
        """Everything the model reads before deciding ``current``: system, retained turns, the new turn."""
        return self.system_ids + self.retained_ids() + current.user_ids

    def close(self, turn: ContextTurn, state: State, answer: str) -> None:
        """Record the decision as training writes it; the turn joins the context."""
        turn.state, turn.answer = state, answer
        turn.reply_ids = self.tokens.reply(state, answer)
        self.turns.append(turn)
        self._asked.extend((turn.index, question) for question in turn.questions)
        self.next_turn = turn.index + 1

    def _fixed(self, questions: list[str], turn: int | None = None) -> int:
        """Tokens of a context holding only one turn with ``questions``, a largest frame and a full reply."""
        user = self.tokens.user(self.next_turn if turn is None else turn, questions, self.max_frame_tokens)
        return len(self.system_ids) + len(user) + self.reserve

    def first_questions(self, turn: ContextTurn) -> list[str]:
        """The questions ``turn`` shows when it opens the window: its own after those asked before it."""
        earlier = [question for at, question in self._asked if at < turn.index]
        return carried_questions(turn.questions, earlier) + turn.questions

    def messages(self) -> list[dict[str, str]]:
        """The conversation in the context, in stream format (``<stream>`` for each frame):
        with a window, a training window whose first turn repeats earlier questions."""
        messages = [{"role": "system", "content": self.system_prompt}]
        for position, turn in enumerate(self.turns):
            questions = self.first_questions(turn) if position == 0 else turn.questions
            messages.append({"role": "user", "content": self.tokens.user_content(turn.index, questions)})
            messages.append({"role": "assistant", "content": assistant_text(turn.state, turn.answer)})
        return messages


class ContextSession:
    """What every backend's session shares: its settings, its ``StreamContext``, the decision and
    answer rules, and the accessors that only read the context. A backend's session adds the
    model work (``push_frame``, ``cache_length``, ``context_ids``); see ``backend.Session``."""

    def __init__(
        self,
        tokenizer,
        vocab_rows: int,
        fps: float = 1.0,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        window: float | None = None,
        eviction_block: float | None = None,
        decision: DecisionRule | None = None,
        max_new_tokens: int = 128,
        max_pixels: int = MAX_PIXELS,
        min_pixels: int = MIN_PIXELS,
        max_context_tokens: int | None = None,
    ) -> None:
        """``tokenizer`` holds the three state tokens; ``vocab_rows``: rows of the model's output layer."""
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.tokenizer = tokenizer
        self.fps = fps
        self.system_prompt = system_prompt
        self.decision = decision or DecisionRule()
        self.max_pixels, self.min_pixels = max_pixels, min_pixels
        self.tokens = PromptTokens(tokenizer, fps)
        self.context = StreamContext(self.tokens, system_prompt, window, eviction_block, max_context_tokens,
                                     max_new_tokens, max_pixels // PATCH_FACTOR ** 2)
        self.state_ids = state_token_ids(tokenizer)
        self.decoder = AnswerDecoder(tokenizer, vocab_rows, max_new_tokens)

    def ask(self, text: str, t: float | None = None) -> int:
        """Show ``text`` with the frame of moment ``t`` (seconds; "5" means the turn <4s-5s>),
        or with the next frame when ``t`` is None or that frame was already pushed.
        Returns the turn that will carry the question."""
        return self.context.ask(text, t)

    @property
    def waiting_questions(self) -> list[tuple[int, str]]:
        """(turn, text) of questions whose frame has not been pushed yet."""
        return self.context.waiting_questions

    def context_messages(self) -> list[dict[str, str]]:
        """The conversation in the context, in stream format (``<stream>`` for each frame):
        with a window, a training window whose first turn repeats earlier questions."""
        return self.context.messages()

