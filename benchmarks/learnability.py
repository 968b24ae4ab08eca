"""Does the training pipeline learn? Train the tiny model on synthetic streams, score held-out ones.

Everything goes through the real entry points: ``streamo synth`` makes training and held-out
videos (different seeds, held-out indices after the training ones), ``streamo convert`` turns
the training annotations into stream conversations, ``PRESET=cpu-tiny bash train.sh`` trains
(``swift sft`` with the plugin and ``stream_focal``), and ``streamo eval --model`` plays every
held-out sample through the streaming engine and scores it. The same scorer rates three
baselines on the same held-out samples: always ``</Silence>``, the model before training (the
tiny model with the state tokens added, as training adds them), and the trained model shown
blank frames (same annotations and lengths, background only): what it scores there it owes to
when answers tend to come, not to what it sees.

Prints ONE JSON line: training minutes, the held-out timing F1 (±1 s) and macro-F1 of the
trained model and of the baselines, and how many of the trained model's held-out decisions stay
the same when it is shown blank frames.

``--preset standard`` (the default) trains on the standard synthetic videos, where the tiny model
does not learn to read its frames (docs/learnability.md). ``--preset cue`` is the end-to-end
regression check: timing-cue videos, the random vision encoder and merger frozen, and the step
count that fits 15 CPU minutes; the trained model beats its blank-frames score only if convert,
template, loss, ``swift sft``, engine and scorer all still work. Options given with a preset
override its values.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lib.paths import REPO, STREAMO
from lib.report import print_json_line


def _run(command: list[str], **kwargs) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, **kwargs)
    except subprocess.TimeoutExpired as exc:
        sys.exit(f"learnability: {' '.join(map(str, command[:4]))} ... stopped after {exc.timeout:.0f} s (--train-timeout)")
    if result.returncode != 0:
        sys.exit(f"learnability: {' '.join(map(str, command[:4]))} ... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _size_options(args: argparse.Namespace) -> list[str]:
    return ["--hidden-size", str(args.hidden_size), "--layers", str(args.layers), "--intermediate-size", str(args.intermediate_size),
            "--vision-hidden-size", str(args.vision_hidden_size), "--rope-theta", str(args.rope_theta)]


def _train(args: argparse.Namespace, model: Path, dataset: Path, output: Path) -> tuple[Path, float]:
    env = dict(os.environ, PRESET="cpu-tiny", MODEL=str(model), DATASET=str(dataset), OUTPUT_DIR=str(output), MAX_STEPS=str(args.steps),
               LEARNING_RATE=str(args.learning_rate), MAX_LENGTH=str(args.max_length), MAX_PIXELS=str(args.max_pixels),
               STREAMO_FOCAL_GAMMA=str(args.gamma), STREAMO_FOCAL_ALPHA_POWER=str(args.alpha_power))
    # A random frozen ViT hides most of a frame's change from the language model: train it too.
    extra = ["--lr_scheduler_type", "cosine", "--warmup_ratio", str(args.warmup_ratio), "--weight_decay", "0",
             "--freeze_vit", "true" if args.freeze_vit else "false", "--freeze_aligner", "true" if args.freeze_aligner else "false"]
    started = time.monotonic()
    _run(["bash", str(REPO / "train.sh"), *extra], env=env, timeout=args.train_timeout)
    minutes = (time.monotonic() - started) / 60
    checkpoints = sorted(output.glob(f"*/checkpoint-{args.steps}"))
    if not checkpoints:
        sys.exit(f"learnability: no checkpoint-{args.steps} under {output}")
    return checkpoints[-1], minutes


def _score_model(model: Path, data: Path, videos: Path, args: argparse.Namespace, report: Path, prompt: list[str]) -> dict:
    """Scores ``model`` on the held-out data; the report and the per-second predictions land beside ``report``."""
    return _summary(_run([*STREAMO, "eval", "--model", str(model), "--data", str(data), "--video-prefix", str(videos),
                          "--max-pixels", str(args.max_pixels), "--max-new-tokens", "24", "--device", "cpu", *prompt,
                          "--out", str(report), "--predictions-out", str(report.with_suffix(".predictions.jsonl"))]))


def _timing_by_task(report: Path, raw: Path) -> dict[str, float | None]:
    """Timing F1 per task type of the held-out samples (report keys are raw-file indices)."""
    task_of = [sample["task_type"] for sample in json.loads(raw.read_text(encoding="utf-8"))]
    totals: dict[str, list[int]] = {}
    for sample in json.loads(report.read_text(encoding="utf-8"))["per_sample"]:
        counts = totals.setdefault(task_of[sample["sample"]], [0, 0, 0])
        timing = sample["timing"]
        for slot, key in enumerate(("truth", "predicted", "matched")):
            counts[slot] += timing[key]
    return {task: round(2 * matched / (truth + predicted), 3) if truth + predicted else None
            for task, (truth, predicted, matched) in sorted(totals.items())}


def _unchanged_on_blank_frames(trained: Path, blank: Path) -> tuple[int, int]:
    """How many held-out decisions (sample, second) the trained model makes the same with blank
    frames, out of all: a model that reads its frames changes many; a vision-blind one none."""
    from streamo.metrics.data import iter_predictions

    def states(path: Path) -> dict:
        return {(sample, record.t): record.state for sample, record in iter_predictions(path) if not isinstance(record, str)}

    real, shown_blank = states(trained), states(blank)
    return sum(shown_blank.get(key) == state for key, state in real.items()), len(real)


def blank_copy(test: Path, blank: Path) -> Path:
    """The held-out annotations over videos of the same length that show nothing (background only).

    A model that reads its frames loses its answers here; one that has learned only when
    answers tend to come (a prior over turn numbers and the text so far) keeps its score.
    """
    from streamo.synth import SynthOptions
    from streamo.synth.render import encode_scene
    from streamo.synth.scene import Scene

    raw = json.loads((test / "raw_data.json").read_text(encoding="utf-8"))
    for sample in raw:
        target = blank / sample["video_path"]
        if not target.exists():  # one video serves the four samples made from it
            encode_scene(Scene(int(sample["duration"]), []), target, SynthOptions.fps, SynthOptions.width, SynthOptions.height)
    (blank / "raw_data.json").write_text(json.dumps(raw), encoding="utf-8")
    return blank / "raw_data.json"


def _score_silence(data: Path, videos: Path, work: Path) -> dict:
    from streamo.metrics import load_truth

    truths, problems = load_truth(data, video_prefix=str(videos))
    if problems:
        sys.exit(f"learnability: held-out data has problems: {problems[:3]}")
    predictions = work / "silence.jsonl"
    with open(predictions, "w", encoding="utf-8") as handle:
        for truth in truths:
            for turn in truth.timeline.turns:
                handle.write(json.dumps({"sample": truth.key, "t": turn.start, "state": "silence"}) + "\n")
    return _summary(_run([*STREAMO, "eval", "--predictions", str(predictions), "--data", str(data), "--video-prefix", str(videos)]))


# Values a preset gives; options given on the command line override them.
PRESETS: dict[str, dict[str, object]] = {
    "standard": {},
    # 1800 steps took 11.5-11.8 min here (0.36-0.39 s a step); the timeout leaves room for a slower day.
    "cue": {"timing_cue": True, "freeze_vit": True, "freeze_aligner": True, "steps": 1800, "train_timeout": 25 * 60},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="standard",
                        help="standard: the standard synthetic videos; cue: the end-to-end regression check "
                        "(--timing-cue --freeze-vit --freeze-aligner --steps 1800 --train-timeout 1500); "
                        "options given with a preset override it")
    parser.add_argument("--train-videos", type=int, default=60, help="synthetic training videos (4 samples each)")
    parser.add_argument("--test-videos", type=int, default=6, help="held-out synthetic videos")
    parser.add_argument("--train-grounding", choices=["one", "each"], default="one",
                        help="streamo synth --grounding for the training set (the held-out set always has the standard mix)")
    parser.add_argument("--train-pause", default="2,4", metavar="MIN,MAX",
                        help="streamo synth --pause for the training set: seconds between changes (the held-out "
                        "set always has the standard 2,4); a wider range makes the timing hard to guess without looking")
    parser.add_argument("--steps", type=int, default=800,
                        help="optimizer steps (batch 1); 800 stay inside --train-timeout at the slowest step time seen here (1 s)")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--warmup-ratio", type=float, default=0.05, help="share of the steps spent warming up the learning rate")
    parser.add_argument("--max-length", type=int, default=2048, help="tokens per training sample (longer ones become windows)")
    parser.add_argument("--max-pixels", type=int, default=12544, help="frame budget (12544: 112x112, 16 visual tokens)")
    parser.add_argument("--freeze-vit", action=argparse.BooleanOptionalAction, default=False,
                        help="keep the random vision encoder frozen (standard preset: trained)")
    parser.add_argument("--freeze-aligner", action=argparse.BooleanOptionalAction, default=False,
                        help="keep the random merger (vision to language projection) frozen (standard preset: trained)")
    parser.add_argument("--timing-cue", action=argparse.BooleanOptionalAction, default=False,
                        help="diagnostic: videos whose background shows when something moves or just changed "
                        "(streamo synth --timing-cue): what the model then misses it misses for want of learning "
                        "the timing, not for want of seeing")
    parser.add_argument("--system-prompt", help="system prompt of training and held-out streams (default: the built-in one, "
                        "about 170 tokens); a short one leaves the frames a larger share of the context")
    parser.add_argument("--hidden-size", type=int, default=128, help="tiny model width (streamo tiny-model --hidden-size)")
    parser.add_argument("--layers", type=int, default=4, help="tiny model layers")
    parser.add_argument("--intermediate-size", type=int, default=256, help="tiny model MLP width")
    parser.add_argument("--vision-hidden-size", type=int, default=32, help="tiny vision encoder width")
    parser.add_argument("--rope-theta", type=float, default=1e6, help="tiny model rotary base (default: Qwen2.5-VL's 1e6)")
    parser.add_argument("--gamma", type=float, default=1.0, help="STREAMO_FOCAL_GAMMA")
    parser.add_argument("--alpha-power", type=float, default=1.0, help="STREAMO_FOCAL_ALPHA_POWER")
    parser.add_argument("--train-timeout", type=float, default=15 * 60, help="seconds allowed for training")
    parser.add_argument("--work", type=Path, help="keep data, checkpoints, reports and predictions here (default: a temporary directory)")
    parser.set_defaults(**PRESETS[parser.parse_known_args()[0].preset])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="streamo-learnability-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        train, test = work / "train", work / "heldout"
        cue = ["--timing-cue"] if args.timing_cue else []
        _run([*STREAMO, "synth", "--out", str(train), "--videos", str(args.train_videos), "--seed", "0",
              "--grounding", args.train_grounding, "--pause", args.train_pause, *cue])
        _run([*STREAMO, "synth", "--out", str(test), "--videos", str(args.test_videos), "--seed", "1",
              "--first-index", str(args.train_videos), *cue])
        dataset = train / "stream.jsonl"
        prompt: list[str] = []  # convert and eval take the same file, so both see the same prompt
        if args.system_prompt is not None:
            prompt_file = work / "system_prompt.txt"
            prompt_file.write_text(args.system_prompt, encoding="utf-8")
            prompt = ["--system-prompt-file", str(prompt_file)]
        _run([*STREAMO, "convert", "--input", str(train / "raw_data.json"), "--output", str(dataset),
              "--video-prefix", str(train), "--strict", *prompt])
        held_out = test / "raw_data.json"

        base_model = work / "model"
        _run([*STREAMO, "tiny-model", str(base_model), *_size_options(args)])
        checkpoint, train_minutes = _train(args, base_model, dataset, work / "output")
        trained = _score_model(checkpoint, held_out, test, args, work / "trained_report.json", prompt)
        untrained_model = work / "untrained"
        _run([*STREAMO, "tiny-model", str(untrained_model), "--with-state-tokens", *_size_options(args)])
        untrained = _score_model(untrained_model, held_out, test, args, work / "untrained_report.json", prompt)
        silence = _score_silence(held_out, test, work)
        blank = work / "heldout_blank"
        blind = _score_model(checkpoint, blank_copy(test, blank), blank, args, work / "blank_frames_report.json", prompt)
        by_task = _timing_by_task(work / "trained_report.json", held_out)
        unchanged, decisions = _unchanged_on_blank_frames(work / "trained_report.predictions.jsonl",
                                                          work / "blank_frames_report.predictions.jsonl")

    print_json_line({
        "preset": args.preset,
        "train_minutes": round(train_minutes, 2),
        "steps": args.steps,
        "learning_rate": args.learning_rate,
        "warmup_ratio": args.warmup_ratio,
        "gamma": args.gamma,
        "alpha_power": args.alpha_power,
        "train_videos": args.train_videos,
        "train_grounding": args.train_grounding,
        "train_pause": args.train_pause,
        "timing_cue": args.timing_cue,
        "system_prompt": args.system_prompt,
        "max_pixels": args.max_pixels,
        "freeze_vit": args.freeze_vit,
        "freeze_aligner": args.freeze_aligner,
        "model": {"hidden_size": args.hidden_size, "layers": args.layers, "intermediate_size": args.intermediate_size,
                  "vision_hidden_size": args.vision_hidden_size, "rope_theta": args.rope_theta},
        "test_samples": trained["samples"],
        "tolerance_s": trained["tolerance_s"],
        "timing_f1": trained["timing_f1"],
        "timing_f1_by_task": by_task,
        "macro_f1": trained["macro_f1"],
        "state_accuracy": trained["state_accuracy"],
        "mean_abs_delay_s": trained["mean_abs_delay_s"],
        "answer_rouge_l": trained["answer_rouge_l"],
        "baseline_silence_timing_f1": silence["timing_f1"],
        "baseline_silence_macro_f1": silence["macro_f1"],
        "untrained_timing_f1": untrained["timing_f1"],
        "untrained_macro_f1": untrained["macro_f1"],
        "blank_frames_timing_f1": blind["timing_f1"],
        "blank_frames_macro_f1": blind["macro_f1"],
        "timing_f1_over_untrained": trained["timing_f1"] - (untrained["timing_f1"] or 0.0),
        "macro_f1_over_silence": trained["macro_f1"] - silence["macro_f1"],
        "timing_f1_over_blank_frames": trained["timing_f1"] - (blind["timing_f1"] or 0.0),
        "held_out_decisions": decisions,
        "decisions_unchanged_on_blank_frames": unchanged,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
