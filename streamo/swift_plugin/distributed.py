"""DeepSpeed over several CPU ranks: give accelerate the collective backend it cannot find itself.

With ``--deepspeed``, transformers (5.19) asks accelerate for a DeepSpeed state without naming a
backend, and accelerate (1.x) derives one from the machine's accelerator. A machine without one
(CPU ranks over gloo, as the tests and ``PRESET=cpu-tiny`` run) gets none: DeepSpeed's
communication still starts, but accelerate records no backend and reports world size 1, so the
trainer fills DeepSpeed's ``train_batch_size`` for one rank and DeepSpeed stops with
``train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size``.

``prepare_cpu_deepspeed`` creates that state first, with the backend DeepSpeed's CPU
accelerator documents (``ccl`` when oneCCL's bindings are installed, ``gloo`` otherwise), and
asks transformers to use it (``accelerator_config.use_configured_state``, transformers' own
switch for a state made beforehand). It does nothing on a machine with an accelerator, in one
process, or without ``--deepspeed``. Plain DDP on CPU needs no code: ``train.sh`` passes
``--use_cpu true`` for it.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any


def _world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def prepare_cpu_deepspeed(arguments: Any) -> str | None:
    """Initialise accelerate's DeepSpeed state over CPU ranks for ``arguments`` (a swift
    training arguments object being set up); returns the backend used, or None when nothing
    was needed."""
    if not getattr(arguments, "deepspeed", None) or getattr(arguments, "use_cpu", False) or _world_size() < 2:
        return None
    from accelerate.utils import get_torch_accelerator_backend

    if get_torch_accelerator_backend()[0] is not None:
        return None  # a GPU (or another accelerator): accelerate names the backend itself
    from accelerate import PartialState
    from deepspeed.accelerator import get_accelerator

    backend = get_accelerator().communication_backend_name()
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend=backend, timeout=timedelta(seconds=int(getattr(arguments, "ddp_timeout", 1800))))
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    config = getattr(arguments, "accelerator_config", None)
    if isinstance(config, str):
        config = json.loads(config)
    # ms-swift's own default (dispatch_batches off) is kept; it sets it only when the value is None.
    arguments.accelerator_config = {"dispatch_batches": False, **(config or {}), "use_configured_state": True}
    return backend
