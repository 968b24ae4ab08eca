"""``streamo tiny-model``: a tiny random Qwen2.5-VL with the real Qwen2 tokenizer."""

from __future__ import annotations

NAME = "tiny-model"


def add_parser(sub) -> None:
    from .. import tiny_model

    parser = sub.add_parser(
        NAME,
        help="build a tiny random Qwen2.5-VL with the real Qwen2 tokenizer (CPU smoke runs, tests)",
        description="Build a tiny random Qwen2.5-VL with the real Qwen2 tokenizer (seeded; reused when complete).",
    )
    tiny_model.add_arguments(parser)
    parser.set_defaults(handler=tiny_model.run)
