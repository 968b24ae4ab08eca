"""``streamo client``: a video played through a ``streamo serve`` session, printing ``streamo stream``'s lines."""

from __future__ import annotations

from ..live.command import add_client_arguments as add_arguments, run_client as run

NAME = "client"
HELP = "play a video through a streamo serve session and print each second's state and answer"
DESCRIPTION = ("Open a live session on a streamo serve server, send a video's frames (and questions), and print "
               "the same lines as streamo stream.")
__all__ = ["add_arguments", "run"]
