"""``streamo tiny-model``: a tiny random Qwen2.5-VL with the real Qwen2 tokenizer."""

from __future__ import annotations

from ..tiny_model import add_arguments, run

NAME = "tiny-model"
HELP = "build a tiny random Qwen2.5-VL with the real Qwen2 tokenizer (CPU smoke runs, tests)"
DESCRIPTION = "Build a tiny random Qwen2.5-VL with the real Qwen2 tokenizer (seeded; reused when complete)."
__all__ = ["add_arguments", "run"]
