"""fer-serve's page in a real browser: headless Chromium (Debian's, through Playwright) uploads a photo, shows
bad input, and runs the webcam loop on a fake camera that films Grace Hopper."""

from __future__ import annotations

import io
import re
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_lightning.serve.browser import unavailable

REASON = unavailable() if find_spec("fastapi") else "fastapi is not installed (pip install -e '.[serve]')"
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no browser test: {REASON}")

if REASON is None:
    from fer_lightning.deploy import EmotionRecognizer
    from fer_lightning.labels import EMOTIONS
    from fer_lightning.serve.app import create_app
    from fer_lightning.serve.browser import chromium, open_page, running, upload_photo, write_y4m
    from tests.helpers.deploy import GRACE_HOPPER, tiny_onnx

TIMEOUT_MS = 60_000  # a shared 2-core machine can be slow to start Chromium


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory) -> EmotionRecognizer:
    return EmotionRecognizer.from_onnx(tiny_onnx(tmp_path_factory))


@pytest.fixture(scope="module")
def server(recognizer):
    with running(create_app(recognizer, "tiny.onnx")) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One Chromium for the module, its fake webcam playing a still of Grace Hopper."""
    with Image.open(GRACE_HOPPER) as photo:
        frame = np.asarray(photo.convert("RGB").resize((320, 376)))
    video = write_y4m(frame, tmp_path_factory.mktemp("camera") / "grace.y4m")
    with chromium(fake_video=video) as context:
        context.set_default_timeout(TIMEOUT_MS)
        yield context


@pytest.fixture
def page(browser, server):
    page = browser.new_page()
    open_page(page, server, TIMEOUT_MS)
    yield page
    page.close()


def test_upload_shows_boxes_labels_bars_and_heat_map(page, recognizer, tmp_path):
    labels = upload_photo(page, GRACE_HOPPER, explain=True, timeout_ms=TIMEOUT_MS)
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
    (expected,) = recognizer.predict(GRACE_HOPPER)
    assert labels == [f"{expected.emotion} {round(expected.confidence * 100)}%"]
    assert re.fullmatch(rf"({'|'.join(EMOTIONS)}) \d+%", labels[0])
    assert page.locator("#status").inner_text() == "1 face found in grace_hopper.jpg."
    assert not page.locator("#error").is_visible()
    card = page.locator(".face-card")
    assert card.count() == 1 and expected.emotion in card.locator("h2").inner_text()
    assert card.locator(".bar-row .bar-name").all_inner_texts() == list(EMOTIONS)
    assert card.locator(".bar-row.top .bar-name").inner_text() == expected.emotion
    assert page.evaluate("document.querySelector('.heatmap').naturalWidth") == 192
    # The box sits on the face: the same place, in page pixels, as the record's box scaled to the shown photo.
    photo, box = page.locator("#photo").bounding_box(), page.locator(".face-box").bounding_box()
    scale = photo["width"] / 512
    x, y, w, h = expected.box
    assert box["x"] - photo["x"] == pytest.approx(x * scale, abs=3)
    assert box["y"] - photo["y"] == pytest.approx(y * scale, abs=3)
    assert box["width"] == pytest.approx(w * scale, abs=3)
    with Image.open(tmp_path / "demo.png") as shot:
        assert shot.width == 1280 and shot.height >= 600


def test_bad_input_is_explained_on_the_page(page):
    page.set_input_files("#file", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"no pixels here"})
    page.wait_for_selector("#error:not([hidden])")
    assert "notes.txt is not an image" in page.locator("#error").inner_text()
    assert page.locator(".face-box").count() == 0

    blank = io.BytesIO()
    Image.new("RGB", (300, 200), "white").save(blank, format="PNG")
    page.set_input_files("#file", {"name": "wall.png", "mimeType": "image/png", "buffer": blank.getvalue()})
    page.wait_for_function("document.getElementById('error').textContent.includes('wall.png')")
    assert "no face found in wall.png" in page.locator("#error").inner_text()


def test_webcam_frames_are_boxed_live(page):
    page.set_checked("#explain", False)
    page.click("#webcam")
    page.wait_for_selector("#boxes .face-box")
    # a tracked person: "#1 happy 87%", the smoothed emotion, and the same ID frame after frame
    assert re.fullmatch(rf"#1 ({'|'.join(EMOTIONS)}) \d+%", page.locator(".face-label").first.inner_text())
    assert page.locator("#video").is_visible() and page.locator("#webcam").inner_text() == "Stop webcam"
    page.wait_for_function("document.getElementById('status').textContent === '1 face found.'")
    page.wait_for_function("Number(document.getElementById('plot').dataset.points) >= 3")  # the live plot fills
    assert page.locator("#plot").is_visible() and page.locator("#plot").get_attribute("data-track") == "1"
    assert page.locator(".face-card h2").first.inner_text().startswith("Person #1: ")
    page.click("#webcam")
    assert page.locator("#webcam").inner_text() == "Start webcam" and not page.locator("#plot").is_visible()


def test_screenshot_command_writes_the_readme_image(tmp_path, recognizer, browser):
    from fer_lightning.serve.browser import demo_screenshot

    out = tmp_path / "img" / "demo.png"
    labels = demo_screenshot(create_app(recognizer, "tiny.onnx"), out, context=browser)
    assert len(labels) == 1 and Path(out).stat().st_size > 10_000
