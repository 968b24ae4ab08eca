"""Peak memory and time of stream_focal vs a naive full-softmax focal loss (forward + backward).

Each variant runs in its own fresh subprocess on bf16 logits [seq, vocab] (what a bf16 model
hands the loss). Memory is the rise of the process's peak resident set (``ru_maxrss``) over
its resident set once the inputs exist, so it counts everything the loss allocates, the
logits' gradient (``logits_mb``, needed by any implementation) included; inputs are filled chunk by chunk so that building them never
peaks above their final size. Time is the best of ``--repeats`` forward+backward passes.

Two label layouts: ``stream`` (frames of ``--frame-tokens`` image tokens, supervised only on
each second's state token and end-of-turn, plus an answer every ``--response-every`` turns)
and ``all`` (every position supervised, the worst case for stream_focal). The naive loss does
the same work whatever the labels are, so it is measured once, on the stream layout.

Prints one JSON line. The naive variant needs about 7x the logits' size in free memory; the
script refuses to start it when that is not available rather than push others out of memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from lib.report import print_json_line
from lib.system import peak_rss_mb, rss_bytes



def special_ids(vocab: int) -> tuple[tuple[int, int, int], int]:
    """State-token and <|im_end|> ids where Qwen2.5 has them (151665.. and 151645 of 151936)."""
    return (vocab - 271, vocab - 270, vocab - 269), vocab - 291

NAIVE_LOGITS_MULTIPLE = 7.0


def stream_labels(seq: int, vocab: int, frame_tokens: int, response_every: int, answer_tokens: int):
    """Labels of a packed stream: per second, a prompt and frame (ignored), then a state and <|im_end|>."""
    import torch

    state_ids, end_of_turn = special_ids(vocab)
    labels = torch.full((seq,), -100, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    position, turn = 0, 0
    prompt = 14 + frame_tokens  # chat markup and time tag, then the frame's image tokens
    while position + prompt + 2 < seq:
        position += prompt
        respond = turn % response_every == response_every - 1
        state = state_ids[2] if respond else state_ids[int(torch.randint(0, 2, (1,), generator=generator))]
        labels[position] = state
        position += 1
        if respond:
            count = min(answer_tokens, seq - position - 1)
            labels[position : position + count] = torch.randint(0, vocab // 2, (count,), generator=generator)
            position += count
        labels[position] = end_of_turn
        position += 1
        turn += 1
    return labels


def naive_focal_loss(logits, labels, state_ids, alpha, gamma):
    """Full fp32 softmax over every position, no row selection, no chunking."""
    import torch
    import torch.nn.functional as F

    z = logits[:-1].float()
    targets = labels[1:]
    supervised = targets != -100
    safe = targets.clamp_min(0)
    log_probs = F.log_softmax(z, dim=-1)
    log_p = log_probs.gather(1, safe[:, None]).squeeze(1)
    weight = torch.ones_like(log_p)
    power = torch.zeros_like(log_p)
    for state_id, state_alpha in zip(state_ids, alpha):
        weight = torch.where(targets == state_id, torch.full_like(log_p, state_alpha), weight)
        power = torch.where(targets == state_id, torch.full_like(log_p, gamma), power)
    per_token = -weight * (1 - log_p.exp()) ** power * log_p
    return (per_token * supervised).sum() / supervised.sum()


def run_variant(args: argparse.Namespace) -> dict:
    import torch

    from streamo.loss import stream_focal_loss

    state_ids, _ = special_ids(args.vocab)
    if args.layout == "all":
        labels = torch.randint(0, args.vocab, (args.seq,), generator=torch.Generator().manual_seed(0))
        labels[::7] = torch.tensor(state_ids).repeat(args.seq // 21 + 1)[: len(labels[::7])]
    else:
        labels = stream_labels(args.seq, args.vocab, args.frame_tokens, args.response_every, args.answer_tokens)
    logits = torch.empty(args.seq, args.vocab, dtype=torch.bfloat16)
    generator = torch.Generator().manual_seed(1)
    for start in range(0, args.seq, 256):
        stop = min(start + 256, args.seq)
        logits[start:stop] = torch.randn(stop - start, args.vocab, generator=generator)
    logits.requires_grad_()
    alpha, gamma = (0.4, 3.3, 6.7), 2.0

    def step() -> float:
        logits.grad = None
        began = time.perf_counter()
        if args.variant == "stream_focal":
            loss = stream_focal_loss(logits[None], labels[None], state_ids, alpha, gamma)
        else:
            loss = naive_focal_loss(logits, labels, state_ids, alpha, gamma)
        loss.backward()
        elapsed = time.perf_counter() - began
        del loss
        return elapsed

    baseline = rss_bytes()
    times = [step() for _ in range(args.repeats)]
    return {
        "peak_mb": round(peak_rss_mb() - baseline / 2**20, 1),
        "seconds": round(min(times), 3),
        "supervised": int((labels[1:] != -100).sum()),
    }


def spawn(args: argparse.Namespace, variant: str, layout: str) -> dict:
    command = [sys.executable, __file__, "--child", variant, "--layout", layout]
    for name in ("seq", "vocab", "repeats", "frame_tokens", "response_every", "answer_tokens"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{variant} ({layout}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq", type=int, default=8192)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--frame-tokens", type=int, default=256)
    parser.add_argument("--response-every", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=20)
    parser.add_argument("--layout", choices=("stream", "all"), default="stream", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("stream_focal", "naive"), dest="variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print_json_line(run_variant(args))
        return

    import psutil

    ours_stream = spawn(args, "stream_focal", "stream")
    ours_all = spawn(args, "stream_focal", "all")
    logits_bytes = args.seq * args.vocab * 2
    needed = NAIVE_LOGITS_MULTIPLE * logits_bytes
    available = psutil.virtual_memory().available
    if available < needed:
        raise SystemExit(f"the naive loss needs about {needed / 2**30:.1f} GiB free, {available / 2**30:.1f} GiB is")
    naive = spawn(args, "naive", "stream")
    result = {
        "benchmark": "loss_memory",
        "device": "cpu",
        "seq": args.seq,
        "vocab": args.vocab,
        "logits": "bf16",
        "logits_mb": round(logits_bytes / 2**20, 1),
        "stream_supervised_tokens": ours_stream["supervised"],
        "naive": {"peak_mb": naive["peak_mb"], "seconds": naive["seconds"]},
        "stream_focal_stream_layout": {"peak_mb": ours_stream["peak_mb"], "seconds": ours_stream["seconds"]},
        "stream_focal_all_supervised": {"peak_mb": ours_all["peak_mb"], "seconds": ours_all["seconds"]},
        "memory_ratio_naive_over_ours_stream": round(naive["peak_mb"] / ours_stream["peak_mb"], 2),
        "memory_ratio_naive_over_ours_all": round(naive["peak_mb"] / ours_all["peak_mb"], 2),
        "speedup_stream": round(naive["seconds"] / ours_stream["seconds"], 2),
        "speedup_all": round(naive["seconds"] / ours_all["seconds"], 2),
    }
    print_json_line(result)


if __name__ == "__main__":
    main()
