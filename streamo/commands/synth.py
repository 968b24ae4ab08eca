"""``streamo synth``: synthetic shape videos with timed events and their raw annotations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..argtypes import positive_float, positive_int

NAME = "synth"
HELP = "generate synthetic shape videos with timed events and their raw annotations"
DESCRIPTION = ("Generate short videos of coloured shapes with unambiguous timed events and their raw "
               "annotations (instant QA, event grounding, narration, several questions per stream).")


def add_arguments(parser) -> None:
    from ..synth.scene import DEFAULT_DURATION, DEFAULT_PAUSE, GROUNDING_CHOICES, MIN_PAUSE, SHORTEST_DURATION

    parser.add_argument("--out", required=True, type=Path, help="output directory (videos/ and raw_data.json)")
    parser.add_argument("--videos", required=True, type=positive_int, help="number of videos")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    parser.add_argument("--first-index", type=int, default=0, help="index of the first video (held-out sets: start after the training set)")
    parser.add_argument("--fps", type=positive_float, default=5.0, help="frame rate of the files (default: 5)")
    parser.add_argument("--size", default="160x128", help="frame size WIDTHxHEIGHT, even numbers (default: 160x128)")
    parser.add_argument("--grounding", choices=GROUNDING_CHOICES, default="one",
                        help="Grounding samples per video: one, about a random moving shape (default), or each moving "
                        "shape (training data: the same frames with different answers per shape named)")
    parser.add_argument("--pause", default="%d,%d" % DEFAULT_PAUSE, metavar="MIN,MAX",
                        help=f"whole seconds of stillness between changes, at least {MIN_PAUSE} (default: %(default)s); other "
                        "than the default, the first change also comes up to MAX-MIN seconds later, so that wider "
                        "ranges make the timing hard to guess without looking")
    parser.add_argument("--duration", default="%d,%d" % DEFAULT_DURATION, metavar="MIN,MAX",
                        help=f"whole seconds each clip lasts, at least {SHORTEST_DURATION} (default: %(default)s; "
                        "120,300 gives clips of realistic length for training at full size)")
    parser.add_argument("--timing-cue", action="store_true",
                        help="diagnostic: paint the background blue while something moves and red in the first frame "
                        "at rest after a change, so that the timing can be read off any frame by any vision encoder")


def run(args: argparse.Namespace) -> int:
    from ..synth import SynthOptions, generate, parse_pause, parse_range, parse_size

    width, height = parse_size(args.size)
    options = SynthOptions(videos=args.videos, seed=args.seed, fps=args.fps, width=width, height=height,
                           first_index=args.first_index, grounding=args.grounding, timing_cue=args.timing_cue,
                           pause=parse_pause(args.pause), duration=parse_range(args.duration, "duration"))
    raw_path = generate(args.out, options, progress=sys.stderr.isatty())
    print(f"{raw_path}: {args.videos} videos; convert with --video-prefix {args.out}", file=sys.stderr)
    return 0
