"""The ``stream_qwen2_5_vl`` training template, built as ``swift sft`` builds it, for comparing
what the engines read with what training encodes."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SPECIAL_TOKENS_FILE = REPO / "configs" / "special_tokens.txt"


def stream_template(model_dir: Path, max_pixels: int):
    """The template in train mode over ``model_dir``'s processor (the plugin's special tokens added)."""
    from swift.model import get_model_processor
    from swift.template import get_template

    from streamo.swift_plugin import template as template_module

    tokens = SPECIAL_TOKENS_FILE.read_text(encoding="utf-8").split()
    _, processor = get_model_processor(str(model_dir), load_model=False, new_special_tokens=tokens)
    template_module.register_stream_template()
    encoder = get_template(processor, template_type=template_module.TEMPLATE_TYPE, max_pixels=max_pixels)
    encoder.set_mode("train")
    return encoder
