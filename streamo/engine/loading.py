"""Loading a stream model for inference: a full checkpoint directory (``swift sft`` output,
or any Qwen2.5-VL saved by transformers) whose tokenizer holds the three state tokens."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UsageError
from ..video.sampling import MAX_PIXELS
from ..protocol import StateTokenError, state_token_ids


class ModelLoadError(UsageError, ValueError):
    """A model directory the engine cannot use; the message says why."""


def training_max_pixels(path: str | os.PathLike[str]) -> int:
    """The per-frame pixel budget the checkpoint was trained with: ``max_pixels`` of its
    ms-swift ``args.json``, else the ``MAX_PIXELS`` environment variable, else Streamo's default."""
    args_file = Path(path) / "args.json"
    try:
        recorded = json.loads(args_file.read_text(encoding="utf-8")).get("max_pixels")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, int) and recorded > 0:
        return recorded
    text = os.environ.get("MAX_PIXELS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else MAX_PIXELS


def load_stream_processor(path: str | os.PathLike[str]):
    """The checkpoint's ``AutoProcessor``, once the directory is checked to be a full
    checkpoint whose tokenizer holds the three state tokens."""
    from transformers import AutoProcessor

    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: no such model directory")
    if not (folder / "config.json").is_file():
        if (folder / "adapter_config.json").is_file():
            raise ModelLoadError(f"{folder}: a LoRA adapter; merge it first (swift export --adapters {folder} --merge_lora true)")
        raise ModelLoadError(f"{folder}: no config.json, not a model checkpoint")
    try:
        processor = AutoProcessor.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder}: cannot load the processor: {exc}") from None
    try:
        state_token_ids(processor.tokenizer)
    except StateTokenError as exc:
        raise ModelLoadError(f"{folder}: {exc}") from None
    return processor


def load_stream_model(path: str | os.PathLike[str], device: str | None = None):
    """``(model, processor)`` from a checkpoint directory, in eval mode on ``device``
    (default: CUDA when available); bf16 on GPU, fp32 on CPU."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    folder = Path(path)
    processor = load_stream_processor(folder)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    try:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder}: cannot load a Qwen2.5-VL model: {exc}") from None
    return model.to(device).eval(), processor
