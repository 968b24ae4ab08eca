"""``streamo serve``: many live sessions over a WebSocket API, with the web page."""

from __future__ import annotations

from ..live.command import add_serve_arguments as add_arguments, run_serve as run

NAME = "serve"
HELP = "serve live streaming sessions over a WebSocket API, with a web page"
DESCRIPTION = ("Serve a stream model to many live sessions at once: clients push frames (or name a server-side "
               "video) over the WebSocket /v1/stream and get one decision per frame; OpenAI Realtime clients hold the same "
               "sessions at /v1/realtime. Loopback only unless an API key is set.")
__all__ = ["add_arguments", "run"]
