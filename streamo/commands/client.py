"""``streamo client``: a video played through a ``streamo serve`` session, printing ``streamo stream``'s lines."""

from __future__ import annotations

NAME = "client"


def add_parser(sub) -> None:
    from ..live.command import add_client_arguments, run_client

    parser = sub.add_parser(
        NAME,
        help="play a video through a streamo serve session and print each second's state and answer",
        description="Open a live session on a streamo serve server, send a video's frames (and questions), and print "
        "the same lines as streamo stream.",
    )
    add_client_arguments(parser)
    parser.set_defaults(handler=run_client)
