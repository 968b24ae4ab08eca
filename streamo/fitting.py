"""Fit a checkpoint's output head to a few stream conversations (``streamo fit-head``).

A tiny model trained for minutes on CPU learns the reply format, not the task, so a page
showing it looks dead. Fitting only the output rows of the tokens the conversations reply
with (the head is untied from the input embeddings) makes the checkpoint reply as the
conversations do over their own frames, with a margin wide enough that the few pixel
levels a browser's decoder differs by flip no decision. The hidden states do not change,
so the rest of the model is exactly what training left. It is a demonstration device: the
fitted model plays its examples, it is not a general assistant.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from .argtypes import positive_float, positive_int
from .errors import UsageError

ABOUT_FILE = "streamo_about.txt"
"""One line in a checkpoint saying what the model is; ``streamo serve`` shows it in the page."""
FITTED_ABOUT = "a tiny model fitted to the example clips: it shows the page working; it is not a general assistant"
SKIPPED = ("optimizer.pt", "scheduler.pt", "rng_state", "global_step", "trainer_state.json", "latest", "zero_to_fp32.py")
"""Training state a fitted copy does not need."""


def read_about(checkpoint: str | Path) -> str | None:
    try:
        return (Path(checkpoint) / ABOUT_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def fit_output_rows(model, processor, conversations, steps: int = 400, margin: float = 0.0) -> None:
    """Fit the output rows so that, reading each ``(messages, frames)`` conversation (stream
    format), the model replies as it does. Raises ``ValueError`` when no fit reproduces them."""
    import torch

    from .engine.reference import encode_conversation

    tokenizer = processor.tokenizer
    assistant_header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    features, labels = [], []
    for messages, frames in conversations:
        inputs = encode_conversation(processor, messages, frames, generation_prompt=False)
        ids = inputs["input_ids"][0]
        # Positions whose next token belongs to an assistant message: state, answer, <|im_end|>.
        positions = []
        for start in range(len(ids) - len(assistant_header)):
            if ids[start:start + len(assistant_header)].tolist() == assistant_header:
                position = start + len(assistant_header) - 1
                while True:
                    positions.append(position)
                    position += 1
                    if int(ids[position]) == im_end:
                        break
        with torch.no_grad():
            hidden = model.model(**inputs.to(model.device)).last_hidden_state[0].float().cpu()
        features.append(hidden[positions])
        labels.append(ids[[p + 1 for p in positions]])
    features, labels = torch.cat(features), torch.cat(labels)
    rows = torch.unique(labels)
    weight = model.lm_head.weight.detach().float().cpu().clone()
    others = torch.ones(weight.shape[0], dtype=torch.bool)
    others[rows] = False
    other_lse = torch.logsumexp(features @ weight[others].T, dim=1)
    delta = torch.zeros(len(rows), weight.shape[1], requires_grad=True)
    column = {int(row): index for index, row in enumerate(rows)}
    target_columns = torch.tensor([column[int(label)] for label in labels])
    optimizer = torch.optim.Adam([delta], lr=0.2)
    for _ in range(steps):
        logits = features @ (weight[rows] + delta).T
        # Additive-margin cross-entropy: the reply must win even with ``margin`` taken off its logit.
        logits = logits.scatter_add(1, target_columns[:, None], torch.full((len(labels), 1), -margin))
        lse = torch.logaddexp(other_lse, torch.logsumexp(logits, dim=1))
        loss = (lse - logits.gather(1, target_columns[:, None])[:, 0]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weight[rows] += delta.detach()
    with torch.no_grad():
        logits = features @ weight.T
        target_logits = logits.gather(1, labels[:, None])[:, 0]
        lead = (target_logits - logits.scatter(1, labels[:, None], float("-inf")).max(1).values).min()
    if not (torch.equal(logits.argmax(1), labels) and lead > 0):
        raise ValueError(f"the fitted head does not reproduce the conversations (worst lead {float(lead):.3f})")
    head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    head.weight = torch.nn.Parameter(weight.to(model.lm_head.weight.dtype).to(model.device))
    model.lm_head = head
    model.config.tie_word_embeddings = False
    model.config.text_config.tie_word_embeddings = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="checkpoint directory to start from (left unchanged)")
    parser.add_argument("--data", required=True, type=Path, help="stream-format file (streamo convert's output)")
    parser.add_argument("--sample", type=int, action="append", required=True,
                        help="index of a record of --data to fit (repeatable)")
    parser.add_argument("--video-prefix", type=Path, default=Path("."), help="directory the records' video paths are under")
    parser.add_argument("--out", required=True, type=Path, help="directory for the fitted checkpoint")
    parser.add_argument("--steps", type=positive_int, default=3000, help="optimiser steps (default: 3000)")
    parser.add_argument("--margin", type=positive_float, default=3.0,
                        help="logit margin every reply must win by (default: 3.0)")
    parser.add_argument("--max-pixels", type=positive_int,
                        help="pixel budget per frame, recorded in the output's args.json for streamo stream and serve "
                        "(default: the checkpoint's)")
    parser.add_argument("--about", default=FITTED_ABOUT, help="what the model is, shown by streamo serve's page")


class FitError(UsageError):
    """Inputs ``fit-head`` cannot use, or conversations no fit of the head reproduces."""


def run(args: argparse.Namespace) -> int:
    from .engine.loading import load_stream_model, training_max_pixels
    from .video import MIN_PIXELS, VideoError, iter_frames

    try:
        records = json.loads(args.data.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FitError(f"{args.data}: {exc}") from None
    if not isinstance(records, list):
        raise FitError(f"{args.data}: expected a list of stream samples")
    chosen = []
    for index in args.sample:
        if not 0 <= index < len(records):
            raise FitError(f"{args.data}: no sample {index} ({len(records)} records)")
        record = records[index]
        videos = record.get("videos") if isinstance(record, dict) else None
        if not (isinstance(videos, list) and videos and isinstance(record.get("messages"), list)):
            raise FitError(f"{args.data}: sample {index}: needs 'messages' and one entry in 'videos' (stream format)")
        chosen.append((index, record["messages"], args.video_prefix / videos[0]))
    model, processor = load_stream_model(args.model, "cpu")
    max_pixels = args.max_pixels or training_max_pixels(args.model)
    conversations = []
    for index, messages, video in chosen:
        try:
            frames = [sampled.image for sampled in iter_frames(video, 1.0, max_pixels, MIN_PIXELS)]
        except (VideoError, OSError) as exc:
            raise FitError(f"{args.data}: sample {index}: videos[0] {video}: {exc}") from None
        conversations.append((messages, frames))
    try:
        fit_output_rows(model, processor, conversations, args.steps, args.margin)
    except ValueError as exc:
        raise FitError(f"{args.model}: {exc}") from None
    _save(args, model, processor, max_pixels)
    print(f"fitted {args.out}: samples {', '.join(map(str, args.sample))} of {args.data} ({args.about})")
    return 0


def _save(args: argparse.Namespace, model, processor, max_pixels: int) -> None:
    """Write the fitted checkpoint beside ``args.out`` and rename it into place, so that an
    interrupted run never leaves half a checkpoint where a server would load it."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    try:
        shutil.copytree(args.model, staging, dirs_exist_ok=True,
                        ignore=lambda _, names: [n for n in names if n.startswith(SKIPPED)])
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / ABOUT_FILE).write_text(args.about + "\n", encoding="utf-8")
        # The frames were fitted at this budget: record it where ms-swift records a checkpoint's.
        record = staging / "args.json"
        settings = json.loads(record.read_text(encoding="utf-8")) if record.exists() else {}
        record.write_text(json.dumps({**settings, "max_pixels": max_pixels}, indent=2), encoding="utf-8")
        if args.out.exists():
            shutil.rmtree(args.out)
        staging.rename(args.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
