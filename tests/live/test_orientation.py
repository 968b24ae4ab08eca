"""One picture per file: a rotated or anamorphic clip uploaded in the page (Chromium decodes it)
and the same clip played as a server-side source reach the model at one orientation and size,
with near-equal content. Real Chromium (Debian's, through Playwright), a real server on loopback."""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streamo.live.server import ServeSettings
from streamo.video import probe_video, smart_resize
from streamo.video.synthetic import frame_times, write_clip

from .conftest import running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install Debian's chromium (see .ci/run)")
    pytest.skip("no system Chromium (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

CLIPS = {
    # name: writer options; stored 224x112 (a phone's portrait clip is stored landscape)
    "portrait.mp4": {"rotation": 90},
    "upside_down.mov": {"rotation": 180},
    "anamorphic.mp4": {"sample_aspect": Fraction(4, 3)},
    "tall_pixels.mp4": {"sample_aspect": Fraction(3, 4)},
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("oriented")
    for name, options in CLIPS.items():
        write_clip(folder / name, frame_times(40, 10), 224, 112, gop=10, **options)  # 4 s
    return folder


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"])
        yield chromium
        chromium.close()


def _record_frames(state) -> dict[str, list]:
    """The pictures each session hands the model, as the scheduler receives them."""
    received: dict[str, list] = {}
    submit = state.scheduler.submit_frame

    def recording(session_id, image, t):
        received.setdefault(session_id, []).append(image.copy())
        return submit(session_id, image, t)

    state.scheduler.submit_frame = recording
    return received


@pytest.mark.parametrize("name", CLIPS)
def test_upload_and_server_source_give_one_picture(loaded_model, browser, clips, name):
    video = clips / name
    shown = probe_video(video)[1:3]
    height, width = smart_resize(shown[1], shown[0], max_pixels=loaded_model.max_pixels)
    with running_server(loaded_model, ServeSettings(sources=[clips.resolve()])) as server:
        received = _record_frames(server.state)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url)
        page.set_input_files("#file", str(video))
        page.click("#start")
        natural = page.wait_for_function(
            "() => { const v = document.getElementById('video'); return v.videoWidth ? [v.videoWidth, v.videoHeight] : null; }",
            timeout=30_000).json_value()
        page.locator("#detail").filter(has_text="Session closed").wait_for(timeout=90_000)
        page.check("input[name=source][value=server]")
        page.click("#load-sources")
        page.wait_for_selector(f"#server-source option[value='{name}']", state="attached")
        page.select_option("#server-source", name)
        page.click("#start")
        page.locator("#detail").filter(has_text="Session closed").nth(0).wait_for(timeout=90_000)
        page.wait_for_function("() => document.querySelectorAll('#timeline .cell').length >= 4", timeout=90_000)
        context.close()
    assert not errors, errors
    assert len(received) == 2, received.keys()
    uploaded, played = received.values()  # sessions in the order they were opened
    assert tuple(natural) == shown, "Chromium shows the clip at the size probing reports"
    assert len(uploaded) == len(played) == 4
    differences, others = [], {}
    for turn, (a, b) in enumerate(zip(uploaded, played)):
        assert a.size == b.size == (width, height), turn
        differences.append(_difference(a, b))
        for op in Image.Transpose:
            if b.transpose(op).size == a.size:
                others.setdefault(op, []).append(_difference(a, b.transpose(op)))
    # near-equal content (the page's player may land one frame later on a turn now and then) ...
    assert np.median(differences) < 8, differences
    # ... and the orientation: any other way of turning the server's pictures is far off
    assert all(np.mean(differences) < np.mean(other) / 3 for other in others.values()), (differences, others)


def _difference(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())
