"""Training data pipeline speed: template-encoded samples/s from the frame cache vs decoding on the fly.

One 120-second stream sample (a generated 640x360, 30 fps H.264 clip; 120 turns, one frame
each) is encoded by the ``stream_qwen2_5_vl`` template of the tiny model, exactly as a
training step's data loader would: frames, image processor, token ids and labels. The two
frame sources alternate for ``--rounds`` rounds in one process and the best round counts (the
machine is shared). The cache is filled once before timing (``streamo frames`` does this
ahead of training). Prints one JSON line; ``speedup`` = cache / on-the-fly samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from lib.clips import synthetic_clip
from lib.report import print_json_line
from streamo.protocol import DEFAULT_SYSTEM_PROMPT, State, assistant_text, user_text

SECONDS = 120


def stream_sample(video: str, turns: int) -> dict:
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
    for turn in range(turns):
        questions = ["What is the number on the screen?"] if turn == 0 else []
        messages.append({"role": "user", "content": user_text(turn, 1.0, questions)})
        state = State.RESPONSE if turn % 30 == 29 else State.SILENCE
        messages.append({"role": "assistant", "content": assistant_text(state, f"The number {turn * 30}.")})
    return {"messages": messages, "videos": [video]}


def encode_rate(template, sample: dict, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        template.encode(json.loads(json.dumps(sample)))
    return repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="encodings per source and round")
    parser.add_argument("--max-pixels", type=int, default=100352, help="per-frame pixel budget (default: 128 tokens)")
    parser.add_argument("--model", type=Path, help="tiny model directory (default: built in a temporary directory)")
    args = parser.parse_args()

    os.environ["MAX_PIXELS"] = str(args.max_pixels)
    os.environ.pop("STREAMO_FRAME_CACHE", None)
    from swift.model import get_model_processor
    from swift.template import get_template

    from streamo.swift_plugin.frames import FrameSource
    from streamo.swift_plugin.template import TEMPLATE_TYPE, register_stream_template
    from lib.models import build_model

    with tempfile.TemporaryDirectory(prefix="streamo-pipeline-") as work:
        work = Path(work)
        clip = str(work / "clip.mp4")
        synthetic_clip(clip, SECONDS, width=640, height=360)
        model = args.model or build_model(work / "tiny", "tiny", with_state_tokens=True)
        register_stream_template()
        _, processor = get_model_processor(str(model), load_model=False)
        template = get_template(processor, template_type=TEMPLATE_TYPE)
        template.set_mode("train")
        sample = stream_sample(clip, SECONDS)

        on_the_fly = FrameSource(max_pixels=args.max_pixels)
        cached = FrameSource(cache_dir=str(work / "cache"), max_pixels=args.max_pixels)
        cached.cache(1.0).ensure(clip)
        tokens = len(template.encode(json.loads(json.dumps(sample)))["input_ids"])

        rates = {"cache": [], "decode": []}
        for _ in range(args.rounds):
            for name, source in (("cache", cached), ("decode", on_the_fly)):
                template.frame_source = source
                rates[name].append(encode_rate(template, sample, args.repeats))

    best = {name: max(values) for name, values in rates.items()}
    print_json_line({
        "benchmark": "data_pipeline",
        "sample_seconds": SECONDS,
        "tokens_per_sample": tokens,
        "max_pixels": args.max_pixels,
        "cache_samples_per_s": round(best["cache"], 3),
        "decode_samples_per_s": round(best["decode"], 3),
        "speedup": round(best["cache"] / best["decode"], 2),
        "rounds": args.rounds,
    })


if __name__ == "__main__":
    main()
