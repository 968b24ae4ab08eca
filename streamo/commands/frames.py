"""``streamo frames``: every video's per-turn frames into the frame cache, ahead of training."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..argtypes import existing_file, positive_int
from .options import WORKERS, add_executor, add_fps

NAME = "frames"
HELP = "extract every video's per-turn frames into the frame cache ahead of training"
DESCRIPTION = ("Sample each video at --fps, resize to the pixel budget and store JPEGs in the frame "
               "cache; resumable, with a manifest and a failure report in the cache directory. "
               "Exit status 1 when any video failed (the others are still extracted), 2 for unusable arguments or input.")


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True, type=existing_file, help="stream file or raw annotations")
    parser.add_argument("--cache-dir", required=True, type=Path, help="frame cache directory")
    add_fps(parser)
    parser.add_argument("--max-pixels", type=positive_int,
                        help="pixel budget per frame (default: 100352 = 128 visual tokens)")
    parser.add_argument("--min-pixels", type=positive_int, help="smallest frame area (default: 3136 = 4 visual tokens)")
    parser.add_argument("--workers", type=positive_int, default=WORKERS,
                        help="videos decoded in parallel with the local executor (default: all CPUs)")
    parser.add_argument("--quality", type=positive_int, help="JPEG quality 1-100 (default: 90)")
    parser.add_argument("--video-prefix", help="directory prepended to each video path")
    add_executor(parser, "decoding")


def run(args: argparse.Namespace) -> int:
    import contextlib

    from ..cluster import RayExecutor
    from ..video.cache import DEFAULT_QUALITY, FrameCache
    from ..video.extract import extract_file, ledger_path, report_paths
    from ..video.sampling import MAX_PIXELS, MIN_PIXELS

    cache = FrameCache(args.cache_dir, args.fps, args.max_pixels or MAX_PIXELS, args.min_pixels or MIN_PIXELS,
                       args.quality or DEFAULT_QUALITY)
    with RayExecutor(args.ray_address) if args.executor == "ray" else contextlib.nullcontext() as executor:
        summary = extract_file(args.input, cache, args.video_prefix, workers=args.workers, executor=executor)
    manifest, failures = report_paths(args.cache_dir, args.input)
    ledger = f"; ledger: {ledger_path(args.cache_dir, args.input)}" if executor is not None and summary.failed else ""
    print(f"{args.input} -> {args.cache_dir}: {summary.line()}; manifest: {manifest}"
          + (f"; failures: {failures}" if summary.failed or summary.samples_rejected else "") + ledger, file=sys.stderr)
    return 1 if summary.failed else 0
