"""``streamo serve``: many live sessions over a WebSocket API, with the web page."""

from __future__ import annotations

NAME = "serve"


def add_parser(sub) -> None:
    from ..live.command import add_serve_arguments, run_serve

    parser = sub.add_parser(
        NAME,
        help="serve live streaming sessions over a WebSocket API, with a web page",
        description="Serve a stream model to many live sessions at once: clients push frames (or name a server-side "
        "video) over the WebSocket /v1/stream and get one decision per frame. Loopback only unless an API key is set.",
    )
    add_serve_arguments(parser)
    parser.set_defaults(handler=run_serve)
