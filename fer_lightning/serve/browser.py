"""fer-serve's page in a real browser: Chromium driven by Playwright, for the tests and the README screenshot.

    python -m fer_lightning.serve.browser --model model.onnx --output docs/img/demo.png   # or --ckpt last.ckpt

starts the server on a free local port, opens the page in headless Chromium, uploads a photo (matplotlib's
Grace Hopper by default), waits for the boxes and heat maps, and saves a screenshot: the same steps as
``tests/test_serve_browser.py``. Playwright's own browser download is not needed: it drives the system
Chromium (``apt-get install chromium``; ``FER_CHROMIUM`` or ``--chromium`` names another executable).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI
    from playwright.sync_api import BrowserContext, Page

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def sample_photo() -> Path:
    """matplotlib's sample photo of Grace Hopper (one frontal face), inside its wheel: nothing is downloaded."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def find_chromium() -> str | None:
    """``FER_CHROMIUM``, else the first Chromium or Chrome on the PATH."""
    if os.environ.get("FER_CHROMIUM"):
        return os.environ["FER_CHROMIUM"]
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def unavailable() -> str | None:
    """Why a browser cannot be driven here (a reason to skip), or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if find_chromium() is None:
        return "no Chromium executable: apt-get install chromium (or set FER_CHROMIUM)"
    return None


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", timeout_s: float = 30) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port in a background thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()


@contextmanager
def chromium(
    executable: str | None = None, fake_video: Path | None = None, viewport: tuple[int, int] = (1280, 800)
) -> Iterator[BrowserContext]:
    """A browser context in headless Chromium (``context.new_page()`` for a tab). ``fake_video``: a .y4m or
    .mjpeg file that the browser's fake webcam plays (``--use-file-for-fake-video-capture``), camera allowed."""
    from playwright.sync_api import sync_playwright

    executable = executable or find_chromium()
    if executable is None:
        raise RuntimeError("no Chromium executable: apt-get install chromium (or set FER_CHROMIUM)")
    args = []
    if fake_video is not None:
        args += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={fake_video}",
        ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=args)
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
            if fake_video is not None:
                context.grant_permissions(["camera"])
            yield context
        finally:
            browser.close()


def write_y4m(rgb: np.ndarray, path: str | Path, frames: int = 2) -> Path:
    """A still RGB image (H, W, 3) as a short Y4M video (4:2:0), for Chromium's fake webcam."""
    import cv2

    h, w = (d - d % 2 for d in rgb.shape[:2])
    yuv = cv2.cvtColor(np.ascontiguousarray(rgb[:h, :w]), cv2.COLOR_RGB2YUV_I420)
    path = Path(path)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + yuv.tobytes())
    return path


def open_page(page: Page, base_url: str, timeout_ms: float = 30_000) -> None:
    """Load the page and wait until it has the model's description from ``/api/info``."""
    page.goto(f"{base_url}/")
    page.wait_for_function("document.getElementById('model-info').textContent.startsWith('model ')", timeout=timeout_ms)


def upload_photo(page: Page, photo: str | Path, explain: bool = True, timeout_ms: float = 30_000) -> list[str]:
    """Pick ``photo`` in the page's file input, wait for the face boxes (and heat maps) and the photo to show;
    returns the labels drawn on the boxes ("happy 87%")."""
    page.set_checked("#explain", explain)
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#boxes .face-box", timeout=timeout_ms)
    if explain:
        page.wait_for_selector("#faces .heatmap", timeout=timeout_ms)
    page.wait_for_function(
        "[...document.images].every((img) => img.hidden || (img.complete && img.naturalWidth > 0))",
        timeout=timeout_ms,
    )
    return page.locator("#boxes .face-label").all_inner_texts()


def demo_screenshot(
    app: FastAPI,
    output: str | Path,
    photo: str | Path | None = None,
    executable: str | None = None,
    context: BrowserContext | None = None,
) -> list[str]:
    """Upload ``photo`` on the page served by ``app`` and write a screenshot to ``output``; returns the labels.
    ``context``: a browser already open (Playwright's sync API runs one per thread), else Chromium is started."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with running(app) as url, nullcontext(context) if context else chromium(executable) as browser:
        page = browser.new_page()
        try:
            open_page(page, url)
            labels = upload_photo(page, photo or sample_photo())
            page.screenshot(path=str(output), full_page=True)
        finally:
            page.close()
    return labels


def main(argv: Sequence[str] | None = None) -> int:
    from fer_lightning.deploy.options import load_recognizer
    from fer_lightning.deploy.pretrained import DEFAULT
    from fer_lightning.serve.app import create_app, model_name

    parser = argparse.ArgumentParser(description="Screenshot fer-serve's page with a photo analysed (README image).")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model", default=DEFAULT, help="a shipped model name or an ONNX file")
    model.add_argument("--ckpt", type=Path, help="a training checkpoint (Grad-CAM heat maps)")
    parser.add_argument("--photo", type=Path, help="default: matplotlib's Grace Hopper sample")
    parser.add_argument("--output", type=Path, default=Path("docs/img/demo.png"))
    parser.add_argument("--chromium", help="the Chromium executable (default: FER_CHROMIUM, else from the PATH)")
    args = parser.parse_args(argv)
    reason = unavailable() if args.chromium is None else None
    if reason:
        print(f"fer-serve screenshot: {reason}", file=sys.stderr)
        return 2
    options = argparse.Namespace(
        model=args.model, ckpt=args.ckpt, detector="auto", align=True, margin=0.1, max_side=None, device="auto"
    )
    recognizer = load_recognizer(options)
    labels = demo_screenshot(create_app(recognizer, model_name(options)), args.output, args.photo, args.chromium)
    print(f"{args.output}: {', '.join(labels)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
