"""``fer-serve``: a web page and a JSON API around ``EmotionRecognizer``.

    fer-serve                                   # the shipped fer2013 model, http://127.0.0.1:8000/
    fer-serve --model model.onnx --port 8080    # an ONNX model from fer-export
    fer-serve --ckpt last.ckpt                  # a checkpoint: Grad-CAM heat maps (needs torch)

``POST /api/predict`` takes an image, as the ``image`` field of a multipart form (``curl -F image=@photo.jpg``) or
as the raw request body with an ``image/*`` Content-Type, and returns ``{"source", "width", "height",
"records"}``: ``records`` are exactly ``fer-predict``'s JSON records, one per face. ``?explain=true`` adds
``explanations``: per face, its 48x48 crop with the heat map of the predicted emotion as a PNG data URL. Errors
are JSON ``{"error": message, "code": ...}`` with a 4xx status: 400 (no image in the request), 413 (upload or
image too large), 415 (not an image), 422 (no face found; its body also has the ``no_face`` record).

Uploads are held in memory only, never written to disk: the body is read by this module, up to the size limit,
and multipart forms are parsed in memory (Starlette's own form parser spools files over 1 MB to a temporary
file). ONNX models run without torch; the heat maps are Grad-CAM for checkpoints, occlusion for ONNX models.
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image, ImageOps, UnidentifiedImageError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from fer_lightning.deploy.explain import METHODS, Explainer, overlay
from fer_lightning.deploy.options import add_recognizer_arguments, check_recognizer_arguments, load_recognizer
from fer_lightning.deploy.recognizer import EmotionRecognizer
from fer_lightning.deploy.records import make_record
from fer_lightning.deploy.tracking import FaceTracks

log = logging.getLogger("fer_lightning.serve")
STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD_MB = 10.0
DEFAULT_MAX_PIXELS = 50_000_000  # decoded size: a small file can hold a huge image (a "decompression bomb")
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers around the file, allowed on top of the limit
DRAIN_FACTOR = 4  # a too-large body is read (and dropped) up to this many limits, so the client gets the 413
FIELD_NAMES = ("image", "file")
MAX_STREAMS = 32  # webcam streams whose tracks are kept at once
STREAM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ApiError(Exception):
    """A 4xx answer: ``{"error": message, "code": code, **extra}``."""

    def __init__(self, status: int, code: str, message: str, **extra) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


# ---- reading the upload ------------------------------------------------------------------------------------------
async def read_body(request: Request, limit: int, slack: int = FORM_OVERHEAD) -> bytes:
    """The request body, in memory; more than ``limit`` + ``slack`` bytes (a form's boundaries and headers) is a
    413. A too-large body is still read, and dropped, up to ``DRAIN_FACTOR`` limits, so that a browser gets the
    answer instead of a connection reset in the middle of its upload."""
    declared = request.headers.get("content-length", "")
    over = declared.isdigit() and int(declared) > limit + slack
    body, received = bytearray(), 0
    async for chunk in request.stream():
        received += len(chunk)
        over = over or received > limit + slack
        if over:
            body.clear()
            if received > DRAIN_FACTOR * limit:
                break
        else:
            body += chunk
    if over:
        raise ApiError(413, "too_large", f"the upload is larger than the {limit / 2**20:g} MB limit")
    return bytes(body)


def parse_form(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/form-data body: (headers with lower-case names, content), all in memory."""
    # Not Starlette's request.form(): it writes file parts over 1 MB to a temporary file (only a process-wide class
    # attribute, MultiPartParser.spool_max_size, changes that) and raises its own errors, not our JSON 400s; this
    # drives python-multipart's parser, the one Starlette uses, with the body already read under the size limit.
    parts: list[tuple[dict[str, str], bytes]] = []
    state: dict = {}

    def on_part_begin() -> None:
        state.update(headers={}, data=bytearray(), field=b"", value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"].decode("utf-8", "replace")
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"] += data[start:end]

    def on_part_end() -> None:
        parts.append((state["headers"], bytes(state["data"])))

    def on_end() -> None:
        state["ended"] = True

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
        "on_end": on_end,
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        raise ApiError(400, "bad_form", f"the multipart form cannot be parsed: {exc}") from exc
    if not state.get("ended"):
        raise ApiError(400, "bad_form", "the multipart form is cut short: it has no closing boundary")
    return parts


def extract_image(body: bytes, content_type: str, name: str | None, limit: int) -> tuple[bytes, str]:
    """The image bytes and a name for them, from a multipart form (field ``image`` or ``file``, else the first
    file) or a raw body."""
    kind, params = parse_options_header(content_type)
    if kind == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise ApiError(400, "bad_form", "the multipart Content-Type has no boundary")
        files = []
        for headers, data in parse_form(body, boundary):
            _, options = parse_options_header(headers.get("content-disposition", ""))
            field = options.get(b"name", b"").decode("utf-8", "replace")
            filename = options.get(b"filename")
            if field in FIELD_NAMES or filename is not None:
                files.append((field in FIELD_NAMES, (filename or b"").decode("utf-8", "replace"), data))
        if not files:
            raise ApiError(400, "no_image", "the form has no file: send the image in the 'image' field")
        _, filename, data = sorted(files, key=lambda f: not f[0])[0]
        name = name or filename or "upload"
    elif kind.startswith(b"image/") or kind in (b"application/octet-stream", b""):
        data, name = body, name or "upload"
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"cannot read a {kind.decode('latin-1')} request: send the image as the 'image' field of a "
            "multipart/form-data form, or as the request body with an image/* Content-Type",
        )
    if not data:
        raise ApiError(400, "empty", f"{name}: the upload is empty")
    if len(data) > limit:
        raise ApiError(413, "too_large", f"{name}: the image is larger than the {limit / 2**20:g} MB limit")
    return data, name


def decode_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A fully decoded PIL image, upright by its EXIF orientation; 415 if Pillow cannot read it, 413 if it has
    more than ``max_pixels`` pixels (checked before decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > max_pixels:
                raise ApiError(
                    413,
                    "too_large",
                    f"{name}: {image.width}x{image.height} pixels is more than the {max_pixels / 1e6:g} megapixel "
                    "limit",
                )
            image.load()
            return ImageOps.exif_transpose(image)
    except ApiError:
        raise
    except UnidentifiedImageError as exc:
        raise ApiError(415, "not_an_image", f"{name} is not an image (no image format recognised)") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ApiError(415, "not_an_image", f"{name} is not an image this server can read ({exc})") from exc


def png_data_url(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ---- the app -----------------------------------------------------------------------------------------------------
class Service:
    """The recognizer (and heat maps) behind a lock: OpenCV's cascade is not safe to share between threads."""

    def __init__(self, recognizer: EmotionRecognizer, explain: str = "auto", smooth: float = 0.5) -> None:
        self.recognizer = recognizer
        # Webcam streams (``stream=ID``): each its own tracks and smoothing, as fer-predict gives a video; the
        # least recently seen are forgotten beyond MAX_STREAMS.
        self.streams: OrderedDict[str, FaceTracks] = OrderedDict()
        self.smooth = smooth
        self.explainer: Explainer | None = None
        if explain != "off":
            try:
                self.explainer = Explainer(recognizer, explain)
            except ValueError as exc:
                log.warning("no heat maps: %s", exc)
        self.lock = threading.Lock()

    def tracks(self, stream: str) -> FaceTracks:
        tracks = self.streams.pop(stream, None) or FaceTracks(self.smooth)
        self.streams[stream] = tracks
        while len(self.streams) > MAX_STREAMS:
            self.streams.popitem(last=False)
        return tracks

    def analyse(
        self, image: Image.Image, name: str, explain: bool, stream: str | None = None, time_s: float | None = None
    ) -> dict:
        with self.lock:
            boxes, faces = self.recognizer.find_faces(image)  # in colour: the colour detectors use it
            results = self.recognizer.results(boxes, self.recognizer.classify(faces))
            if stream is not None:  # a frame of a webcam stream: the same tracking and smoothing as a video
                results = self.tracks(stream).update(results, time_s or 0.0)
            payload = {"source": name, "width": image.width, "height": image.height}
            if not results:
                record = make_record(name, "no_face", detector=self.recognizer.detector_name)
                raise ApiError(422, "no_face", f"no face found in {name}", **payload, records=[record])
            frame = {"time_s": time_s} if stream is not None else {}
            payload["records"] = [make_record(name, "ok", face=i, result=r, **frame) for i, r in enumerate(results)]
            if explain and self.explainer is not None:
                maps = self.explainer.for_results(faces, results)
                payload["explanations"] = [
                    {"face": i, "method": self.explainer.method, "image": png_data_url(overlay(face, heat))}
                    for i, (face, heat) in enumerate(zip(faces, maps))
                ]
            return payload


def create_app(
    recognizer: EmotionRecognizer,
    model_name: str = "model",
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    explain: str = "auto",
    smooth: float = 0.5,
) -> FastAPI:
    """The FastAPI app: ``/`` (the page), ``/static/*``, ``GET /api/info`` and ``POST /api/predict``.

    ``explain``: the heat-map method (``auto``, ``gradcam``, ``occlusion``) or ``off``; ``smooth``: the time
    constant in seconds of a webcam stream's smoothing (0: off)."""
    limit = int(max_upload_mb * 2**20)
    service = Service(recognizer, explain, smooth)
    # No /docs page: Swagger UI loads from a CDN, and this server must work offline. /api/openapi.json stays.
    app = FastAPI(title="fer-lightning", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "code": exc.code, **exc.extra}, status_code=exc.status)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    async def info() -> dict:
        """The model, its classes, the upload limit and the heat-map method (null: none)."""
        return {
            "model": model_name,
            "class_names": recognizer.class_names,
            "max_upload_bytes": limit,
            "max_pixels": max_pixels,
            "explain": service.explainer.method if service.explainer else None,
        }

    @app.post("/api/predict")
    async def predict(
        request: Request,
        explain: bool = False,
        name: str | None = None,
        stream: str | None = None,
        time: float | None = None,
    ) -> dict:
        """Every face in the image: ``fer-predict``'s records, plus heat maps with ``explain=true``. A frame of a
        stream (``stream=ID&time=SECONDS``, the web page's webcam) gets the faces' track IDs and smoothed
        probabilities, as a video does in fer-predict."""
        if stream is not None and not STREAM_ID.fullmatch(stream):
            raise ApiError(400, "bad_stream", "stream must be 1-64 letters, digits, '-' or '_'")
        if stream is not None and (time is None or not 0 <= time < 1e7):
            raise ApiError(400, "bad_time", "a stream frame needs time=SECONDS, its time in the stream (>= 0)")
        body = await read_body(request, limit)
        data, name = extract_image(body, request.headers.get("content-type", ""), name, limit)
        image = decode_image(data, name, max_pixels)
        del body, data
        return await run_in_threadpool(service.analyse, image, name, explain, stream, time)

    return app


# ---- command line ----------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fer-serve", description="A web page and a JSON API (POST /api/predict) for facial expressions."
    )
    add_recognizer_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, help="largest upload accepted")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6, help="largest image")
    parser.add_argument(
        "--explain",
        choices=(*METHODS, "off"),
        default="auto",
        help="heat maps: auto (Grad-CAM for --ckpt, occlusion for ONNX), gradcam, occlusion, off",
    )
    parser.add_argument(
        "--smooth", type=float, default=0.5, metavar="SECONDS", help="webcam: smoothing time constant (0: off)"
    )
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default: one per core)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    args = parser.parse_args(argv)
    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        parser.error("--max-upload-mb and --max-megapixels must be > 0")
    if args.smooth < 0:
        parser.error("--smooth is seconds, >= 0")
    check_recognizer_arguments(parser, args)
    return args


def model_name(args: argparse.Namespace) -> str:
    return args.ckpt.name if args.ckpt is not None else Path(str(args.model)).name


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(message)s")
    try:
        recognizer, name = load_recognizer(args, threads=args.threads), model_name(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"fer-serve: error: {exc}", file=sys.stderr)
        return 2
    app = create_app(recognizer, name, args.max_upload_mb, int(args.max_megapixels * 1e6), args.explain, args.smooth)
    print(f"fer-serve: {name} on http://{args.host}:{args.port}/  (Ctrl-C to stop)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
