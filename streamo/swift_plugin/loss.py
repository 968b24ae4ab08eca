"""ms-swift adapter of the ``stream_focal`` loss (``--loss_type stream_focal``).

What ms-swift 4.6 hands a ``loss_map`` loss (``Seq2SeqTrainer.compute_loss``): the model
outputs with ``logits`` ``[B, T, V]`` (bf16 on GPU) and ``labels`` ``[B, T]`` *unshifted*
(the trainer's own loss rolls them by one); padding-free batches are one packed row whose
samples each start with an ignored label; with ``logits_to_keep`` the logits and labels are
both cut to the kept positions with the same alignment. ``num_items_in_batch`` is the
supervised-token count of the whole gradient-accumulation step (summed over devices when
``average_tokens_across_devices``; the trainer rescales by the number of processes itself).
A non-binary ``loss_scale`` arrives rolled and flattened.

Settings come from environment variables, which ``swift sft --model_kwargs '{...}'`` also
sets (and records in the checkpoint's args.json), because ms-swift has no loss arguments:

* ``STREAMO_FOCAL_GAMMA``: focal exponent for the state tokens (default 2).
* ``STREAMO_FOCAL_ALPHA``: ``dataset`` (default: count the states of the training dataset
  once, before the first step), ``running`` (running count over the optimizer steps before
  this one), ``uniform`` (no balancing) or three numbers ``silence,standby,response``.
* ``STREAMO_FOCAL_ALPHA_POWER``: 1 = inverse frequency (default), 0.5 = its square root.

Both counts are global, so the loss does not change with the number of ranks or with how a
step's batch is split into accumulated micro-batches: every rank holds the whole training
dataset (ms-swift shards only the sampler), and the running counts are all-reduced over the
ranks and folded in only when an optimizer step is complete, so every micro-batch of a step,
on every rank, is weighted with the same alpha.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

import orjson
import torch
import torch.distributed as dist
from swift.loss import BaseLoss, loss_map
from swift.utils import get_logger

from streamo.loss import (
    DEFAULT_ALPHA_POWER,
    DEFAULT_GAMMA,
    STATE_ORDER,
    RunningStateAlpha,
    count_states_in_messages,
    state_alpha_from_counts,
    state_counts,
    stream_focal_loss,
)
from streamo.protocol import STATE_TOKENS, state_token_ids

logger = get_logger()

LOSS_NAME = "stream_focal"
GAMMA_ENV = "STREAMO_FOCAL_GAMMA"
ALPHA_ENV = "STREAMO_FOCAL_ALPHA"
ALPHA_POWER_ENV = "STREAMO_FOCAL_ALPHA_POWER"
ALPHA_SOURCES = ("dataset", "running", "uniform")


@dataclass(frozen=True)
class FocalSettings:
    gamma: float = DEFAULT_GAMMA
    alpha_source: str = "dataset"
    """One of ``ALPHA_SOURCES``, or ``fixed`` when ``alpha`` was given as numbers."""
    alpha: tuple[float, float, float] = (1.0, 1.0, 1.0)
    alpha_power: float = DEFAULT_ALPHA_POWER

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "FocalSettings":
        """Read the settings; a malformed value is an error naming its variable."""
        environ = os.environ if environ is None else environ
        gamma = _non_negative(environ, GAMMA_ENV, DEFAULT_GAMMA)
        power = _non_negative(environ, ALPHA_POWER_ENV, DEFAULT_ALPHA_POWER)
        raw = environ.get(ALPHA_ENV, "dataset").strip().lower()
        if raw in ALPHA_SOURCES:
            return cls(gamma=gamma, alpha_source=raw, alpha_power=power)
        try:
            alpha = tuple(float(part) for part in raw.split(","))
        except ValueError:
            alpha = ()
        if len(alpha) != len(STATE_ORDER) or not all(value > 0 for value in alpha):
            raise ValueError(
                f"{ALPHA_ENV}={raw!r}: expected one of {', '.join(ALPHA_SOURCES)} "
                "or three positive numbers silence,standby,response"
            )
        return cls(gamma=gamma, alpha_source="fixed", alpha=alpha, alpha_power=power)  # type: ignore[arg-type]


def _non_negative(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name}={raw!r}: expected a finite number >= 0")
    return value


def _rows_dataset(dataset: Any) -> Any:
    """The map-style Hugging Face dataset under ms-swift's wrappers (lazy encoding, packing)."""
    seen: set[int] = set()
    while dataset is not None and id(dataset) not in seen:
        seen.add(id(dataset))
        if hasattr(dataset, "with_format") and hasattr(dataset, "__len__") and dataset.column_names:
            return dataset
        dataset = getattr(dataset, "dataset", None)
    return None


def dataset_state_counts(dataset: Any, token_ids: tuple[int, int, int]) -> Counter | None:
    """State counts of a training dataset, from its ``messages`` or its encoded ``labels``.

    Counted with Arrow compute in batches, so a dataset of hundreds of thousands of long
    conversations takes seconds. None when the dataset cannot be read this way (streaming).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = _rows_dataset(dataset)
    if rows is None:
        return None
    counts: Counter = Counter()
    if "messages" in rows.column_names:
        for batch in rows.select_columns(["messages"]).with_format("arrow").iter(batch_size=4096):
            messages = pc.list_flatten(batch.column("messages"))
            if not pa.types.is_struct(messages.type):
                # ms-swift stores each message as JSON text (the ``Json`` feature).
                decoded = (orjson.loads(item) if isinstance(item, (str, bytes)) else item for item in messages.to_pylist())
                counts.update(count_states_in_messages(decoded))
                continue
            is_assistant = pc.equal(pc.struct_field(messages, "role"), "assistant")
            content = pc.utf8_ltrim_whitespace(pc.struct_field(messages, "content"))
            for state in STATE_ORDER:
                hits = pc.and_(is_assistant, pc.starts_with(content, STATE_TOKENS[state]))
                counts[state] += pc.sum(pc.cast(hits, pa.int64())).as_py() or 0
        return counts
    if "labels" in rows.column_names:
        for batch in rows.select_columns(["labels"]).with_format("arrow").iter(batch_size=4096):
            labels = pc.list_flatten(batch.column("labels"))
            for state, token_id in zip(STATE_ORDER, token_ids):
                counts[state] += pc.sum(pc.cast(pc.equal(labels, token_id), pa.int64())).as_py() or 0
        return counts
    return None


class StreamFocalLoss(BaseLoss):
    """Focal, class-balanced CE on the state tokens; plain CE on answer text."""

    def __init__(self, args: Any, trainer: Any) -> None:
        super().__init__(args, trainer)
        template = trainer.template
        if getattr(template, "sequence_parallel_size", 1) > 1:
            raise ValueError(f"--loss_type {LOSS_NAME} does not support sequence parallelism")
        self.settings = FocalSettings.from_env()
        self.state_token_ids = tuple(state_token_ids(template.tokenizer).values())
        self.running: RunningStateAlpha | None = None
        self.alpha: tuple[float, float, float] | None = None
        self._pending: torch.Tensor | None = None
        """State counts of the optimizer step in progress (all ranks), folded in when it ends."""
        self._pending_step: int | None = None
        if self.settings.alpha_source == "fixed":
            self.alpha = self.settings.alpha
        elif self.settings.alpha_source == "uniform":
            self.alpha = (1.0, 1.0, 1.0)
        elif self.settings.alpha_source == "running":
            self.running = RunningStateAlpha(self.settings.alpha_power)
        logger.info(
            f"{LOSS_NAME}: gamma={self.settings.gamma}, alpha source={self.settings.alpha_source}, "
            f"state token ids={self.state_token_ids}"
        )

    def _alpha_from_dataset(self) -> None:
        """Count the training dataset's states once (the dataset exists only after __init__)."""
        counts = dataset_state_counts(getattr(self.trainer, "train_dataset", None), self.state_token_ids)
        if counts is None or not sum(counts.values()):
            logger.warning(
                f"{LOSS_NAME}: the training dataset's states cannot be counted in advance "
                f"(streaming or no state tokens); falling back to {ALPHA_ENV}=running"
            )
            self.running = RunningStateAlpha(self.settings.alpha_power)
            return
        self.alpha = state_alpha_from_counts(counts, self.settings.alpha_power)
        shown = {state.value: counts[state] for state in STATE_ORDER}
        logger.info(f"{LOSS_NAME}: dataset state counts {shown} -> alpha {tuple(round(a, 4) for a in self.alpha)}")

    def _current_alpha(self, labels: torch.Tensor) -> tuple[float, float, float]:
        if self.alpha is None and self.running is None:
            self._alpha_from_dataset()
        if self.running is None:
            return self.alpha  # type: ignore[return-value]
        if self.trainer.model.training:
            step = self.trainer.state.global_step
            if step != self._pending_step:
                if self._pending is not None:
                    self.running.update(self._pending)
                self._pending, self._pending_step = None, step
            counts = state_counts(labels, self.state_token_ids)
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(counts)
            self._pending = counts if self._pending is None else self._pending + counts
        return self.running.alpha()

    def __call__(self, outputs, labels, *, num_items_in_batch=None, loss_scale=None, **kwargs) -> torch.Tensor:
        logits = outputs.logits
        if logits is None:
            raise ValueError(f"--loss_type {LOSS_NAME} needs the model's logits (a fused CE kernel dropped them)")
        if loss_scale is not None:
            # The trainer rolled and flattened it; undo that to align it with the labels.
            loss_scale = torch.roll(loss_scale.reshape(labels.shape), shifts=1, dims=-1)
        return stream_focal_loss(
            logits,
            labels,
            self.state_token_ids,
            self._current_alpha(labels),
            self.settings.gamma,
            num_items_in_batch=num_items_in_batch,
            token_scale=loss_scale,
        )


def register() -> None:
    """Make ``--loss_type stream_focal`` available; calling it again changes nothing."""
    loss_map[LOSS_NAME] = StreamFocalLoss
