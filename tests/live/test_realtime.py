"""``/v1/realtime`` with the official ``openai`` SDK (and, for what the SDK will not do, a raw
WebSocket client) against a real server on a loopback port: the same decisions as
``streamo stream`` and ``/v1/stream``, forced answers, typed errors that echo ``event_id``,
the key and Origin rules, and limits and metrics shared with ``/v1/stream``."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from engine.stream_model import ANSWERS, MAX_PIXELS, PLAN, QUESTION, frame
from streamo.cli import main
from streamo.live.client import LiveClient, encode_png
from streamo.live.realtime import max_event_bytes
from streamo.live.server import ServeSettings

from test_docs import REPO, python_blocks

from .conftest import EXAMPLE_VIDEO, example_question, running_server, wait_until
from .test_abuse import _metric, _port, _raw_upgrade, _ws_text

openai = pytest.importorskip("openai")
websockets_client = pytest.importorskip("websockets.asyncio.client")

KEY = "realtime-test-key-0123456789"
GA_RESPONSE = ["response.created", "response.output_item.added", "response.content_part.added",
               "response.output_text.delta", "response.output_text.done", "response.content_part.done",
               "response.output_item.done", "response.done"]
GA_EVENTS = {"session.created", "session.updated", "conversation.item.added", "conversation.item.done", "error",
             *GA_RESPONSE, "streamo.decision", "streamo.closed"}


def data_url(picture: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(picture).decode()


def item(picture: bytes | None = None, question: str | None = None, **extension) -> dict:
    content = [{"type": "input_text", "text": question}] if question else []
    if picture is not None:
        content.append({"type": "input_image", "image_url": data_url(picture)})
    return {"type": "message", "role": "user", "content": content, **({"streamo": extension} if extension else {})}


def connect(url: str, key: str | None = KEY, **options):
    client = openai.AsyncOpenAI(api_key=key or "none", websocket_base_url=url.replace("http://", "ws://") + "/v1")
    return client.realtime.connect(model="fitted-tiny", **options)


async def until(connection, kind: str, seen: list | None = None, seconds: float = 60):
    """Events up to the first of type ``kind`` (kept in ``seen``); that event."""
    async def read():
        while True:
            event = await connection.recv()
            if seen is not None:
                seen.append(event)
            if event.type == kind:
                return event
    return await asyncio.wait_for(read(), seconds)


def test_the_documented_sdk_example_prints_streamo_streams_answers(example_model, capsys, monkeypatch):
    """docs/serving.md's example, run as written against a server with the demo's model: it
    prints the answers ``streamo stream`` gives on the same video and question, at the same seconds."""
    from streamo.engine.model import EngineSettings, StreamModel

    [(line, program)] = python_blocks("docs/serving.md")
    assert f'"{example_question()}"' in program
    assert main(["stream", "--model", str(example_model), "--max-pixels", str(MAX_PIXELS), "--video", str(EXAMPLE_VIDEO),
                 "--question", example_question(), "--at", "0", "--json"]) == 0
    expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    answers = [f"{record['t']:g} s: {record['text']}" for record in expected if record["state"] == "response"]
    assert answers and len(answers) < len(expected)
    model = StreamModel(example_model, EngineSettings(max_pixels=MAX_PIXELS), "cpu")
    with running_server(model, ServeSettings(api_key=KEY)) as server:
        monkeypatch.setenv("STREAMO_API_KEY", KEY)
        monkeypatch.setenv("STREAMO_REALTIME", server.url.replace("http://", "ws://") + "/v1")
        monkeypatch.chdir(REPO)
        exec(compile(program, f"docs/serving.md:{line}", "exec"), {"__name__": "__main__"})
        assert capsys.readouterr().out.splitlines() == answers
        decided = server.state.metrics.registry.get_sample_value("streamo_frames_decided_total")
        assert decided == len(expected)  # every second decided, none dropped
        assert asyncio.run(_refused(server.url)) == ("unauthorized", 403)


def test_a_plain_client_sees_item_acknowledgements_and_answers_in_the_ga_order(loaded_model):
    """Without ``decisions`` nothing is sent for Silence and Standby; each answer is the full GA
    sequence, at the planned seconds with the planned text."""
    async def session(url):
        seen = []
        async with connect(url, key=None) as connection:
            created = await until(connection, "session.created")
            for turn in range(len(PLAN)):
                await connection.conversation.item.create(item=item(encode_png(frame(turn)), QUESTION if turn == 0 else None))
            await connection.send({"type": "streamo.close"})
            closed = await until(connection, "streamo.closed", seen)
        return created, seen, closed

    with running_server(loaded_model, ServeSettings(max_queue=len(PLAN))) as server:
        created, seen, closed = asyncio.run(session(server.url))
    limits = created.session.streamo["limits"]
    assert limits["max_frame_pixels"] == limits["max_frame_side"] ** 2 and created.session.model == "fitted-tiny"
    assert {event.type for event in seen} <= GA_EVENTS - {"streamo.decision", "error"}
    items = [event for event in seen if event.type == "conversation.item.done"]
    assert [event.item.streamo["t"] for event in items] == [float(turn) for turn in range(len(PLAN))]
    assert items[0].item.content[0].text == QUESTION and items[0].item.content[1].image_url is None
    done = [event.response for event in seen if event.type == "response.done"]
    assert [(r.streamo["t"], r.output[0].content[0].text) for r in done] == [(3.0, ANSWERS[3]), (6.0, ANSWERS[6])]
    assert all(r.status == "completed" and not r.streamo["forced"] for r in done)
    first = done[0].id
    assert [e.type for e in seen if getattr(e, "response_id", None) == first or
            getattr(getattr(e, "response", None), "id", None) == first] == GA_RESPONSE
    assert (closed.frames, closed.responses, closed.dropped) == (len(PLAN), 2, 0)


async def _refused(url: str) -> tuple[str, int]:
    """No session without the key (a typed error, then the socket closes); a foreign Origin gets
    no WebSocket at all (HTTP 403)."""
    async with connect(url, key="wrong-key") as connection:
        error = await until(connection, "error")
        with pytest.raises(Exception):
            await until(connection, "session.created", seconds=10)
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, extra_headers={"Origin": "http://elsewhere.example"}):
            pass
    return error.error.code, refused.value.response.status_code


def test_response_create_forces_the_next_frame_to_answer_and_cancel_takes_it_back(loaded_model):
    """The fitted model plays its plan (Silence, Standby, Standby, ...): a cancelled request
    changes nothing, a request makes the next frame answer although its plan says Standby."""
    async def session(url):
        seen = []
        async with connect(url, key=None) as connection:
            await until(connection, "session.created")
            await connection.session.update(session={"type": "realtime", "streamo": {"decisions": True}})
            await until(connection, "session.updated")
            await connection.conversation.item.create(item=item(encode_png(frame(0)), QUESTION))
            first = await until(connection, "streamo.decision")
            await connection.response.create(event_id="to-cancel")
            waiting = await until(connection, "response.created")
            await connection.response.cancel(event_id="cancel")
            cancelled = await until(connection, "response.done")
            await connection.response.cancel(event_id="cancel-again")
            nothing = await until(connection, "error")
            await connection.conversation.item.create(item=item(encode_png(frame(1))))
            second = await until(connection, "streamo.decision")
            await connection.response.create(event_id="force")
            created = await until(connection, "response.created")
            await connection.response.create(event_id="one-too-many")
            busy = await until(connection, "error")
            await connection.conversation.item.create(item=item(encode_png(frame(2))))
            forced = await until(connection, "response.done", seen)
        return [first, second], waiting, cancelled, nothing, created, busy, seen, forced

    with running_server(loaded_model) as server:
        planned, waiting, cancelled, nothing, created, busy, seen, forced = asyncio.run(session(server.url))
    assert [(event.turn, event.state) for event in planned] == [(0, PLAN[0].value), (1, PLAN[1].value)]
    assert cancelled.response.id == waiting.response.id and cancelled.response.status == "cancelled"
    assert cancelled.response.status_details.reason == "client_cancelled"
    assert (nothing.error.code, nothing.error.event_id) == ("response_cancel_not_active", "cancel-again")
    assert (busy.error.code, busy.error.event_id) == ("conversation_already_has_active_response", "one-too-many")
    assert PLAN[2].value == "standby"
    decision = next(event for event in seen if event.type == "streamo.decision")
    assert (decision.turn, decision.state) == (2, "response")
    assert forced.response.id == created.response.id and forced.response.status == "completed"
    assert forced.response.streamo == {"t": 2.0, "turn": 2, "forced": True} and forced.response.output[0].content[0].text
    assert [event.type for event in seen if event.type.startswith("response.")] == GA_RESPONSE[1:]  # created came at once


def _noise_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_EVENTS = [
    ("not_an_image", "item.content[0].image_url",
     {"type": "conversation.item.create", "item": item(b"GIF89a but not really")}),
    ("not_an_image", "item.content[0].image_url", {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,@@"}]}}),
    ("frame_too_large", "item.content[0].image_url", {"type": "conversation.item.create", "item": item(_noise_png(120))}),
    ("unknown_type", "type", {"type": "no.such.event"}),
    ("unsupported", "type", {"type": "input_audio_buffer.append", "audio": "AAAA"}),
    ("unsupported", "session.tools", {"type": "session.update", "session": {"type": "realtime", "tools": []}}),
    ("unsupported", "session.instructions", {"type": "session.update", "session": {"instructions": "Be brief."}}),
    ("bad_message", "session.streamo.response_threshold",
     {"type": "session.update", "session": {"streamo": {"response_threshold": 2}}}),
    ("unsupported", "item.content[0].image_url", {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "http://127.0.0.1:9/x.png"}]}}),
    ("unsupported", "item.role", {"type": "conversation.item.create", "item": {
        "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}}),
]


def test_bad_images_unknown_events_and_over_limit_items_get_typed_errors_and_the_session_goes_on(loaded_model):
    async def session(url):
        async with connect(url, key=None) as connection:
            await until(connection, "session.created")
            errors = []
            for number, (_, _, event) in enumerate(BAD_EVENTS):
                await connection.send({**event, "event_id": f"bad-{number}"})
                errors.append(await until(connection, "error"))
            await connection.conversation.item.create(item=item(encode_png(frame(0)), QUESTION), event_id="good")
            added = await until(connection, "conversation.item.added")
            await connection.session.update(session={"streamo": {"decisions": True}})
            await connection.send({"type": "streamo.close"})
            closed = await until(connection, "streamo.closed")
        return errors, added, closed

    settings = ServeSettings(max_frame_bytes=20_000)
    assert len(_noise_png(120)) > settings.max_frame_bytes > len(encode_png(frame(0)))
    with running_server(loaded_model, settings) as server:
        errors, added, closed = asyncio.run(session(server.url))
    got = [(e.error.code, e.error.param, e.error.event_id, e.error.type) for e in errors]
    assert got == [(code, param, f"bad-{n}", "invalid_request_error") for n, (code, param, _) in enumerate(BAD_EVENTS)]
    assert all("\n" not in e.error.message and len(e.error.message) <= 300 for e in errors)
    assert added.item.content[0].text == QUESTION and closed.frames == 1 and closed.reason == "client"


def test_raw_clients_beta_names_huge_items_and_one_that_never_reads(loaded_model):
    """What the SDK will not send: beta event names and content, items over the event limit and
    over the transport cap; and a client that never reads is closed at its outbox bound."""
    settings = ServeSettings(max_frame_bytes=30_000, max_outbox_messages=100, max_outbox_bytes=16 * 1024,
                             max_message_rate=100_000)  # the errors fill the socket's buffers in a moment
    limit = max_event_bytes(settings.max_message_bytes, settings.max_frame_bytes)

    async def session(url):
        async with websockets_client.connect(url.replace("http://", "ws://") + "/v1/realtime?model=x",
                                             max_size=None) as socket:
            replies = [json.loads(await socket.recv())]
            for event in ({"type": "transcription_session.update", "session": {}},
                          {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
                              {"type": "text", "text": "beta content"}]}},
                          {"type": "conversation.item.create", "padding": "x" * limit, "item": item(encode_png(frame(0)))}):
                await socket.send(json.dumps({**event, "event_id": "raw"}))
                replies.append(json.loads(await socket.recv()))
            await socket.send(json.dumps({"type": "conversation.item.create", "item": item(encode_png(frame(0)))}))
            replies += [json.loads(await socket.recv()) for _ in range(2)]
            await socket.send("x" * (settings.transport_max_bytes + 1))
            with pytest.raises(Exception):
                await asyncio.wait_for(socket.recv(), 10)
            return replies, socket.close_code

    with running_server(loaded_model, settings) as server:
        replies, close_code = asyncio.run(session(server.url))
        sock = _raw_upgrade(_port(server.url), receive_buffer=4096, path="/v1/realtime")
        sock.settimeout(2)
        try:
            for _ in range(200):  # each answered by an error that is never read
                sock.sendall(_ws_text(b'{"type": "x"}') * 500)
        except OSError:
            pass  # the server closed it
        wait_until(lambda: _metric(server.url, 'streamo_sessions_closed_total{reason="backlog"}') == 1.0, 60)
        sock.close()
    assert [r["type"] for r in replies] == ["session.created", "error", "error", "error",
                                            "conversation.item.added", "conversation.item.done"]
    assert [(r["error"]["code"], r["error"]["param"], r["error"]["event_id"]) for r in replies[1:4]] == [
        ("unknown_type", "type", "raw"), ("unsupported", "item.content[0].type", "raw"),
        ("message_too_large", None, None)]  # refused unread: its event_id is not known
    assert close_code == 1009


def test_stream_and_realtime_at_once_share_the_limits_and_the_metrics(loaded_model):
    async def both(url):
        v1 = await LiveClient.connect(url)
        async with connect(url, key=None) as connection:
            await until(connection, "session.created")
            async with connect(url, key=None) as third:
                full = await until(third, "error")
            with pytest.raises(Exception):
                await LiveClient.connect(url)
            open_now = _metric(url, "streamo_sessions_open")
            for turn in range(2):
                await v1.send_frame(encode_png(frame(turn)))
                await connection.conversation.item.create(item=item(encode_png(frame(turn))))
            await v1.close()
            await connection.send({"type": "streamo.close"})
            closed = await until(connection, "streamo.closed")
        v1_closed = None
        while (message := await v1.receive()) is not None:
            v1_closed = message if message.type == "closed" else v1_closed
        return full, open_now, closed, v1_closed

    with running_server(loaded_model, ServeSettings(max_sessions=2)) as server:
        full, open_now, closed, v1_closed = asyncio.run(both(server.url))
        decided = _metric(server.url, "streamo_frames_decided_total")
        wait_until(lambda: _metric(server.url, "streamo_sessions_open") == 0)
    assert full.error.code == "server_full" and open_now == 2
    assert closed.frames == v1_closed.frames == 2 and decided == 4
