"""Server videos for the page's player: short-lived media tokens and range requests.

A ``<video>`` element cannot send an ``Authorization`` header, and the API key must never go
in a URL (URLs end up in logs and histories). So a client holding the key asks
``POST /v1/media`` for one ``--sources`` file; the server resolves the path exactly as a
``source`` message is resolved and answers a random token that names that one file for
``TOKEN_TTL`` seconds. ``GET /v1/media/{token}`` then serves the file with HTTP range
requests (Starlette's ``FileResponse``), so the player seeks without downloading it all.
A token opens nothing but its file, and an unknown or expired token is answered 404.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Callable

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from .messages import ProtocolError, Source
from .sources import resolve_source

TOKEN_TTL = 3600.0
"""Seconds a media token stays valid: long enough to watch a long video, short enough to expire."""
MAX_TOKENS = 256
"""Tokens held at once; the oldest go first, so a client cannot grow the table."""
MEDIA_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
               ".mkv": "video/x-matroska", ".ts": "video/mp2t", ".avi": "video/x-msvideo"}


class MediaRequest(BaseModel):
    path: str = Field(max_length=4096)
    """A path relative to one of the ``--sources`` directories, as in a ``source`` message."""


class MediaGrant(BaseModel):
    url: str
    """Where the player fetches the file (``/v1/media/<token>``); range requests work."""
    expires_in: float


class MediaTokens:
    """Token -> (resolved file, expiry), bounded and pruned on every issue."""

    def __init__(self, ttl: float = TOKEN_TTL, limit: int = MAX_TOKENS, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.limit, self.clock = ttl, limit, clock
        self.grants: dict[str, tuple[Path, float]] = {}

    def issue(self, path: Path) -> str:
        now = self.clock()
        self.grants = {token: grant for token, grant in self.grants.items() if grant[1] > now}
        while len(self.grants) >= self.limit:
            del self.grants[next(iter(self.grants))]
        token = secrets.token_urlsafe(32)
        self.grants[token] = (path, now + self.ttl)
        return token

    def lookup(self, token: str) -> Path | None:
        grant = self.grants.get(token)
        if grant is None or grant[1] <= self.clock():
            return None
        return grant[0]


def media_router(roots: list[Path], require_key: Callable[..., None], tokens: MediaTokens | None = None) -> APIRouter:
    """``POST /v1/media`` (needs the key, like every data route) and ``GET /v1/media/{token}``."""
    tokens = tokens or MediaTokens()
    router = APIRouter()

    @router.post("/v1/media", dependencies=[Depends(require_key)])
    async def grant(request: MediaRequest) -> MediaGrant:
        """A short-lived URL for one server video, for a player that cannot send the key."""
        try:
            path = await asyncio.to_thread(resolve_source, Source(type="source", path=request.path), roots, False)
        except ProtocolError as exc:
            raise HTTPException(status_code=403, detail=exc.message) from None
        return MediaGrant(url=f"/v1/media/{tokens.issue(Path(path))}", expires_in=tokens.ttl)

    @router.get("/v1/media/{token}", include_in_schema=False)
    async def media(token: str) -> FileResponse:
        path = tokens.lookup(token)
        if path is None or not path.is_file():
            raise HTTPException(status_code=404, detail="unknown or expired media token")
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream"))

    return router
