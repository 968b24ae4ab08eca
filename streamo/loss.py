"""The ``stream_focal`` loss: focal, class-balanced cross-entropy on the three state tokens.

Silence dominates stream data (most seconds nothing happens), so plain cross-entropy
learns to stay silent and rarely answers. Each supervised token whose target is a state
token gets the focal weight ``alpha[state] * (1 - p_t) ** gamma``; every other supervised
token (answer text, end-of-turn) keeps plain cross-entropy. ``p_t = exp(-CE)`` is read
off the cross-entropy itself, so no second softmax over the vocabulary is needed.

Memory: the logits of a long stream are huge (8192 x 151,936 is 2.5 GB in bf16) but only
a few per cent of positions are supervised. The loss gathers those rows only and works
through them in chunks, in fp32 one chunk at a time; the gradient is computed during the
forward pass (the loss of a row depends on its cross-entropy only), so no fp32 copy of the
vocabulary-wide tensors is kept for backward.

This module is pure torch; ``streamo.swift_plugin.loss`` adapts it to ms-swift.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from typing import Iterable, Mapping, Sequence

import torch

from .protocol import State, parse_assistant

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
STATE_ORDER: tuple[State, ...] = (State.SILENCE, State.STANDBY, State.RESPONSE)
"""Order of the per-state vectors (token ids, alpha, counts) used throughout this module."""

DEFAULT_GAMMA = 2.0
DEFAULT_ALPHA_POWER = 1.0
CHUNK_ELEMENTS = 1 << 26
"""Logit elements turned into fp32 at a time: 256 MB per fp32 buffer."""


def _counts_vector(counts: Mapping[State | str, float] | Sequence[float]) -> list[float]:
    if isinstance(counts, Mapping):
        by_state: dict[State, float] = {}
        for key, value in counts.items():
            state = key if isinstance(key, State) else State(str(key).lower())
            by_state[state] = by_state.get(state, 0.0) + float(value)
        values = [by_state.get(state, 0.0) for state in STATE_ORDER]
    else:
        values = [float(value) for value in counts]
    if len(values) != len(STATE_ORDER) or any(v < 0 or not math.isfinite(v) for v in values):
        raise ValueError(f"state counts must be three finite non-negative numbers, got {counts!r}")
    return values


def state_alpha_from_counts(
    counts: Mapping[State | str, float] | Sequence[float], power: float = DEFAULT_ALPHA_POWER
) -> tuple[float, float, float]:
    """Class-balancing alpha (Silence, Standby, Response) from state frequencies.

    ``alpha_c = N * n_c**-power / sum_k n_k**(1 - power)`` over the states present, where
    ``n_c`` is the count of state ``c`` and ``N`` the total. ``power=1`` is inverse
    frequency (every state carries the same total weight), ``power=0`` is no balancing,
    values between temper it. The normalisation keeps the mean weight of a state token
    over the dataset at 1, so the loss stays on the scale of cross-entropy. A state that
    never occurs gets 1 (it has no tokens to weigh).
    """
    if power < 0 or not math.isfinite(power):
        raise ValueError(f"alpha power must be a finite number >= 0, got {power}")
    values = _counts_vector(counts)
    present = [n for n in values if n > 0]
    if not present:
        return (1.0, 1.0, 1.0)
    total = sum(present)
    norm = sum(n ** (1.0 - power) for n in present)
    alpha = tuple(total * n**-power / norm if n > 0 else 1.0 for n in values)
    return alpha  # type: ignore[return-value]


def count_states_in_messages(messages: Iterable[Mapping[str, object]]) -> Counter:
    """Count the state each assistant turn starts with (turns without a state are skipped)."""
    counts: Counter = Counter()
    for message in messages:
        if message.get("role") != "assistant" or not isinstance(message.get("content"), str):
            continue
        state, _ = parse_assistant(message["content"])  # type: ignore[arg-type]
        if state is not None:
            counts[state] += 1
    return counts


def state_alpha_from_files(
    paths: Iterable[str | os.PathLike[str]], power: float = DEFAULT_ALPHA_POWER
) -> tuple[float, float, float]:
    """Alpha from a pre-pass over stream files (JSON or JSONL), counted by ``stream_stats``."""
    from .stats import stream_stats

    counts: Counter = Counter()
    for path in paths:
        stats = stream_stats(path)
        if stats.invalid:
            logger.warning(
                "%s: %d invalid samples left out of the state counts; first: %s",
                path,
                stats.invalid,
                stats.problems[0],
            )
        counts.update(stats.states)
    if not counts:
        raise ValueError(f"no state tokens found in {[os.fspath(p) for p in paths]}")
    return state_alpha_from_counts(counts, power)


class RunningStateAlpha:
    """Alpha from the state counts seen so far, for when no dataset pre-pass is possible.

    Counts accumulate over the whole run (not a window), so alpha converges to the dataset
    value; ``prior`` pseudo-counts per state keep the first steps from extreme weights.
    """

    def __init__(self, power: float = DEFAULT_ALPHA_POWER, prior: float = 1.0) -> None:
        if prior < 0:
            raise ValueError(f"prior must be >= 0, got {prior}")
        state_alpha_from_counts((0, 0, 0), power)  # validates power
        self.power = power
        self.counts = [float(prior)] * len(STATE_ORDER)

    def update(self, batch_counts: Sequence[float] | torch.Tensor) -> tuple[float, float, float]:
        """Add one batch's counts (Silence, Standby, Response) and return the new alpha."""
        values = batch_counts.tolist() if isinstance(batch_counts, torch.Tensor) else list(batch_counts)
        for index, value in enumerate(_counts_vector(values)):
            self.counts[index] += value
        return self.alpha()

    def alpha(self) -> tuple[float, float, float]:
        return state_alpha_from_counts(self.counts, self.power)


def shift_left(values: torch.Tensor, fill: float | int = IGNORE_INDEX) -> torch.Tensor:
    """Align a per-token tensor with the logits: position t gets ``values[t + 1]``.

    Labels shifted this way are the targets; the last position of each row predicts nothing
    (``fill``). In a packed (padding-free) row the last token of one sample would predict the
    first label of the next, which is harmless because every encoded sample's first label is
    ``IGNORE_INDEX`` (ms-swift sets it so).
    """
    shifted = torch.full_like(values, fill)
    shifted[..., :-1] = values[..., 1:]
    return shifted


def state_counts(labels: torch.Tensor, state_token_ids: Sequence[int]) -> torch.Tensor:
    """How many supervised labels are each state token (Silence, Standby, Response)."""
    ids = torch.as_tensor(list(state_token_ids), device=labels.device)
    return (labels.reshape(-1, 1) == ids).sum(0)


def _focal_terms(ce: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 - p)**gamma * ce`` and its derivative in ``ce``, with ``p = exp(-ce)``.

    With ``q = 1 - p``: d/dce [q**g * ce] = q**g * (1 + g * p * ce / q). ``ce / q`` tends to 1
    as ce -> 0 and is evaluated in that form so that gamma < 1 stays finite.
    """
    q = -torch.expm1(-ce)
    p = 1.0 - q
    ratio = torch.where(q > 0, ce / q.clamp_min(torch.finfo(ce.dtype).tiny), torch.ones_like(ce))
    modulation = torch.where(gamma > 0, q.pow(gamma), torch.ones_like(q))
    value = modulation * ce
    derivative = modulation * (1.0 + gamma * p * ratio)
    return value, derivative


class _WeightedFocalCE(torch.autograd.Function):
    """Sum over selected rows of ``weight * (1 - p)**gamma * CE``, with the gradient made in forward.

    Two layouts of the stored gradient. When the selected rows are one contiguous block
    covering at least half of the logits (ms-swift's ``logits_to_keep`` leaves only the
    supervised rows, so this is the usual case), the gradient is written straight into a
    logits-shaped tensor and the rows are read as a view: no gather and no scatter. Otherwise
    (full logits with few supervised rows) only the selected rows' gradient is kept and
    scattered into zeros in backward.
    """

    @staticmethod
    def forward(ctx, logits, rows, targets, weights, gammas, chunk_rows):  # type: ignore[override]
        vocab = logits.shape[-1]
        count = rows.numel()
        need_grad = ctx.needs_input_grad[0]
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)
        total = torch.zeros((), dtype=compute_dtype, device=logits.device)
        first, last = rows[[0, -1]].tolist() if count else (0, -1)
        dense = count > 0 and last - first + 1 == count and 2 * count >= logits.shape[0]
        grad_logits = grad_rows = None
        if need_grad and dense:
            grad_logits = logits.new_empty(logits.shape)
            grad_logits[:first].zero_()
            grad_logits[first + count :].zero_()
            grad_rows = grad_logits[first : first + count]
        elif need_grad:
            grad_rows = torch.empty((count, vocab), dtype=logits.dtype, device=logits.device)
        for start in range(0, count, chunk_rows):
            stop = min(start + chunk_rows, count)
            # Advanced indexing, not index_select: the latter is many times slower for bf16 on CPU.
            source = logits[first + start : first + stop] if dense else logits[rows[start:stop]]
            log_probs = torch.log_softmax(source.to(compute_dtype), dim=-1)
            target = targets[start:stop]
            ce = -log_probs.gather(1, target[:, None]).squeeze(1)
            value, derivative = _focal_terms(ce, gammas[start:stop].to(compute_dtype))
            weight = weights[start:stop].to(compute_dtype)
            total += (weight * value).sum()
            if need_grad:
                # d CE / d logits = softmax - onehot, made in place in the fp32 chunk.
                grad = log_probs.exp_()
                grad[torch.arange(stop - start, device=grad.device), target] -= 1.0
                grad.mul_((weight * derivative)[:, None])
                grad_rows[start:stop] = grad
            del log_probs
        ctx.save_for_backward(rows, grad_logits if dense else grad_rows)
        ctx.dense = dense
        ctx.shape = logits.shape
        ctx.chunk_rows = chunk_rows
        return total

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        rows, grad = ctx.saved_tensors
        if ctx.dense:
            return grad * grad_output.to(grad.dtype), None, None, None, None, None
        grad_rows = grad
        grad_logits = grad_rows.new_zeros(ctx.shape)
        scale = grad_output.to(grad_rows.dtype)
        # Scaled chunk by chunk so that no second full copy of the stored gradient exists.
        for start in range(0, rows.numel(), ctx.chunk_rows):
            stop = start + ctx.chunk_rows
            grad_logits.index_copy_(0, rows[start:stop], grad_rows[start:stop] * scale)
        return grad_logits, None, None, None, None, None


def stream_focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    state_token_ids: Sequence[int],
    alpha: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0),
    gamma: float = DEFAULT_GAMMA,
    *,
    num_items_in_batch: int | torch.Tensor | None = None,
    token_scale: torch.Tensor | None = None,
    labels_shifted: bool = False,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Mean focal/CE loss per supervised token, as ms-swift and transformers expect it.

    ``logits`` is ``[..., T, V]`` in any float dtype; ``labels`` is ``[..., T]`` with
    ``IGNORE_INDEX`` on unsupervised positions, unshifted (position t's label is the token
    at t, predicted by the logits at t - 1) unless ``labels_shifted``. Padding-free batches
    are one packed row and need nothing special. ``state_token_ids`` and ``alpha`` are in
    ``STATE_ORDER``. ``token_scale`` (aligned with ``labels``) multiplies each token's loss.

    The summed loss is divided by ``num_items_in_batch`` (the number of supervised tokens in
    the whole gradient-accumulation step, across devices, as the trainer passes it) or, when
    that is None, by this batch's supervised tokens. Dividing by a token count, not by a sum
    of weights, is what makes accumulated micro-batches give exactly the big batch's gradient.
    """
    if len(state_token_ids) != len(STATE_ORDER) or len(set(int(i) for i in state_token_ids)) != len(STATE_ORDER):
        raise ValueError(f"need three distinct state token ids, got {list(state_token_ids)}")
    if gamma < 0 or not math.isfinite(gamma):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma}")
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    targets = labels if labels_shifted else shift_left(labels)
    flat_targets = targets.reshape(-1).to(logits.device)
    rows = (flat_targets != IGNORE_INDEX).nonzero().squeeze(1)
    row_targets = flat_targets.index_select(0, rows)

    state_ids = torch.as_tensor([int(i) for i in state_token_ids], device=logits.device)
    alpha_vector = torch.as_tensor(alpha, dtype=torch.float32, device=logits.device).reshape(-1)
    if alpha_vector.numel() != len(STATE_ORDER):
        raise ValueError(f"alpha needs one value per state, got {alpha_vector.tolist()}")
    is_state = row_targets[:, None] == state_ids
    on_state = is_state.any(1)
    state_alpha = (is_state.float() * alpha_vector).sum(1)
    weights = torch.where(on_state, state_alpha, torch.ones_like(state_alpha))
    gammas = on_state.float() * gamma
    if token_scale is not None:
        scale = token_scale if labels_shifted else shift_left(token_scale, 0)
        weights = weights * scale.reshape(-1).to(logits.device).index_select(0, rows).float()

    flat_logits = logits.reshape(-1, logits.shape[-1])
    chunk_rows = max(1, chunk_elements // max(1, logits.shape[-1]))
    total = _WeightedFocalCE.apply(flat_logits, rows, row_targets, weights, gammas, chunk_rows)
    if num_items_in_batch is None:
        num_items_in_batch = max(rows.numel(), 1)
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch

