"""``streamo serve`` and ``streamo client``: flags, checks before anything starts, and the run.

The server refuses to start on a non-loopback address without an API key, and checks its
source directories and model before it listens. The client prints exactly the lines (or
JSON lines) ``streamo stream`` prints. Torch is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import socket
import sys
from pathlib import Path

from ..argtypes import positive_float, positive_int
from ..engine.command import (StreamInputError, add_engine_options, add_question_arguments, check_window, format_line,
                              gather_questions)
from ..errors import UsageError

API_KEY_ENV = "STREAMO_API_KEY"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory (swift sft output or a saved Qwen2.5-VL)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1; any other needs an API key)")
    parser.add_argument("--port", type=positive_int, default=8000, help="port (default: 8000)")
    parser.add_argument("--api-key", help=f"key clients must send (default: ${API_KEY_ENV}; prefer the variable: "
                        "a flag shows in the process list)")
    parser.add_argument("--max-sessions", type=positive_int, default=8, help="live sessions at once (default: 8)")
    parser.add_argument("--max-batch", type=positive_int, default=1, metavar="N",
                        help="sessions' waiting frames the transformers backend decides in one forward, taken "
                        "round-robin (default: 1, one at a time; vLLM batches on its own)")
    parser.add_argument("--max-connections", type=positive_int, default=64,
                        help="open connections at once, sessions and HTTP requests together; one more is closed "
                        "at once (default: 64)")
    parser.add_argument("--fps", type=positive_float, default=1.0, help="frames (turns) per second (default: 1.0)")
    add_engine_options(parser, window=120.0)
    parser.add_argument("--max-queue", type=positive_int, default=8,
                        help="frames a session may have waiting; beyond, the oldest are dropped (default: 8)")
    parser.add_argument("--idle-timeout", type=positive_float, default=60.0,
                        help="close a session after this many seconds with no message and nothing to decide (default: 60)")
    parser.add_argument("--sources", nargs="+", type=Path, default=[], metavar="DIR",
                        help="directories whose videos sessions may ask the server to play")
    parser.add_argument("--allow-urls", action="store_true",
                        help="let sessions ask the server to play http(s)/rtsp URLs")
    parser.add_argument("--allow-origin", action="append", default=[], type=web_origin, metavar="ORIGIN",
                        help="a web origin (scheme://host[:port]) whose pages may open sessions, beside the server's "
                        "own page (repeatable; default: none)")
    parser.add_argument("--ssl-keyfile", type=Path, help="TLS key (browsers give the webcam only to https pages or localhost)")
    parser.add_argument("--ssl-certfile", type=Path, help="TLS certificate")


def web_origin(value: str) -> str:
    """``scheme://host[:port]`` as browsers send it in ``Origin``."""
    from urllib.parse import urlsplit

    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query:
        raise argparse.ArgumentTypeError(f"expected an origin such as https://example.org:8443, got {value!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


def run_serve(args: argparse.Namespace) -> int:
    from .server import AppState, ServeSettings, is_loopback

    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(args.host) and key is None:
        raise StreamInputError(f"refusing to listen on {args.host} without an API key: give --api-key or set {API_KEY_ENV}")
    check_window(args.window, args.fps)
    if args.max_batch > 1 and args.backend != "transformers":
        raise StreamInputError(f"--max-batch is the transformers backend's; {args.backend} batches sessions on its own")
    roots = []
    for root in args.sources:
        if not root.is_dir():
            raise StreamInputError(f"--sources {root}: no such directory")
        roots.append(root.resolve())
    if (args.ssl_keyfile is None) != (args.ssl_certfile is None):
        raise StreamInputError("give both --ssl-keyfile and --ssl-certfile, or neither")
    listener = reserve_port(args.host, args.port)  # before the model loads: a taken port fails in a second
    print(f"streamo serve: loading {args.model}; {args.host}:{args.port} refuses connections until it is loaded",
          file=sys.stderr, flush=True)

    from ..engine.loading import ModelLoadError
    from ..engine.model import StreamModel, engine_settings

    try:
        model = StreamModel(args.model, engine_settings(args), args.device)
    except ModelLoadError:  # a UsageError: one line; the port is given back first
        listener.close()
        raise
    try:
        listener.listen(2048)
    except OSError as exc:  # another server bound the port meanwhile and was first to listen
        listener.close()
        model.close()
        raise _port_error(args.host, args.port, exc) from None
    from .listener import build_server

    settings = ServeSettings(api_key=key, max_sessions=args.max_sessions, max_queue=args.max_queue,
                             idle_timeout=args.idle_timeout, sources=roots, allow_urls=args.allow_urls,
                             max_connections=args.max_connections, allow_origins=args.allow_origin)
    state = AppState(settings, served_name(args.model), model)
    scheme = "https" if args.ssl_certfile else "http"
    print(f"streamo serve: {args.model} on {args.backend} at {scheme}://{args.host}:{args.port}/ (page), sessions on "
          f"/v1/stream and /v1/realtime; API key {'required' if key else 'not required (loopback)'}", file=sys.stderr, flush=True)
    # Session start and end lines (``streamo.live``) beside uvicorn's own; the key is never logged.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    try:
        build_server(state, ssl_keyfile=args.ssl_keyfile, ssl_certfile=args.ssl_certfile).run(sockets=[listener])
    finally:
        listener.close()
        model.close()
    return 0


def served_name(checkpoint: str | Path) -> str:
    """The model's name in ``ready`` (the page's header): the checkpoint's directory, and what
    the model is when the checkpoint says so (``streamo fit-head`` writes it)."""
    from ..fitting import read_about

    about = read_about(checkpoint)
    return Path(checkpoint).resolve().name + (f" ({about})" if about else "")


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, or a one-line error when it cannot be. It listens only once
    the model is loaded: until then a connection is refused, so a load balancer or readiness probe
    sees the replica as down instead of queueing sessions on it."""
    host = host.strip("[]")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        # IPv4 first: "localhost" must answer on 127.0.0.1, the address the page's users type.
        family, kind, proto, _, address = min(found, key=lambda entry: entry[0] != socket.AF_INET)
        listener = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StreamInputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as exc:
        listener.close()
        raise _port_error(host, port, exc) from None
    return listener


def _port_error(host: str, port: int, exc: OSError) -> StreamInputError:
    reason = "the port is taken (another streamo serve?)" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return StreamInputError(f"cannot listen on {host}:{port}: {reason}; pick another --port")


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, nargs="+", metavar="URL",
                        help="server address: http(s)://HOST:PORT, ws(s)://HOST:PORT, or HOST:PORT (ws://; wss:// on "
                        "port 443); several replicas: the session opens on the first that takes it, passing over one "
                        "that is full (close code 1013) or refuses the connection")
    parser.add_argument("--video", required=True,
                        help="video file, directory of frame pictures, stream URL (rtsp://, http://, ...) or - for stdin")
    add_question_arguments(parser)
    parser.add_argument("--api-key", help=f"the server's key (default: ${API_KEY_ENV})")
    parser.add_argument("--json", action="store_true", help='print JSON lines {"t", "state", "text", "latency_ms"}')
    parser.add_argument("--realtime", action="store_true",
                        help="send frames at the wall clock's pace (the server drops what it cannot keep up with)")


def run_client(args: argparse.Namespace) -> int:
    return asyncio.run(_client(args))


async def _client(args: argparse.Namespace) -> int:
    from .client import LiveClient, NoServerTook, open_video, stream_video

    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    try:
        client = await LiveClient.connect_first(args.server, key)
    except NoServerTook as exc:
        raise StreamInputError(str(exc)) from None
    try:
        source = open_video(client, args.video)
        args.fps = client.ready.fps
        questions = gather_questions(args, source)
    except UsageError:
        await client.disconnect()
        raise

    def show(message) -> None:
        if message.type == "event":
            record = {"t": message.t, "state": message.state.value, "text": message.text, "latency_ms": message.latency_ms}
            print(json.dumps(record, ensure_ascii=False) if args.json else format_line(message, client.ready.fps), flush=True)
        elif message.type == "error":
            print(f"warning: server: {message.code}: {message.message}", file=sys.stderr)

    result = await stream_video(client, source.frames, questions, args.realtime, show)
    if result.closed is None:
        raise StreamInputError(f"{client.url}: the connection closed before the session's summary")
    closed = result.closed
    if result.events:
        from ..metrics.scoring import latency_stats

        mean, p95, peak = latency_stats([event.latency_ms for event in result.events])
        print(f"{source.name}: {closed.frames} frames, {closed.responses} responses, {closed.dropped} dropped; "
              f"latency ms mean {mean:.1f}, p95 {p95:.1f}, max {peak:.1f}", file=sys.stderr)
    return 0
