"""Where the streaming engine's time goes: per-second wall latency of a windowed stream and a
PyTorch profile of a few silent seconds.

Plays the same synthetic stream as ``stream_latency.py`` (one question at 0 s, an answer
every ``--answer-every`` seconds) through ``StreamingSession`` and reports the median silent
second, the median answering second, frames per second over the whole stream, and the
profiled seconds' CPU and CUDA totals with the operators that cost most CPU time. This is how
the cuDNN attention overhead on an H100 was found (see ``engine.session.attention_kernels``).
Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import stream_latency  # the same model builder, frames and scripted decisions
from lib.report import print_json_line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["tiny", *stream_latency.FULL_CONFIGS], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=int, default=100, help="stream length (default: 100)")
    parser.add_argument("--window", type=float, default=60.0, help="cache window in seconds (default: 60)")
    parser.add_argument("--answer-every", type=int, default=10, help="answer every N seconds (default: 10)")
    parser.add_argument("--profile-from", type=int, default=76, help="first profiled second (default: 76)")
    parser.add_argument("--profile-seconds", type=int, default=4, help="profiled seconds, all silent by default (default: 4)")
    parser.add_argument("--top", type=int, default=8, help="operators listed (default: 8)")
    args = parser.parse_args(argv)
    last = args.profile_from + args.profile_seconds - 1
    if args.profile_from < 1 or last >= args.seconds:
        parser.error(f"the profiled seconds must lie in 1..{args.seconds - 1}")

    import torch

    from streamo.engine import StreamingSession

    options = stream_latency.parse_args(["--config", args.config, "--device", args.device])
    options.workdir = Path(tempfile.mkdtemp(prefix="profile_stream."))
    model, processor = stream_latency.load(options)
    width, height = options.frame_size
    session = StreamingSession(model, processor, window=args.window, decision=stream_latency.ScriptedStates(args.answer_every),
                               max_new_tokens=16, max_pixels=width * height)
    session.ask(stream_latency.QUESTION, 0)
    cuda = args.device.startswith("cuda")
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    profiler = torch.profiler.profile(activities=activities)
    latencies: list[float] = []
    for turn in range(args.seconds):
        picture = stream_latency.frame(turn, width, height)
        if turn == args.profile_from:
            profiler.__enter__()
        started = time.perf_counter()
        session.push_frame(picture, turn)
        if cuda:
            torch.cuda.synchronize()
        latencies.append((time.perf_counter() - started) * 1000)
        if turn == last:
            profiler.__exit__(None, None, None)

    answering = {turn for turn in range(args.seconds) if args.answer_every and turn % args.answer_every == 0}
    profiled = set(range(args.profile_from, last + 1))
    silent = [ms for turn, ms in enumerate(latencies) if turn and turn not in answering and turn not in profiled]
    answers = [ms for turn, ms in enumerate(latencies) if turn and turn in answering]
    events = profiler.key_averages()
    top = sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)[: args.top]
    print_json_line({
        "benchmark": "profile_stream",
        "config": args.config,
        "device": args.device,
        "seconds": args.seconds,
        "window_s": args.window,
        "median_silent_ms": round(statistics.median(silent), 1),
        "median_answer_ms": round(statistics.median(answers), 1) if answers else None,
        "frames_per_s": round(1000 * (len(latencies) - 1) / sum(latencies[1:]), 2),
        "first_second_ms": round(latencies[0], 1),
        "profiled_seconds": args.profile_seconds,
        "profiled_self_cpu_ms": round(sum(event.self_cpu_time_total for event in events) / 1000, 1),
        "profiled_self_cuda_ms": round(sum(getattr(event, "self_device_time_total", 0) for event in events) / 1000, 1) if cuda else None,
        "top_cpu_ops": [{"name": event.key, "self_cpu_ms": round(event.self_cpu_time_total / 1000, 2), "calls": event.count} for event in top],
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
