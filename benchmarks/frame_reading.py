"""Why the tiny model does not read its frames: is the cue in its visual tokens, and can the rest read them?

A single-frame yes/no question about synthetic frames (``streamo synth``), balanced so that
chance is 0.5: ``moving`` asks "Is anything moving?" (a shape in motion is smeared, see
``streamo.synth.render.EXPOSURE``: a subtle cue), ``red`` asks "Is there a red shape?" (the
shape's one or two visual tokens change direction strongly: the plainest local cue there is).
Two arms train the same tiny model, from the same seed, on the same rows encoded by the
plugin's template, for the same number of steps, with the vision side frozen:

* ``frames``: the model's own vision encoder (random) turns each frame into visual tokens, as
  in ``benchmarks/learnability.py``;
* ``oracle``: every visual token of a frame is replaced by a fixed random code for that frame's
  true answer. The language model still has to find the answer in the visual tokens, through
  the template's layout, attention and loss; only the seeing is done for it.

A logistic regression on the frames arm's visual tokens (flattened) says whether the cue is in
them at all, apart from the language model. Held-out accuracy of the answer word is measured on
real frames and, for ``frames``, on blank frames (background only) of the same videos: a gap
between the two is what the model owes to what it sees. Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from learnability import blank_copy
from lib.paths import REPO, STREAMO
from lib.report import print_json_line

QUESTIONS = {"moving": "Is anything moving?", "red": "Is there a red shape?"}
ANSWERS = ("No", "Yes")


def _answer_seconds(scene, question: str) -> tuple[list[int], list[int]]:
    """Seconds k whose frame (turn k shows the frame at k s) answers ``question`` with yes, and with no."""
    from streamo.synth.render import EXPOSURE

    # Still: no motion from a second before to a second after, so that no answer is borderline.
    still = [k for k in range(scene.duration) if not scene.moving_between(k - 1, k + 1)]
    if question == "moving":  # smeared: the frame's exposure holds a moment of motion
        return [k for k in range(scene.duration) if scene.moving_between(k - EXPOSURE, k)], still
    red = [k for k in still if any(shape.colour == "red" for shape in scene.state_at(k))]
    return red, [k for k in still if k not in red]


def _rows(raw_dir: Path, video_root: Path, seed: int, per_answer: int, question: str,
          system_prompt: str | None = None) -> list[tuple[dict, int]]:
    """Balanced single-frame rows (stream conversation, answer index) for the videos under ``raw_dir``.

    Without ``system_prompt`` the template's default one (about 170 tokens) comes first.
    """
    from streamo.synth.scene import make_scene

    rng = random.Random(f"frame-reading:{seed}")
    rows = []
    names = sorted({sample["video_path"] for sample in json.loads((raw_dir / "raw_data.json").read_text(encoding="utf-8"))})
    for name in names:
        yes, no = _answer_seconds(make_scene(seed, int(Path(name).stem.split("_")[1])), question)
        count = min(per_answer, len(yes), len(no))
        for answer, seconds in ((1, yes), (0, no)):
            for k in rng.sample(seconds, count):
                messages = [{"role": "user", "content": f"{QUESTIONS[question]}\n<{k}s-{k + 1}s>\n<stream>"},
                            {"role": "assistant", "content": f"</Response> {ANSWERS[answer]}."}]
                if system_prompt is not None:
                    messages.insert(0, {"role": "system", "content": system_prompt})
                rows.append(({"messages": messages, "videos": [str(video_root / name)]}, answer))
    rng.shuffle(rows)
    return rows


class _Arm:
    """One training run: the tiny model, its optimizer, and (oracle arm) the visual-token override."""

    def __init__(self, model_dir: Path, oracle: bool, learning_rate: float, steps: int, seed: int):
        import torch
        from swift.model import get_model_processor
        from swift.template import get_template

        from streamo.swift_plugin.template import TEMPLATE_TYPE

        torch.manual_seed(seed)
        self.torch = torch
        self.model, processor = get_model_processor(str(model_dir), torch_dtype=torch.float32, attn_impl="sdpa")
        self.template = get_template(processor, template_type=TEMPLATE_TYPE)
        self.template.set_mode("train")
        self.tokenizer = processor.tokenizer
        self.answer_ids = [self.tokenizer.encode(f" {word}", add_special_tokens=False)[0] for word in ANSWERS]
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_("visual" not in name)  # frozen vision, as a pretrained one would be
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=learning_rate, weight_decay=0.0, fused=True)
        warmup = max(1, steps // 20)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(1.0, (step + 1) / warmup))
        self.answer = 0
        if oracle:
            width = self.model.config.text_config.hidden_size
            self.codes = torch.randn(len(ANSWERS), width, generator=torch.Generator().manual_seed(seed)) * 0.3
            self._own_features = self.model.model.get_image_features
            self.model.model.get_image_features = self._oracle_features

    def _oracle_features(self, *args, **kwargs):
        output = self._own_features(*args, **kwargs)
        pooled = output.pooler_output
        codes = [self.codes[self.answer].expand_as(tokens) for tokens in (pooled if isinstance(pooled, (list, tuple)) else [pooled])]
        output.pooler_output = type(pooled)(codes) if isinstance(pooled, (list, tuple)) else codes[0]
        return output

    def encode(self, row: dict) -> dict:
        return self.template.data_collator([self.template.encode(copy.deepcopy(row))])

    def probe_accuracy(self, train: list[tuple[dict, int]], test: list[tuple[dict, int]]) -> float:
        """Held-out accuracy of a logistic regression on the frozen visual tokens: is the cue in them at all?"""
        torch = self.torch

        def features(batches):
            rows = []
            with torch.no_grad():
                for batch, _ in batches:
                    pooled = self.model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"], return_dict=True).pooler_output
                    rows.append(torch.cat(list(pooled)).flatten() if isinstance(pooled, (list, tuple)) else pooled.flatten())
            return torch.stack(rows), torch.tensor([answer for _, answer in batches], dtype=torch.float32)

        x, y = features(train)
        x_test, y_test = features(test)
        mean, scale = x.mean(0), x.std(0) + 1e-6
        x, x_test = (x - mean) / scale, (x_test - mean) / scale
        weight = torch.zeros(x.shape[1], requires_grad=True)
        bias = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=300)

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y) + 1e-3 * weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            return round(((x_test @ weight + bias > 0).float() == y_test).float().mean().item(), 3)

    def train(self, batches: list[tuple[dict, int]], steps: int, seed: int) -> float:
        torch, rng = self.torch, random.Random(seed)
        self.model.train()
        started = time.monotonic()
        for _ in range(steps):
            batch, self.answer = rng.choice(batches)
            batch = dict(batch)
            labels = batch.pop("labels")
            logits = self.model(**batch).logits[0, :-1]
            loss = torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=-100)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.schedule.step()
        return time.monotonic() - started

    def accuracy(self, batches: list[tuple[dict, int]]) -> float:
        """Share of rows whose answer word (yes or no) is the likelier of the two at its position."""
        torch = self.torch
        self.model.eval()
        correct = 0
        for batch, answer in batches:
            self.answer = answer
            batch = dict(batch)
            labels = batch.pop("labels")[0]
            position = next(p for p in range(1, len(labels)) if labels[p].item() in self.answer_ids)
            with torch.no_grad():
                logits = self.model(**batch).logits[0, position - 1, self.answer_ids]
            correct += int(logits.argmax().item() == answer)
        return round(correct / len(batches), 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--question", choices=sorted(QUESTIONS), default="moving",
                        help="moving: 'Is anything moving?' (a subtle cue); red: 'Is there a red shape?' (a plain local cue)")
    parser.add_argument("--train-videos", type=int, default=60)
    parser.add_argument("--test-videos", type=int, default=6)
    parser.add_argument("--per-answer", type=int, default=4, help="rows per answer and video (balanced yes/no)")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per arm (batch 1); the oracle arm needs under 100")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--max-pixels", type=int, default=12544, help="frame budget (12544: 12 visual tokens for a 160x128 video)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--system-prompt", help="system prompt of every row (default: the template's, about 170 tokens); "
                        "a short one leaves the visual tokens a larger share of the context")
    args = parser.parse_args()
    os.environ["MAX_PIXELS"] = str(args.max_pixels)

    from streamo.swift_plugin.template import register_stream_template

    register_stream_template()
    with tempfile.TemporaryDirectory(prefix="streamo-frame-reading-") as scratch:
        work = Path(scratch)
        train, test = work / "train", work / "heldout"
        for folder, seed, first, count in ((train, 0, 0, args.train_videos), (test, 1, args.train_videos, args.test_videos)):
            subprocess.run([*STREAMO, "synth", "--out", str(folder), "--videos", str(count), "--seed", str(seed), "--first-index", str(first)],
                           check=True, capture_output=True, cwd=REPO)
        blank = work / "blank"
        blank_copy(test, blank)
        model_dir = work / "model"
        subprocess.run([*STREAMO, "tiny-model", str(model_dir), "--with-state-tokens", "--hidden-size", "128", "--layers", "4",
                        "--intermediate-size", "256"], check=True, capture_output=True, cwd=REPO)
        train_rows = _rows(train, train, 0, args.per_answer, args.question, args.system_prompt)
        test_rows = _rows(test, test, 1, args.per_answer, args.question, args.system_prompt)
        blank_rows = _rows(test, blank, 1, args.per_answer, args.question, args.system_prompt)

        result: dict = {"question": QUESTIONS[args.question], "train_rows": len(train_rows), "test_rows": len(test_rows), "chance": 0.5, "steps": args.steps,
                        "system_prompt": args.system_prompt}
        for name in ("frames", "oracle"):
            arm = _Arm(model_dir, oracle=name == "oracle", learning_rate=args.learning_rate, steps=args.steps, seed=args.seed)
            batches = [(arm.encode(row), answer) for row, answer in train_rows]
            held_out = [(arm.encode(row), answer) for row, answer in test_rows]
            before = arm.accuracy(held_out)
            if name == "frames":  # the vision side is frozen: the probe sees the features the training sees
                result["linear_probe_on_visual_tokens"] = arm.probe_accuracy(batches, held_out)
            seconds = arm.train(batches, args.steps, args.seed)
            result[name] = {"train_minutes": round(seconds / 60, 2), "heldout_accuracy_untrained": before,
                            "heldout_accuracy": arm.accuracy(held_out), "train_accuracy": arm.accuracy(batches[:200])}
            if name == "frames":
                result[name]["blank_frames_accuracy"] = arm.accuracy([(arm.encode(row), answer) for row, answer in blank_rows])
    print_json_line(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
