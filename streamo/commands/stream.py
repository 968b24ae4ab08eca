"""``streamo stream``: a video played through a stream model, one line per second."""

from __future__ import annotations

NAME = "stream"


def add_parser(sub) -> None:
    from ..engine.command import add_arguments, run_stream

    parser = sub.add_parser(
        NAME,
        help="play a video through a stream model and print each second's state and answer",
        description="Play a video (file, frame directory, stream URL or live stream on stdin) through a stream model "
        "with the incremental KV-cache engine, printing one line (or JSON line) per second.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=run_stream)
