"""The live page in a real browser: Debian's Chromium, driven by Playwright for Python (its
executable given, nothing downloaded), against a real ``streamo serve`` app on loopback."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine.stream_model import MAX_PIXELS
from streamo.cli import main
from streamo.live.server import ServeSettings

from .conftest import SAMPLE, running_server
from .conftest import example_question as _example_question

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "dataset" / "example"
EXAMPLE_VIDEO = EXAMPLE / "videos" / "synth_0000.mp4"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IMAGES = REPO / "docs" / "images"
SCREENSHOT = IMAGES / "live.png"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install Debian's chromium (see .ci/run)")
    pytest.skip("no system Chromium (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory) -> Path:
    """A clip made by `streamo synth`, converted to Y4M with PyAV for Chromium's fake camera."""
    import av

    folder = tmp_path_factory.mktemp("camera")
    assert main(["synth", "--out", str(folder), "--videos", "1", "--seed", "3"]) == 0
    source = next(folder.rglob("*.mp4"))
    target = folder / "camera.y4m"
    with av.open(str(source)) as video, av.open(str(target), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=video.streams.video[0].average_rate)
        stream.width, stream.height, stream.pix_fmt = video.streams.video[0].width, video.streams.video[0].height, "yuv420p"
        for picture in video.decode(video=0):
            for packet in stream.encode(picture.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return target


@pytest.fixture(scope="module")
def chromium(camera_clip):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
                  "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-video-capture={camera_clip}"],
        )
        yield browser
        browser.close()


class Page:
    """One tab on the page, with every console error and page error it raised."""

    def __init__(self, browser, url: str, permissions=("camera",), width: int = 1280, height: int = 900) -> None:
        self.context = browser.new_context(permissions=list(permissions), accept_downloads=True,
                                           viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(url)

    def play_file(self, video: Path) -> None:
        self.page.set_input_files("#file", str(video))
        self.page.click("#start")

    def wait_closed(self, timeout_s: float = 90) -> str:
        detail = self.page.locator("#detail").filter(has_text="Session closed")
        detail.wait_for(timeout=timeout_s * 1000)
        return detail.inner_text()

    def cells(self) -> list[tuple[int, str]]:
        return self.page.eval_on_selector_all(
            "#timeline .cell", "cells => cells.map(c => [Number(c.dataset.turn), c.dataset.state])")

    def answers(self) -> list[str]:
        return self.page.eval_on_selector_all("#answers li.answer", "items => items.map(i => i.innerText)")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page_on(chromium):
    opened = []

    def open_page(url: str, **options) -> Page:
        opened.append(Page(chromium, url, **options))
        return opened[-1]

    yield open_page
    for tab in opened:
        tab.close()


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    from streamo.video.synthetic import frame_times, write_clip

    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    write_clip(path, frame_times(80, 10.0), width=112, height=84)  # 8 s
    return path


def _png_header_problems(tab: Page, png: Path) -> list[str]:
    """Where the downloaded timeline's header does not fit its picture: ink in the right margin,
    or a wrapped line wider than the canvas, or a legend that does not end complete."""
    import numpy as np
    from PIL import Image

    picture = np.asarray(Image.open(png).convert("L"))
    problems = []
    if (picture[:, -3:] < 250).any():
        problems.append("ink in the right margin")
    lines, widths, width = tab.page.evaluate("""() => {
        const canvas = document.createElement("canvas");
        canvas.width = 60 * 15 + 52;
        const ctx = canvas.getContext("2d");
        ctx.font = PNG_FONT;
        const lines = wrapText(ctx, ["Streamo", page.ready.model, `${page.events.length} seconds`,
                                      "· silence  … standby  ! response  × dropped"], canvas.width - 2 * PNG_MARGIN);
        return [lines, lines.map((line) => ctx.measureText(line).width), canvas.width];
    }""")
    problems += [f"line {line!r} is {w:.0f} px of {width}" for line, w in zip(lines, widths) if w > width - 8]
    if not lines[-1].endswith("× dropped") or len(lines) < 2:
        problems.append(f"header lines {lines}")
    if picture.shape[1] != width:
        problems.append(f"picture {picture.shape[1]} px wide, canvas {width}")
    return problems


def test_page_plays_a_file_like_streamo_stream_and_its_download_scores(example_model, page_on, capsys, tmp_path):
    """docs/serving.md's words, literally: pick a video file, type a question and press Start
    (no Ask): the question goes with the first frame and the answers come at streamo stream's seconds."""
    import json

    from streamo.engine.model import EngineSettings, StreamModel
    from streamo.live.command import served_name

    question = _example_question()
    assert main(["stream", "--model", str(example_model), "--max-pixels", str(MAX_PIXELS),
                 "--video", str(EXAMPLE_VIDEO), "--question", question, "--at", "0", "--json"]) == 0
    expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {record["state"] for record in expected} == {"silence", "standby", "response"}
    loaded = StreamModel(example_model, EngineSettings(max_pixels=MAX_PIXELS), "cpu")
    with running_server(loaded, name=served_name(example_model)) as server:  # the long header of the demo
        tab = page_on(server.url)
        assert tab.page.title() == "Streamo live"
        tab.page.fill("#sample", str(SAMPLE))
        tab.page.set_input_files("#file", str(EXAMPLE_VIDEO))
        tab.page.fill("#question", question)
        tab.page.click("#start")
        summary = tab.wait_closed()
    cells = tab.cells()
    assert [turn for turn, _ in cells] == list(range(len(expected))), summary  # one cell a second
    assert [state for _, state in cells] == [record["state"] for record in expected]
    assert tab.page.eval_on_selector_all("#timeline .cell.has-question", "cells => cells.map(c => c.dataset.turn)") == ["0"]
    assert [text.split(">", 1)[1].strip() for text in tab.page.eval_on_selector_all(
        "#answers li.question", "items => items.map(i => i.innerText)")] == [f"Q: {question}"]
    assert tab.page.input_value("#question") == ""
    answers = [record["text"] for record in expected if record["state"] == "response"]
    assert [text.split(">", 1)[1].strip() for text in tab.answers()] == answers
    with tab.page.expect_download() as download:
        tab.page.click("#download-predictions")
    predictions = tmp_path / "predictions.jsonl"
    download.value.save_as(predictions)
    assert main(["eval", "--predictions", str(predictions), "--data", str(EXAMPLE / "stream_format.json"),
                 "--video-prefix", str(REPO)]) == 0
    scores = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert scores["state_accuracy"] == 1.0, scores  # the fitted model plays the truth; the page keeps its times
    with tab.page.expect_download() as picture:
        tab.page.click("#download-png")
    png = tmp_path / "timeline.png"
    picture.value.save_as(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not _png_header_problems(tab, png), _png_header_problems(tab, png)
    assert not tab.errors, tab.errors


def test_a_question_typed_mid_stream_is_shown_with_the_next_frame(server, page_on, short_clip):
    tab = page_on(server.url)
    tab.play_file(short_clip)
    tab.page.wait_for_selector("#timeline .cell[data-turn='1']")
    tab.page.fill("#question", "What happens now?")
    turn = tab.page.evaluate("() => { const turn = page.nextTurn; document.getElementById('ask').click(); return turn; }")
    tab.wait_closed()
    shown = tab.page.eval_on_selector_all("#timeline .cell.has-question", "cells => cells.map(c => Number(c.dataset.turn))")
    assert shown == [turn] and 2 <= turn < 8
    assert "Q: What happens now?" in tab.page.inner_text("#answers")
    assert not tab.errors, tab.errors


def test_the_webcam_streams_through_the_fake_camera(server, page_on):
    tab = page_on(server.url)
    tab.page.check("input[name=source][value=camera]")
    tab.page.click("#start")
    tab.page.wait_for_selector("#timeline .cell[data-turn='2']", timeout=60_000)
    tab.page.click("#stop")
    summary = tab.wait_closed()
    turns = [turn for turn, _ in tab.cells()]
    assert turns == list(range(len(turns))) and len(turns) >= 3, summary
    assert not tab.errors, tab.errors


def test_camera_permission_denied_says_what_to_do(server, page_on):
    tab = page_on(server.url, permissions=())
    tab.page.check("input[name=source][value=camera]")
    tab.page.click("#start")
    message = tab.page.locator("#message").filter(has_text="Camera permission was denied")
    message.wait_for(timeout=30_000)


def test_a_refused_key_and_a_full_server_each_say_so(loaded_model, page_on, short_clip):
    with running_server(loaded_model, ServeSettings(api_key="right-key")) as server:
        tab = page_on(server.url)
        tab.page.fill("#key", "wrong-key")
        tab.play_file(short_clip)
        tab.page.locator("#message").filter(has_text="refused the API key").wait_for(timeout=30_000)
        assert "wrong-key" not in tab.page.url
    with running_server(loaded_model, ServeSettings(max_sessions=1)) as server:
        from websockets.sync.client import connect

        with connect(server.url.replace("http", "ws") + "/v1/stream") as holder:
            assert '"ready"' in holder.recv()  # the one session slot is taken
            tab = page_on(server.url)
            tab.play_file(short_clip)
            tab.page.locator("#message").filter(has_text="The server is full").wait_for(timeout=30_000)


def test_the_threshold_slider_changes_decisions_live(server, page_on, short_clip):
    tab = page_on(server.url)
    tab.play_file(short_clip)
    tab.page.wait_for_selector("#timeline .cell")
    tab.page.check("#use-threshold")
    tab.page.locator("#threshold").fill("0")  # answer whenever P(Response) >= 0: every later second
    changed_at = tab.page.evaluate("() => page.nextTurn")
    tab.wait_closed()
    later = [state for turn, state in tab.cells() if turn > changed_at]
    assert later and set(later) == {"response"}
    assert not tab.errors, tab.errors


def test_screenshot_of_a_running_session(example_model, page_on):
    """docs/images/live.png comes from here: STREAMO_SCREENSHOT=1 bash scripts/test.sh tests/live/test_page.py."""
    from streamo.live.command import served_name
    from streamo.engine.model import EngineSettings, StreamModel

    loaded = StreamModel(example_model, EngineSettings(max_pixels=MAX_PIXELS), "cpu")
    with running_server(loaded, name=served_name(example_model)) as server:
        tab = page_on(server.url)
        tab.page.fill("#question", _example_question())
        tab.page.click("#ask")
        tab.play_file(EXAMPLE_VIDEO)
        tab.page.wait_for_selector("#timeline .cell[data-turn='17']", timeout=60_000)
        tab.page.locator("#timeline .cell[data-turn='13']").hover()
        assert "it is not a general assistant" in tab.page.inner_text("#model")
        picture = tab.page.screenshot(full_page=True)
    assert picture[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("STREAMO_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(picture)
    assert not tab.errors, tab.errors


def test_a_server_video_plays_and_a_lost_connection_offers_a_retry(loaded_model, page_on, short_clip):
    with running_server(loaded_model, ServeSettings(sources=[short_clip.parent.resolve()])) as server:
        tab = page_on(server.url)
        tab.page.check("input[name=source][value=server]")
        tab.page.click("#load-sources")
        tab.page.wait_for_selector(f"#server-source option[value='{short_clip.name}']", state="attached")
        tab.page.click("#start")
        tab.wait_closed()
        assert [turn for turn, _ in tab.cells()] == list(range(8))
        tab.page.focus("#timeline")
        tab.page.keyboard.press("End")
        tab.page.keyboard.press("ArrowLeft")
        assert tab.page.inner_text("#detail").startswith("6s-7s")  # the keyboard reads the timeline
        tab.page.check("input[name=source][value=file]")
        tab.play_file(short_clip)
        tab.page.wait_for_selector("#timeline .cell")
    tab.page.locator("#message").filter(has_text="connection to the server was lost").wait_for(timeout=30_000)
    assert tab.page.is_visible("#retry")
    assert not tab.errors, tab.errors


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _expected_answers() -> dict[int, str]:
    import json

    from streamo.protocol import State, parse_stream_messages

    record = json.loads((EXAMPLE / "stream_format.json").read_text())[SAMPLE]
    return {turn.index: turn.answer for turn in parse_stream_messages(record["messages"]).turns
            if turn.state is State.RESPONSE}


def test_the_demo_model_served_by_streamo_serve_decides_with_the_server_video_in_step(example_model, page_on):
    """The demo's closing hint, followed: ``streamo serve --sources dataset/example`` (a real
    process, with a key), the page plays the server's video with the example's question, typed and
    sent by Start, and names the sample for downloads from the annotations beside the videos."""
    import subprocess
    import sys
    import time

    import httpx

    key = "demo-page-key-51c2"
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamo.cli", "serve", "--model", str(example_model), "--port", str(port),
         "--sources", str(EXAMPLE)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "STREAMO_API_KEY": key},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "streamo serve did not start"
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        tab = page_on(url)
        tab.page.fill("#key", key)
        tab.page.check("input[name=source][value=server]")
        tab.page.click("#load-sources")
        tab.page.wait_for_selector("#server-source option[value='videos/synth_0000.mp4']", state="attached")
        tab.page.select_option("#server-source", "videos/synth_0000.mp4")
        tab.page.fill("#question", _example_question())
        tab.page.wait_for_function(f"document.getElementById('sample').value === '{SAMPLE}'")
        tab.page.click("#start")
        samples = []  # (player time, last decided second) while the source plays
        while not tab.page.locator("#detail").filter(has_text="Session closed").count():
            samples.append(tab.page.evaluate("""() => {
                const video = document.getElementById("video");
                return [video.currentTime, page.events.length ? page.events[page.events.length - 1].t : null,
                        video.currentSrc, video.readyState];
            }"""))
            time.sleep(0.5)
        header = tab.page.inner_text("#model")
    finally:
        server.terminate()
        log = server.communicate(timeout=60)[0]
    cells = tab.cells()
    states = {state for _, state in cells}
    assert {"standby", "response"} <= states, cells
    answered = {turn: text.split(">", 1)[1].strip() for turn, text in zip(
        [turn for turn, state in cells if state == "response"], tab.answers())}
    expected = _expected_answers()
    assert sorted(answered) == sorted(expected) and answered == expected  # at the annotated seconds
    assert "it is not a general assistant" in header and "fitted to the example clips" in header
    playing = [(at, decided) for at, decided, _, ready in samples if decided is not None and decided < 24 and ready >= 2]
    assert len(playing) >= 10, samples
    # The player runs on the clock the server plays the source by and is put back on the decided
    # second when it drifts a second away: it trails by under a second (it starts after the token
    # and the file's first bytes), or leads by the second being decided plus the model's latency.
    apart = [(at, decided) for at, decided in playing if not -1.1 <= at - decided <= 2.5]
    assert not apart, (apart, playing)
    assert max(at for at, _ in playing) > 15
    sources = {source for _, _, source, _ in samples if source}
    assert sources and all("/v1/media/" in source and key not in source for source in sources)
    assert "session " in log and ": start" in log and ": end (client)" in log, log
    assert key not in log
    assert not tab.errors, tab.errors


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """A synthetic 5-minute clip (2 frames a second, small), for a long stream played fast."""
    from streamo.video.synthetic import frame_times, write_clip

    path = tmp_path_factory.mktemp("long") / "long.mp4"
    write_clip(path, frame_times(600, 2.0), width=112, height=84)
    return path


def _layout_problems(tab: Page, width: int) -> list[str]:
    return tab.page.evaluate("""(width) => {
        const problems = [];
        const root = document.documentElement;
        if (root.scrollWidth > width) problems.push(`page ${root.scrollWidth} px wide`);
        for (const element of document.querySelectorAll("body *")) {
            const box = element.getBoundingClientRect();
            if (box.width && (box.right > width + 0.5 || box.left < -0.5) && !element.closest("#timeline, .review"))
                problems.push(`${element.tagName}#${element.id}.${element.className} spans ${box.left}-${box.right}`);
        }
        const list = document.getElementById("answers");
        const count = list.children.length;
        if (count) {
            const context = document.createElement("canvas").getContext("2d");
            context.font = getComputedStyle(list.children[count - 1]).font;
            const need = context.measureText(`${count}. `).width;
            const room = parseFloat(getComputedStyle(list).paddingLeft);
            if (need > room) problems.push(`answer number ${count} needs ${need} px, has ${room}`);
        }
        return problems;
    }""", width)


def test_a_phone_width_page_never_scrolls_sideways_over_a_five_minute_stream(server, page_on, long_clip):
    tab = page_on(server.url, width=360, height=740)
    for number in range(12):  # twelve questions: list numbers up to 12
        tab.page.fill("#question", f"Question number {number + 1}: what is on the screen at this moment?")
        tab.page.click("#ask")
    tab.page.evaluate("document.getElementById('video').defaultPlaybackRate = 12")
    tab.play_file(long_clip)
    problems = []
    for turn in (30, 120, 200):
        tab.page.wait_for_selector(f"#timeline .cell[data-turn='{turn}']", timeout=120_000)
        problems += _layout_problems(tab, 360)
    tab.wait_closed(timeout_s=180)
    problems += _layout_problems(tab, 360)
    assert not problems, problems
    last = max(turn for turn, _ in tab.cells())
    assert last >= 295
    rows = tab.page.eval_on_selector_all("#timeline .minute", "rows => rows.map(r => r.getBoundingClientRect().height)")
    assert len(rows) == 5 and min(rows) > 30  # a minute's row wraps onto several lines
    assert len(tab.page.eval_on_selector_all("#answers li", "items => items")) >= 12
    if os.environ.get("STREAMO_SCREENSHOT"):
        tab.page.evaluate("window.scrollTo(0, 0)")
        (IMAGES / "live-phone.png").write_bytes(tab.page.screenshot(full_page=True))
    assert not tab.errors, tab.errors


HAND_WRITTEN = [{
    "video_name": "clip.mp4", "video_path": "videos/clip.mp4", "source": "my-videos", "task_type": "Narration",
    "question": [{"content": "What happens to the shapes?", "time": 1}],
    "response": [
        {"content": "The circle moved.", "st_time": 2, "end_time": 4.5, "time": ""},
        {"content": "A square appeared.", "st_time": "", "end_time": "", "time": 6},
    ],
    "duration": 8,
}]


def test_label_mode_exports_what_streamo_convert_accepts_equal_to_a_hand_written_file(server, page_on, short_clip, tmp_path,
                                                                                        capsys):
    import json

    url = server.url
    tab = page_on(url + "/label")
    tab.page.set_input_files("#file", str(short_clip))
    tab.page.wait_for_function("() => document.getElementById('video').readyState >= 1")
    page, video = tab.page, "document.getElementById('video')"

    def at(seconds: float, key: str, text: str | None = None) -> None:
        page.evaluate(f"{video}.currentTime = {seconds}")
        page.wait_for_function(f"() => Math.abs({video}.currentTime - {seconds}) < 0.01 && !{video}.seeking")
        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press(key)
        if text is not None:
            page.keyboard.type(text)
            page.keyboard.press("Enter")

    at(1, "q", "What happens to the shapes?")
    at(2, "s")
    at(4.5, "e", "The circle moved.")
    at(6, "a", "A square appeared.")
    with page.expect_download() as download:
        page.click("#export")
    exported = tmp_path / "raw_data.json"
    download.value.save_as(exported)
    assert json.loads(exported.read_text()) == HAND_WRITTEN
    assert not tab.errors, tab.errors
    (tmp_path / "videos").mkdir()
    shutil.copy(short_clip, tmp_path / "videos" / "clip.mp4")
    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps(HAND_WRITTEN))
    outputs = []
    for raw in (exported, hand):
        out = tmp_path / f"{raw.stem}.stream.json"
        assert main(["convert", "--input", str(raw), "--output", str(out), "--video-prefix", str(tmp_path), "--strict"]) == 0
        outputs.append(json.loads(out.read_text()))
    assert outputs[0] == outputs[1] and len(outputs[0]) == 1
    capsys.readouterr()


def test_label_mode_reviews_predictions_against_the_truth_and_shows_a_planted_mismatch(server, page_on, tmp_path):
    import json

    from streamo.protocol import parse_stream_messages

    record = json.loads((EXAMPLE / "stream_format.json").read_text())[SAMPLE]
    turns = parse_stream_messages(record["messages"]).turns
    planted = next(turn.index for turn in turns if turn.state.value == "standby")
    rows = [{"sample": SAMPLE, "t": turn.start, "state": "silence" if turn.index == planted else turn.state.value,
             "text": turn.answer} for turn in turns]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    url = server.url
    tab = page_on(url + "/label")
    tab.page.set_input_files("#import", str(EXAMPLE / "raw_data.json"))
    tab.page.set_input_files("#predictions", str(predictions))  # on sample 0, as the page first shows
    tab.page.locator("#review-summary").filter(has_text=f"No predictions for sample 0: the file has predictions "
                                                        f"for sample {SAMPLE} only.").wait_for()
    assert not tab.page.eval_on_selector_all(".review-row", "rows => rows")
    tab.page.select_option("#sample-select", str(SAMPLE))
    summary = tab.page.locator("#review-summary").filter(has_text="differ")
    summary.wait_for()
    assert summary.inner_text() == f"1 of {len(turns)} seconds differ: {planted}s-{planted + 1}s."
    marked = tab.page.eval_on_selector_all(".review-row.predicted .cell.mismatch", "cells => cells.map(c => Number(c.dataset.turn))")
    assert marked == [planted]
    truth = tab.page.eval_on_selector_all(".review-row.truth .cell", "cells => cells.map(c => c.dataset.state)")
    assert truth == [turn.state.value for turn in turns]  # the page converts by streamo convert's rules
    if os.environ.get("STREAMO_SCREENSHOT"):  # docs/images/label.png
        tab.page.locator(".review-row.predicted .cell.mismatch").hover()
        (IMAGES / "label.png").write_bytes(tab.page.screenshot(full_page=True))
    assert not tab.errors, tab.errors


def test_an_empty_question_and_stop_each_say_what_happens(server, page_on, long_clip):
    tab = page_on(server.url)
    tab.page.fill("#question", "   ")
    tab.page.click("#ask")
    tab.page.locator("#message").filter(has_text="Type a question first").wait_for(timeout=10_000)
    tab.play_file(long_clip)
    tab.page.wait_for_selector("#timeline .cell[data-turn='3']", timeout=60_000)
    # The frames already sent are still decided: the page says so from the click until the close.
    label, disabled, detail = tab.page.evaluate("""() => {
        const stop = document.getElementById("stop");
        stop.click();
        return [stop.textContent, stop.disabled, document.getElementById("detail").textContent];
    }""")
    assert label == "Stopping…" and disabled and detail.startswith("Stopping:"), detail
    summary = tab.wait_closed()
    assert tab.page.inner_text("#stop") == "Stop" and tab.page.is_enabled("#start"), summary
    assert not tab.errors, tab.errors


def test_a_server_video_with_annotations_beside_it_names_the_sample_for_downloads(loaded_model, page_on):
    """With ``--sources dataset/example`` the server offers the example's raw_data.json beside its
    videos: the page takes the sample id from it (the one sample on the video whose first
    question is the one typed), so the predictions download scores against the right sample."""
    with running_server(loaded_model, ServeSettings(sources=[EXAMPLE.resolve()])) as server:
        tab = page_on(server.url)
        tab.page.check("input[name=source][value=server]")
        tab.page.click("#load-sources")
        tab.page.wait_for_selector("#server-source option[value='videos/synth_0000.mp4']", state="attached")
        tab.page.select_option("#server-source", "videos/synth_0000.mp4")
        note = tab.page.inner_text("#sample-note")
        assert "4 samples" in note and "(0, 1, 2, 3)" in note, note
        tab.page.fill("#question", _example_question())
        assert tab.page.input_value("#sample") == str(SAMPLE)
        assert f"sample {SAMPLE} (Narration)" in tab.page.inner_text("#sample-note")
        tab.page.select_option("#server-source", "videos/synth_0001.mp4")
        assert tab.page.input_value("#sample") == "6"  # the same question on the other clip
        tab.page.fill("#sample", "7")  # a typed id is never replaced
        tab.page.select_option("#server-source", "videos/synth_0000.mp4")
        assert tab.page.input_value("#sample") == "7"
    assert not tab.errors, tab.errors


def _label_rows(tab: Page) -> list[list[str]]:
    return tab.page.eval_on_selector_all("#items tbody tr", """rows => rows.map(row => [row.cells[0].textContent,
        ...[...row.querySelectorAll("input")].filter(i => i.type !== "button").map(i => i.value)])""")


def test_label_keys_work_right_after_picking_a_video_and_two_answers_in_one_second_are_warned(server, page_on,
                                                                                              short_clip):
    tab = page_on(server.url + "/label")
    page, video = tab.page, "document.getElementById('video')"
    with page.expect_file_chooser() as chooser:  # picked as a person picks it: the chooser keeps the focus
        page.click("#file")
    chooser.value.set_files(str(short_clip))  # and no click anywhere after the pick
    page.wait_for_function(f"() => {video}.readyState >= 1")
    page.keyboard.press(" ")
    page.wait_for_function(f"() => !{video}.paused")
    page.keyboard.press(" ")
    page.wait_for_function(f"() => {video}.paused")
    page.evaluate(f"{video}.currentTime = 2.3")
    page.wait_for_function(f"() => !{video}.seeking")
    page.keyboard.press("q")
    page.keyboard.type("What moves?")
    page.keyboard.press("Enter")
    page.keyboard.press("a")
    page.keyboard.type("The circle moved.")
    page.keyboard.press("Enter")
    assert page.is_hidden("#items-warning")
    page.evaluate(f"{video}.currentTime = 1")
    page.wait_for_function(f"() => Math.abs({video}.currentTime - 1) < 0.01 && !{video}.seeking")
    page.keyboard.press("s")
    page.evaluate(f"{video}.currentTime = 1.5")  # an event ending at 1.5 s is answered in 2s-3s
    page.wait_for_function(f"() => Math.abs({video}.currentTime - 1.5) < 0.01 && !{video}.seeking")
    page.keyboard.press("e")
    page.keyboard.type("A square appeared.")
    page.keyboard.press("Enter")
    assert _label_rows(tab) == [["event", "", "1", "1.5", "A square appeared."], ["question", "2.3", "What moves?"],
                                ["instant", "2.3", "", "", "The circle moved."]]
    warning = page.inner_text("#items-warning")
    assert warning.startswith("response[0] and response[1] answer in the same second (2s-3s): "
                              "streamo convert joins them"), warning
    page.fill("#items tbody tr:last-child .f-time", "5")  # the instant answer
    page.keyboard.press("Tab")
    assert page.is_hidden("#items-warning")  # moved to 5s-6s: nothing shared any more
    assert not tab.errors, tab.errors


def test_label_page_at_phone_width_labels_every_time_box_and_wraps_the_review(server, page_on, tmp_path):
    import json

    from streamo.protocol import parse_stream_messages

    record = json.loads((EXAMPLE / "stream_format.json").read_text())[SAMPLE]
    turns = parse_stream_messages(record["messages"]).turns
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({"sample": SAMPLE, "t": turn.start, "state": turn.state.value}) + "\n"
                                   for turn in turns))
    tab = page_on(server.url + "/label", width=360, height=740)
    tab.page.set_input_files("#import", str(EXAMPLE / "raw_data.json"))
    tab.page.select_option("#sample-select", str(SAMPLE))
    tab.page.set_input_files("#predictions", str(predictions))
    tab.page.locator("#review-summary").filter(has_text="agree").wait_for()
    problems = tab.page.evaluate("""(width) => {
        const problems = [];
        if (document.documentElement.scrollWidth > width) problems.push(`page ${document.documentElement.scrollWidth} px wide`);
        for (const element of document.querySelectorAll("body *")) {
            const box = element.getBoundingClientRect();
            if (box.width && (box.right > width + 0.5 || box.left < -0.5))
                problems.push(`${element.tagName}.${element.className} spans ${box.left}-${box.right}`);
        }
        const review = document.getElementById("review");
        if (review.scrollWidth > review.clientWidth) problems.push(`review ${review.scrollWidth} px in ${review.clientWidth}`);
        const cells = [...review.querySelectorAll(".review-row.predicted .cell")];
        const room = review.getBoundingClientRect();
        const shown = cells.filter((cell) => cell.getBoundingClientRect().left >= room.left
                                             && cell.getBoundingClientRect().right <= room.right);
        if (shown.length !== cells.length) problems.push(`${shown.length} of ${cells.length} seconds in view`);
        if (getComputedStyle(document.querySelector("#items thead")).display !== "none") problems.push("header shown");
        for (const input of document.querySelectorAll("#items input[type=number]")) {
            const named = getComputedStyle(input.parentElement, "::before").content;
            const field = input.className.replace("f-", "");
            const want = { time: "time", st_time: "start", end_time: "end" }[field];
            if (named !== `"${want}"`) problems.push(`${field} box labelled ${named}`);
        }
        return problems;
    }""", 360)
    assert not problems, problems
    assert len(tab.page.eval_on_selector_all("#items input[type=number]", "inputs => inputs")) >= 6
    assert not tab.errors, tab.errors
