"""``/v1/realtime``: the live sessions in the OpenAI Realtime (GA) conventions, so that any
Realtime client (the official ``openai`` SDK, agent frameworks, proxies) is a Streamo client.

A thin adapter: ``RealtimeConnection`` is ``server.LiveConnection`` (the same scheduler,
limits, key, Origin rule, metrics, shutdown and error codes) reading Realtime client events
instead of ``streamo.v1`` messages and writing Realtime server events instead of ``event``,
``error`` and ``closed``. What the Realtime API has no word for goes under one extension
key, ``streamo``: in ``session`` (settings), in a user item (its time ``t``), in a response
(the second it answers) and as events ``streamo.decision`` (every second, when asked for) and
``streamo.closed`` (the summary). docs/serving.md has the mapping both ways.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import uuid
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import Field, ValidationError

from ..protocol import State
from .frames import check_frame_bytes
from .messages import Ask, Config, Event, ProtocolError, Ready, Seconds, _Message, excerpt
from .scheduler import Decided, Failed
from .server import LiveConnection

EXTENSION = "streamo"
"""The one key under which everything Streamo adds to the Realtime API goes."""
MAX_EVENT_ID_CHARS = 128
DATA_URL = re.compile(r"data:image/(jpeg|png|webp);base64,", re.IGNORECASE)
UNSUPPORTED_EVENTS = frozenset({
    "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear", "output_audio_buffer.clear",
    "conversation.item.delete", "conversation.item.retrieve", "conversation.item.truncate",
})
"""Realtime client events with no meaning here (audio, editing the past): ``unsupported``."""
EVENTS = ("session.update", "conversation.item.create", "response.create", "response.cancel", f"{EXTENSION}.close")
UNSUPPORTED_PYDANTIC = frozenset({"extra_forbidden", "union_tag_invalid", "literal_error"})
"""Validation failures that name a Realtime feature Streamo does not honour, not a malformed event."""


def max_event_bytes(max_message_bytes: int, max_frame_bytes: int) -> int:
    """Largest text message: an item with a frame at ``max_frame_bytes`` in base64 (4 bytes per 3)
    and the rest within ``max_message_bytes``; under the transport cap (``ServeSettings.transport_max_bytes``)."""
    return max_message_bytes + -(-max_frame_bytes // 3) * 4


# ----------------------------------------------------------------- client events


class _ImagePart(_Message):
    type: Literal["input_image"]
    image_url: str
    detail: Literal["auto", "low", "high"] | None = None


class _TextPart(_Message):
    type: Literal["input_text"]
    text: str


class _ItemExtension(_Message):
    t: Seconds | None = None
    """The start of the frame's turn in seconds (default: the turn after the last frame's)."""


class _UserItem(_Message):
    type: Literal["message"]
    role: Literal["user"]
    content: Annotated[list[Annotated[Union[_ImagePart, _TextPart], Field(discriminator="type")]],
                       Field(min_length=1, max_length=8)]
    id: Annotated[str, Field(max_length=MAX_EVENT_ID_CHARS)] | None = None
    object: Literal["realtime.item"] | None = None
    status: Literal["completed"] | None = None
    streamo: _ItemExtension | None = None


class _ItemCreate(_Message):
    type: Literal["conversation.item.create"]
    event_id: str | None = None
    previous_item_id: str | None = None
    item: _UserItem


class _SessionExtension(Config):
    """``/v1/stream``'s ``config`` (``response_threshold``, ``bias``) and whether to see every second."""

    type: Literal["config"] = "config"
    decisions: bool | None = None
    """Send ``streamo.decision`` for every second, not only answers."""


class _Session(_Message):
    type: Literal["realtime"] | None = None
    model: str | None = None
    instructions: str | None = None
    output_modalities: list[Literal["text"]] | None = None
    streamo: _SessionExtension | None = None


class _SessionUpdate(_Message):
    type: Literal["session.update"]
    event_id: str | None = None
    session: _Session


class _ResponseParams(_Message):
    output_modalities: list[Literal["text"]] | None = None


class _ResponseCreate(_Message):
    type: Literal["response.create"]
    event_id: str | None = None
    response: _ResponseParams | None = None


class _ResponseCancel(_Message):
    type: Literal["response.cancel"]
    event_id: str | None = None
    response_id: str | None = None


class _Close(_Message):
    type: Literal["streamo.close"]
    event_id: str | None = None


MODELS = {"session.update": _SessionUpdate, "conversation.item.create": _ItemCreate, "response.create": _ResponseCreate,
          "response.cancel": _ResponseCancel, f"{EXTENSION}.close": _Close}


def _param(location: tuple) -> str:
    """``("item", "content", 0, "input_image", "image_url")`` -> ``item.content[0].image_url``."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part not in ("input_image", "input_text"):  # pydantic's names for the union's members
            text += f".{part}" if text else str(part)
    return text


def _validated(model: type[_Message], data: dict, where: tuple = ()) -> Any:
    """``data`` as ``model``, or the ``ProtocolError`` that names the first field at fault."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        tag = ("type",) if first["type"] == "union_tag_invalid" else ()  # a content part of a type not taken
        param = _param(where + tuple(first["loc"]) + tag)
        code = "unsupported" if first["type"] in UNSUPPORTED_PYDANTIC else "bad_message"
        raise ProtocolError(code, f"{data.get('type', 'event')}: {excerpt(param or 'event')}: {first['msg']}",
                            param=param or None) from None


def error_event(exc: ProtocolError) -> dict[str, Any]:
    return {"type": "error", "event_id": _id("event"), "error": {
        "type": "server_error" if exc.code == "internal" else "invalid_request_error", "code": exc.code,
        "message": exc.message, "param": exc.param, "event_id": exc.event_id}}


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


# ----------------------------------------------------------------- the connection


class RealtimeConnection(LiveConnection):
    """One ``/v1/realtime`` session: Realtime client events in, Realtime server events out.
    The ``model`` query parameter (the SDK sends it) is accepted; the served model is the loaded one."""

    PATH = "/v1/realtime"
    SUBPROTOCOL = None

    def __init__(self, app_state: Any, websocket: Any) -> None:
        super().__init__(app_state, websocket)
        self.decisions = False
        self.last_item: str | None = None
        self.forced: dict[str, Any] | None = None
        """The response asked for by ``response.create``: its id, and whether it was cancelled."""
        self.max_event_bytes = max_event_bytes(self.settings.max_message_bytes, self.settings.max_frame_bytes)

    # ------------------------------------------------------------ in

    async def _handle(self, message: dict[str, Any]) -> None:
        if message.get("bytes") is not None:
            raise ProtocolError("unsupported", "binary messages are /v1/stream's; send a frame as an input_image item",
                                param="type")
        text = message.get("text") or ""
        size = len(text) if text.isascii() else len(text.encode())
        if size > self.max_event_bytes:
            raise ProtocolError("message_too_large", f"event of {size} bytes; the limit is {self.max_event_bytes}")
        try:
            data = orjson.loads(text) if size <= self.settings.max_message_bytes else \
                await asyncio.to_thread(orjson.loads, text)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError("bad_json", f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ProtocolError("bad_json", "an event must be a JSON object")
        event_id = data.get("event_id")
        event_id = event_id if isinstance(event_id, str) and len(event_id) <= MAX_EVENT_ID_CHARS else None
        try:
            await self._on_event(data)
        except ProtocolError as exc:
            exc.event_id = event_id
            raise

    async def _on_event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind in UNSUPPORTED_EVENTS:
            raise ProtocolError("unsupported", f"{kind} is not supported: Streamo takes frames and questions as items",
                                param="type")
        if kind not in MODELS:
            raise ProtocolError("unknown_type", f"unknown event type {excerpt(kind)}; expected one of {', '.join(EVENTS)}",
                                param="type")
        event = _validated(MODELS[kind], data)
        if self.closing:
            raise ProtocolError("session_closing", f"{kind} after {EXTENSION}.close")
        if isinstance(event, _SessionUpdate):
            self._on_session_update(event.session)
        elif isinstance(event, _ItemCreate):
            await self._on_item(event.item)
        elif isinstance(event, _ResponseCreate):
            self._on_response_create()
        elif isinstance(event, _ResponseCancel):
            self._on_response_cancel(event.response_id)
        else:
            await self._close()

    def _on_session_update(self, session: _Session) -> None:
        given = session.model_fields_set
        if "model" in given and session.model not in (self.state.model_name, self.ws.query_params.get("model")):
            raise ProtocolError("unsupported", f"this server serves {excerpt(self.state.model_name)} only",
                                param="session.model")
        if "instructions" in given and session.instructions != self.state.model.settings.system_prompt:
            raise ProtocolError("unsupported", "the model answers with the system prompt it was trained with "
                                "(streamo serve --system-prompt-file)", param="session.instructions")
        extension = session.streamo
        if extension is not None:
            if {"response_threshold", "bias"} & extension.model_fields_set:
                self._on_config(extension)
            if extension.decisions is not None:
                self.decisions = extension.decisions
        self._send({"type": "session.updated", "session": self._session()})

    async def _on_item(self, item: _UserItem) -> None:
        images = [(n, part) for n, part in enumerate(item.content) if isinstance(part, _ImagePart)]
        if len(images) > 1:
            raise ProtocolError("bad_message", "an item holds one input_image: one frame",
                                param=f"item.content[{images[1][0]}]")
        questions = [_validated(Ask, {"type": "ask", "text": part.text}, ("item", "content", n, "text")).text
                     for n, part in enumerate(item.content) if isinstance(part, _TextPart)]
        t = item.streamo.t if item.streamo is not None else None
        picture = None
        if images:
            n, part = images[0]
            picture = self._picture(part.image_url, f"item.content[{n}].image_url")
            t = self.next_t(t)
        for question in questions:
            try:
                self._on_ask(Ask(type="ask", text=question, t=t))
            except ProtocolError as exc:
                exc.param = "item.content"
                raise
        if picture is not None:
            try:
                await self._push_frame(picture, t)
            except ProtocolError as exc:
                exc.param = exc.param or f"item.content[{images[0][0]}].image_url"
                raise
        item_id = item.id or _id("item")
        echoed = {"id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
                  "content": [part.model_dump(exclude={"image_url"} if isinstance(part, _ImagePart) else set(),
                                              exclude_none=True) for part in item.content]}
        if picture is not None or t is not None:  # the frame's moment, or the one the question waits for
            echoed[EXTENSION] = {"t": t}
        for kind in ("conversation.item.added", "conversation.item.done"):
            self._send({"type": kind, "previous_item_id": self.last_item, "item": echoed})
        self.last_item = item_id

    def _picture(self, url: str, param: str) -> bytes:
        """The bytes of a ``data:image/...;base64,`` URL, within the frame size limit."""
        match = DATA_URL.match(url)
        if match is None:
            raise ProtocolError("unsupported", "image_url must be a data URL of a JPEG, PNG or WebP picture "
                                f"(data:image/png;base64,...), not {excerpt(url)}", param=param)
        try:
            data = base64.b64decode(url[match.end():], validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("not_an_image", "image_url is not valid base64", param=param) from None
        try:
            check_frame_bytes(data, self.settings.max_frame_bytes)
        except ProtocolError as exc:
            exc.param = param
            raise
        return data

    def _on_response_create(self) -> None:
        if self.forced is not None:
            raise ProtocolError("conversation_already_has_active_response",
                                f"response {self.forced['id']} still waits for its frame")
        self.forced = {"id": _id("resp"), "cancelled": False}
        self._send({"type": "response.created", "response": self._response(self.forced["id"], "in_progress", [])})
        self.state.scheduler.force(self.id)

    def _on_response_cancel(self, response_id: str | None) -> None:
        if self.forced is None or self.forced["cancelled"] or response_id not in (None, self.forced["id"]):
            raise ProtocolError("response_cancel_not_active", "no forced answer waits to be cancelled",
                                param="response_id" if response_id else None)
        if self.state.scheduler.unforce(self.id):
            self._cancelled(self.forced["id"], None)
            self.forced = None
        else:  # its frame is being decided: the answer is dropped when it comes
            self.forced["cancelled"] = True

    # ------------------------------------------------------------ out

    def _send(self, event: dict[str, Any], close_code: int | None = None) -> None:
        self._queue(orjson.dumps({"event_id": _id("event"), **event}).decode(), close_code)

    def _emit(self, message: Any, close_code: int | None = None) -> None:
        if isinstance(message, Ready):
            self._send({"type": "session.created", "session": self._session()})
        else:  # closed (and anything else of v1 without a Realtime name) as an extension event
            self._send({**message.model_dump(mode="json"), "type": f"{EXTENSION}.{message.type}"}, close_code)

    def _error(self, exc: ProtocolError, closes: bool = False) -> None:
        self.state.metrics.errors.labels(exc.code).inc()
        self._queue(orjson.dumps(error_event(exc)).decode())

    @staticmethod
    def refusal(exc: ProtocolError) -> str:
        return orjson.dumps(error_event(exc)).decode()

    def _on_result(self, result: Any) -> None:
        if isinstance(result, Failed) and result.forced and self.forced is not None:
            forced, self.forced = self.forced, None
            self._send({"type": "response.done", "response": self._response(forced["id"], "failed", [])})
        super()._on_result(result)

    def _emit_event(self, result: Decided, event: Event) -> None:
        if self.decisions:
            self._send({**event.model_dump(mode="json"), "type": f"{EXTENSION}.decision"})
        if event.state is not State.RESPONSE:
            return
        extension = {"t": event.t, "turn": event.turn, "forced": result.forced}
        if result.forced and self.forced is not None:
            forced, self.forced = self.forced, None
            if forced["cancelled"]:
                self._cancelled(forced["id"], extension)
                return
            response_id = forced["id"]
        else:
            response_id = _id("resp")
            self._send({"type": "response.created", "response": self._response(response_id, "in_progress", [], extension)})
        self._answer(response_id, event.text, extension)

    def _answer(self, response_id: str, text: str, extension: dict[str, Any]) -> None:
        """The GA sequence of one text answer; the engine decodes it whole, so it is one delta."""
        item_id = _id("item")
        where = {"response_id": response_id, "output_index": 0}
        part = {**where, "item_id": item_id, "content_index": 0}
        item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant"}
        done_item = {**item, "status": "completed", "content": [{"type": "output_text", "text": text}]}
        self._send({"type": "response.output_item.added", **where, "item": {**item, "status": "in_progress", "content": []}})
        self._send({"type": "response.content_part.added", **part, "part": {"type": "text", "text": ""}})
        self._send({"type": "response.output_text.delta", **part, "delta": text})
        self._send({"type": "response.output_text.done", **part, "text": text})
        self._send({"type": "response.content_part.done", **part, "part": {"type": "text", "text": text}})
        self._send({"type": "response.output_item.done", **where, "item": done_item})
        self._send({"type": "response.done", "response": self._response(response_id, "completed", [done_item], extension)})

    def _cancelled(self, response_id: str, extension: dict[str, Any] | None) -> None:
        response = self._response(response_id, "cancelled", [], extension)
        response["status_details"] = {"type": "cancelled", "reason": "client_cancelled"}
        self._send({"type": "response.done", "response": response})

    def _response(self, response_id: str, status: str, output: list, extension: dict[str, Any] | None = None) -> dict:
        response = {"id": response_id, "object": "realtime.response", "status": status, "output": output,
                    "output_modalities": ["text"], "conversation_id": f"conv_{self.id}"}
        if extension is not None:
            response[EXTENSION] = extension
        return response

    def _session(self) -> dict[str, Any]:
        ready = self.state.ready(self.id).model_dump(mode="json", exclude={"type", "session", "model"})
        ready.update(response_threshold=self.decision.response_threshold,
                     bias={state.value: value for state, value in self.decision.bias.items()}, decisions=self.decisions)
        return {"type": "realtime", "object": "realtime.session", "id": self.id, "model": self.state.model_name,
                "output_modalities": ["text"], "instructions": self.state.model.settings.system_prompt, EXTENSION: ready}
