"""``streamo stream``: a video played through a stream model, one line per second."""

from __future__ import annotations

from ..engine.command import add_arguments, run_stream as run

NAME = "stream"
HELP = "play a video through a stream model and print each second's state and answer"
DESCRIPTION = ("Play a video (file, frame directory, stream URL or live stream on stdin) through a stream model "
               "with the incremental KV-cache engine, printing one line (or JSON line) per second.")
__all__ = ["add_arguments", "run"]
