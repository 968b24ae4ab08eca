"""``streamo serve`` over real sockets: the same decisions as ``streamo stream``, many sessions
at once, server-side sources, queues that drop and report, live decision changes."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import pytest

from engine.stream_model import ANSWERS, MAX_PIXELS, PLAN, QUESTION, frame
from streamo.cli import main
from streamo.live.client import LiveClient, encode_png, stream_video
from streamo.live.server import ServeSettings
from streamo.protocol import State

from .conftest import example_questions as _example_questions
from .conftest import running_server, wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_VIDEO = REPO / "dataset" / "example" / "videos" / "synth_0000.mp4"
EXAMPLE_RAW = REPO / "dataset" / "example" / "raw_data.json"


def _stream_lines(stream_model, capsys, *arguments) -> list[str]:
    assert main(["stream", "--model", str(stream_model.directory), "--max-pixels", str(MAX_PIXELS), *arguments]) == 0
    return capsys.readouterr().out.splitlines()


def _client_lines(server, capsys, *arguments) -> list[str]:
    assert main(["client", "--server", server.url, *arguments]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("output", [[], ["--json"]])
def test_client_prints_what_streamo_stream_prints(server, stream_model, planned_frames_dir, capsys, output):
    arguments = ["--video", str(planned_frames_dir), "--question", QUESTION, "--at", "0", *output]
    expected = _stream_lines(stream_model, capsys, *arguments)
    got = _client_lines(server, capsys, *arguments)
    assert len(got) == len(PLAN)
    if output:  # latencies differ; everything else is the same
        import json

        strip = lambda line: {k: v for k, v in json.loads(line).items() if k != "latency_ms"}  # noqa: E731
        assert [strip(line) for line in got] == [strip(line) for line in expected]
    else:
        assert got == expected
    states = [line.split()[1] for line in got] if not output else None
    if states:
        assert states == [state.value for state in PLAN]
        assert ANSWERS[3] in got[3] and ANSWERS[6] in got[6]


def test_shipped_example_over_the_socket_and_as_a_server_source(loaded_model, stream_model, capsys):
    arguments = ["--video", str(EXAMPLE_VIDEO), "--questions", str(EXAMPLE_RAW), "--sample", "0"]
    expected = _stream_lines(stream_model, capsys, *arguments)
    assert len(expected) > 10
    settings = ServeSettings(sources=[EXAMPLE_VIDEO.parent.resolve()])
    with running_server(loaded_model, settings) as server:
        assert _client_lines(server, capsys, *arguments) == expected

        async def play() -> list[str]:
            from streamo.engine.command import format_line

            client = await LiveClient.connect(server.url)
            questions = _example_questions(client)
            for moment, text in questions:
                await client.ask(text, moment)
            await client.play_source(path=EXAMPLE_VIDEO.name, realtime=False)
            lines, ended = [], None
            while (message := await client.receive()) is not None:
                if message.type == "event":
                    lines.append(format_line(message, 1.0))
                elif message.type == "source_ended":
                    ended = message
                    await client.close()
                elif message.type == "closed":
                    break
                else:
                    raise AssertionError(message)
            await client.disconnect()
            assert ended is not None and ended.reason == "end" and ended.frames == len(lines)
            return lines

        assert asyncio.run(play()) == expected


def test_eight_sessions_at_once_each_get_their_own_exact_stream(server):
    frames = [(turn, frame(turn)) for turn in range(len(PLAN))]

    async def many():
        return await asyncio.gather(*(_session(server.url, frames) for _ in range(8)))

    results = asyncio.run(many())
    for result in results:
        assert [event.state for event in result.events] == PLAN
        assert [event.text for event in result.events if event.state is State.RESPONSE] == [ANSWERS[3], ANSWERS[6]]
        assert result.events[0].questions == [QUESTION]
        assert result.closed.frames == len(PLAN) and result.closed.dropped == 0 and not result.errors
    wait_until(lambda: server.state.scheduler.open_sessions == 0)


def test_a_full_queue_drops_the_oldest_frames_and_reports_them(loaded_model):
    pictures = [encode_png(frame(turn % len(PLAN))) for turn in range(12)]

    async def flood():
        client = await LiveClient.connect(server.url)
        for turn, picture in enumerate(pictures):
            await client.send_frame(picture, float(turn))
        await client.close()
        events, closed = [], None
        while (message := await client.receive()) is not None:
            if message.type == "event":
                events.append(message)
            elif message.type == "closed":
                closed = message
                break
        await client.disconnect()
        return events, closed

    # A rate limit high enough that every frame is read: this is the queue's rule, not the rate limit's.
    with running_server(loaded_model, ServeSettings(max_queue=1, max_frame_rate=1000)) as server:
        events, closed = asyncio.run(flood())
    dropped = sum(event.dropped for event in events)
    assert dropped > 0 and len(events) + dropped == len(pictures)  # nothing lost
    assert closed.frames == len(events) and closed.dropped == dropped
    turns = [event.turn for event in events]
    assert turns == sorted(turns) and turns[-1] == len(pictures) - 1  # absolute times kept; the newest decided
    assert len(set(turns)) == len(turns) and len(turns) < len(pictures)


@pytest.mark.parametrize("config, check", [
    ({"bias": {"response": -1000.0}}, lambda states: State.RESPONSE not in states),
    ({"response_threshold": 0.0}, lambda states: set(states) == {State.RESPONSE}),
])
def test_config_changes_decisions_live(server, config, check):
    frames = [(turn, frame(turn)) for turn in range(len(PLAN))]

    async def run():
        client = await LiveClient.connect(server.url)
        await client.configure(**config)
        return await stream_video(client, frames, [(0.0, QUESTION)])

    result = asyncio.run(run())
    states = [event.state for event in result.events]
    assert len(states) == len(PLAN) and check(states), states


def test_a_client_leaving_mid_frame_frees_its_session(server):
    async def leave_mid_frame():
        client = await LiveClient.connect(server.url)
        await client.send_json({"type": "frame", "t": 0})
        await client.connection.send(encode_png(frame(0)))
        await client.disconnect()

    asyncio.run(leave_mid_frame())
    scheduler = server.state.scheduler
    wait_until(lambda: scheduler.open_sessions == 0 and not server.state.connections)
    frames = [(turn, frame(turn)) for turn in range(len(PLAN))]
    result = asyncio.run(_session(server.url, frames))
    assert [event.state for event in result.events] == PLAN


async def _session(url, frames, questions=((0.0, QUESTION),)):
    client = await LiveClient.connect(url)
    return await stream_video(client, frames, questions)


def test_engine_session_is_released_at_once(loaded_model):
    engines = []

    def tracked():
        engine = loaded_model.session()
        engines.append(weakref.ref(engine))
        return engine

    with running_server(loaded_model) as server:
        server.state.scheduler._open_engine = tracked

        async def leave():
            client = await LiveClient.connect(server.url)
            await client.send_frame(encode_png(frame(0)), 0.0)
            assert (await client.receive()).type == "event"
            await client.disconnect()

        asyncio.run(leave())
        assert len(engines) == 1
        wait_until(lambda: gc.collect() is not None and engines[0]() is None)


def test_a_flooding_session_does_not_hold_back_a_quiet_one(loaded_model):
    """Round-robin: while another session keeps its queue full, each frame of a quiet session is
    decided after at most one or two of the flooder's, not after the flooder's whole queue."""
    flood = [encode_png(frame(turn % len(PLAN))) for turn in range(40)]

    async def run(url):
        flooder = await LiveClient.connect(url)
        quiet = await LiveClient.connect(url)
        decided = []

        async def drain():
            while (message := await flooder.receive()) is not None:
                if message.type == "event":
                    decided.append(message.turn)
                elif message.type == "closed":
                    return

        reader = asyncio.create_task(drain())
        for turn, picture in enumerate(flood[:10]):
            await flooder.send_frame(picture, float(turn))
        overtaken = []
        for turn in range(5):
            await asyncio.sleep(0.05)
            for extra in range(6):  # keep the flooder's queue full
                index = 10 + turn * 6 + extra
                await flooder.send_frame(flood[index], float(index))
            before = len(decided)
            await quiet.send_frame(encode_png(frame(turn)), float(turn))
            event = await quiet.receive()
            assert event.type == "event"
            overtaken.append(len(decided) - before)
        await flooder.close()
        await reader
        await quiet.disconnect()
        await flooder.disconnect()
        return overtaken

    with running_server(loaded_model, ServeSettings(max_queue=8)) as server:
        overtaken = asyncio.run(run(server.url))
    assert max(overtaken) <= 2, overtaken  # serving the flooder first would decide 6 to 10 of its frames first


def test_a_model_fault_on_one_frame_is_an_error_and_the_session_goes_on(loaded_model):
    """The client learns which item failed, not the server's exception; the questions the failed
    frame took are given back, so repeated faults cannot refuse every later question."""
    def faulty():
        engine = loaded_model.session()
        open_turn = engine.context.open_turn

        def failing_open_turn(turn, *args, **kwargs):
            opened = open_turn(turn, *args, **kwargs)  # the turn's questions stop waiting, then the fault
            if turn == 1:
                raise RuntimeError("simulated fault")
            return opened

        engine.context.open_turn = failing_open_turn
        return engine

    async def run(url):
        client = await LiveClient.connect(url)
        await client.send_frame(encode_png(frame(0)), 0.0)
        replies = [await client.receive()]
        for _ in range(16):  # every question slot, all for the frame that fails
            await client.ask(QUESTION, 1.0)
        await client.send_frame(encode_png(frame(1)), 1.0)
        replies.append(await client.receive())
        await client.ask(QUESTION, 2.0)  # refused (too_many_questions) unless the failed frame gave the slots back
        await client.send_frame(encode_png(frame(2)), 2.0)
        replies.append(await client.receive())
        await client.disconnect()
        return replies

    with running_server(loaded_model) as server:
        server.state.scheduler._open_engine = faulty
        replies = asyncio.run(run(server.url))
    assert [r.type for r in replies] == ["event", "error", "event"]
    assert (replies[0].turn, replies[1].code, replies[2].turn) == (0, "internal", 2)
    assert "simulated" not in replies[1].message and "RuntimeError" not in replies[1].message and not replies[1].closes
    assert replies[2].questions == [QUESTION]
    assert replies[2].dropped == 1  # the failed frame is counted with the dropped: nothing goes missing
