"""fer-serve's JSON API, in process (Starlette's TestClient): records, heat maps, every 4xx, and no disk writes."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="fer-serve needs the serve extra: pip install -e '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from fer_lightning.deploy import EmotionRecognizer  # noqa: E402
from fer_lightning.labels import EMOTIONS  # noqa: E402
from fer_lightning.serve.app import STATIC, create_app, main  # noqa: E402
from tests.helpers.deploy import GRACE_FACE_CENTRE, GRACE_HOPPER, check_record, tiny_onnx  # noqa: E402


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    return tiny_onnx(tmp_path_factory)


@pytest.fixture(scope="module")
def recognizer(onnx_path) -> EmotionRecognizer:
    return EmotionRecognizer.from_onnx(onnx_path)


@pytest.fixture(scope="module")
def client(recognizer) -> TestClient:
    return TestClient(create_app(recognizer, "tiny.onnx", max_upload_mb=4, max_pixels=20_000_000))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_info_and_page(client):
    info = client.get("/api/info").json()
    assert info == {
        "model": "tiny.onnx",
        "class_names": list(EMOTIONS),
        "max_upload_bytes": 4 * 2**20,
        "max_pixels": 20_000_000,
        "explain": "occlusion",  # an ONNX model: no gradients
    }
    page = client.get("/")
    assert page.status_code == 200 and 'src="/static/app.js"' in page.text
    assert client.get("/static/app.js").status_code == client.get("/static/style.css").status_code == 200


def test_the_page_loads_nothing_from_elsewhere():
    for path in STATIC.iterdir():
        text = path.read_text()
        assert "http://" not in text.replace("http://HOST", "") and "https://" not in text and "//cdn" not in text


def test_predict_returns_fer_predicts_records(client, recognizer):
    response = client.post("/api/predict", files={"image": ("grace.jpg", GRACE_HOPPER.read_bytes(), "image/jpeg")})
    assert response.status_code == 200
    body = response.json()
    assert (body["source"], body["width"], body["height"]) == ("grace.jpg", 512, 600)
    assert "explanations" not in body
    (record,) = body["records"]
    check_record(record, list(EMOTIONS))
    assert record["source"] == "grace.jpg" and record["face"] == 0
    x, y, w, h = record["box"]
    assert np.hypot(x + w / 2 - GRACE_FACE_CENTRE[0], y + h / 2 - GRACE_FACE_CENTRE[1]) < 40
    (expected,) = recognizer.predict(GRACE_HOPPER)
    assert record["box"] == expected.box and record["emotion"] == expected.emotion
    assert record["probs"] == pytest.approx(expected.probs, abs=1e-6)


def test_raw_body_with_heat_maps(client):
    response = client.post(
        "/api/predict?explain=true&name=me.jpg",
        content=GRACE_HOPPER.read_bytes(),
        headers={"content-type": "image/jpeg"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["records"][0]["source"] == "me.jpg"
    (explanation,) = body["explanations"]
    assert explanation["face"] == 0 and explanation["method"] == "occlusion"
    prefix = "data:image/png;base64,"
    assert explanation["image"].startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(explanation["image"][len(prefix) :]))) as heat:
        assert heat.size == (192, 192) and heat.mode == "RGB"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"files": {"image": ("notes.txt", b"not a picture", "text/plain")}}, 415, "not_an_image"),
        ({"content": b"\xff\xd8\xff\xe0 truncated", "headers": {"content-type": "image/jpeg"}}, 415, "not_an_image"),
        ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415, "unsupported_media_type"),
        ({"files": {"other": (None, "text field only")}}, 400, "no_image"),
        ({"content": b"", "headers": {"content-type": "image/png"}}, 400, "empty"),
        ({"content": b"x" * (5 * 2**20), "headers": {"content-type": "image/png"}}, 413, "too_large"),
        ({"files": {"image": ("big.png", b"x" * (5 * 2**20), "image/png")}}, 413, "too_large"),
        (
            {"content": b"--xyz\r\nContent-Disposition: form-data; name=image\r\n\r\nab\r\n--qq", "headers": {}},
            400,
            "bad_form",
        ),
    ],
    ids=["text-file", "truncated-jpeg", "json", "no-file", "empty", "too-large-raw", "too-large-form", "bad-form"],
)
def test_bad_requests_get_a_json_4xx(client, kwargs, status, code):
    if kwargs.get("headers") == {}:
        kwargs = {**kwargs, "headers": {"content-type": "multipart/form-data; boundary=xyz"}}
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and isinstance(body["error"], str) and body["error"]


def test_too_many_pixels_is_refused_before_decoding(client):
    huge = png_bytes(Image.new("L", (5000, 5000)))  # 25 MP in a few kB
    response = client.post("/api/predict", files={"image": ("huge.png", huge, "image/png")})
    assert response.status_code == 413 and "megapixel" in response.json()["error"]


def test_no_face_is_a_422_with_the_no_face_record(client):
    blank = png_bytes(Image.new("RGB", (200, 160), "white"))
    response = client.post("/api/predict", files={"image": ("wall.png", blank, "image/png")})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "no_face" and "wall.png" in body["error"]
    (record,) = body["records"]
    check_record(record, list(EMOTIONS))
    assert record["status"] == "no_face" and (body["width"], body["height"]) == (200, 160)


def test_uploads_are_never_written_to_disk(client, monkeypatch):
    """Starlette's own form parser spools files over 1 MB to a temporary file: ours must not touch one."""

    def refuse(*args, **kwargs):
        raise AssertionError("an upload went to a temporary file")

    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", refuse)  # the class Starlette imported: to disk
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    big = png_bytes(Image.fromarray(noise))
    assert 1.2 * 2**20 < len(big) < 4 * 2**20
    response = client.post("/api/predict", files={"image": ("noise.png", big, "image/png")})
    assert response.status_code == 422 and response.json()["code"] == "no_face"  # read, decoded, searched


def test_an_onnx_server_never_imports_torch(onnx_path):
    code = (
        "import sys; from fer_lightning.deploy import EmotionRecognizer;"
        "from fer_lightning.serve.app import create_app;"
        f"create_app(EmotionRecognizer.from_onnx({str(onnx_path)!r}));"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", "import json;" + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_cli_reports_a_model_it_cannot_load(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx" in capsys.readouterr().err


def test_webcam_stream_frames_are_tracked_and_smoothed_as_fer_predict_does_a_video(client, recognizer):
    from fer_lightning.deploy.tracking import FaceTracks

    photo = GRACE_HOPPER.read_bytes()
    tracks, answers = FaceTracks(0.5), []
    for k, time_s in enumerate((0.0, 0.2, 0.4)):
        response = client.post(
            f"/api/predict?stream=camA&time={time_s}", files={"image": ("f.jpg", photo, "image/jpeg")}
        )
        assert response.status_code == 200
        (record,) = response.json()["records"]
        check_record({**record, "frame": k}, list(EMOTIONS))
        answers.append(record)
        expected = tracks.update(recognizer.predict(GRACE_HOPPER), time_s)[0]
        assert record["track_id"] == expected.track_id == 1 and record["time_s"] == time_s
        assert record["smoothed_probs"] == pytest.approx(expected.smoothed_probs, abs=1e-6)
    other = client.post("/api/predict?stream=camB&time=0", files={"image": ("f.jpg", photo, "image/jpeg")})
    assert other.json()["records"][0]["track_id"] == 1  # each stream has its own tracks
    plain = client.post("/api/predict", files={"image": ("f.jpg", photo, "image/jpeg")}).json()["records"][0]
    assert plain["track_id"] is None and plain["smoothed_probs"] is None  # a photo is never smoothed
    for query, code in (
        ("stream=a%20b&time=1", "bad_stream"),
        ("stream=camA", "bad_time"),
        ("stream=x&time=-1", "bad_time"),
    ):
        response = client.post(f"/api/predict?{query}", files={"image": ("f.jpg", photo, "image/jpeg")})
        assert response.status_code == 400 and response.json()["code"] == code
