"""The models shipped inside the package: they load, match what ``make models`` recorded, and work with no
model argument anywhere (fer-predict, EmotionRecognizer, evaluate)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from PIL import Image

from fer_lightning.deploy import EmotionRecognizer
from fer_lightning.deploy.pretrained import DEFAULT, PRETRAINED, available, pretrained_path, record
from fer_lightning.deploy.pretrained.record import record_faces
from fer_lightning.export import WEIGHTS, export
from fer_lightning.labels import EMOTIONS
from tests.conftest import ROOT, compose_config
from tests.helpers.deploy import GRACE_HOPPER, tiny_checkpoint

MAX_BYTES = 3 * 2**20


def test_every_named_model_ships():
    assert DEFAULT in PRETRAINED and available() == list(PRETRAINED), "a shipped model is missing: `make models`"


@pytest.mark.parametrize("name", available())
def test_shipped_model_matches_its_record(name: str):
    path, recorded = pretrained_path(name), record(name)
    assert path.stat().st_size <= MAX_BYTES and recorded["bytes"] == path.stat().st_size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded["sha256"]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["class_names"]) == recorded["class_names"]
    assert meta["input_size"] == "48" and "normalisation" in meta
    assert meta.get("tta", "none") == recorded.get("tta", "none"), "the record was made with the file's own tta"
    assert float(meta.get("temperature", 1)) == recorded.get("temperature", 1.0)
    assert len(recorded["class_names"]) == (7 if name == "fer2013" else 8)
    recognizer = EmotionRecognizer.pretrained(name, detector="none")
    probs = recognizer.classify(record_faces())
    np.testing.assert_allclose(probs, np.array(recorded["probs"]), atol=1e-4)
    stored = next(w for w in WEIGHTS if meta.get("weights", "float32").startswith(w))
    assert recorded["max_abs_diff_vs_fp32_checkpoint"] < WEIGHTS[stored].tolerance, "rounded weights moved it too far"


def test_fer2013_model_uses_the_fer2013_labels():
    assert EmotionRecognizer.pretrained("fer2013").class_names == list(EMOTIONS)


def test_unknown_shipped_model_is_named_in_the_error():
    with pytest.raises(ValueError, match="no shipped model named 'affectnet'.*fer2013, ferplus"):
        EmotionRecognizer.pretrained("affectnet")
    assert set(PRETRAINED) == {"fer2013", "ferplus"}


def test_fer_predict_needs_no_model_argument_and_no_torch(tmp_path):
    photo = tmp_path / "grace.jpg"
    with Image.open(GRACE_HOPPER) as image:
        image.resize((256, 300)).save(photo)
    probe = (
        "import sys; from fer_lightning.predict import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules; sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(photo)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    (face,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert face["status"] == "ok" and face["emotion"] in EMOTIONS


def test_evaluate_a_shipped_model_like_a_checkpoint(tmp_path):
    from fer_lightning.evaluate import evaluate

    cfg = compose_config(
        ["pretrained=fer2013", "split=val", "tta=flip", "data.source.val_size=70"], tmp_path / "eval", "eval"
    )
    metrics = evaluate(cfg)
    assert 0.0 <= metrics["val/acc"] <= 1.0 and metrics["ckpt_paths"] == [str(pretrained_path("fer2013"))]


@pytest.mark.parametrize(("weights", "size_ratio", "max_diff"), [("float16", 0.6, 1e-2), ("int8", 0.35, 2e-2)])
def test_rounded_weights_shrink_the_file_and_keep_the_probabilities(
    tmp_path_factory, tmp_path, weights, size_ratio, max_diff
):
    ckpt = tiny_checkpoint(tmp_path_factory)
    full = export(ckpt, "onnx", tmp_path / "fp32.onnx")
    small = export(ckpt, "onnx", tmp_path / f"{weights}.onnx", weights=weights)
    assert small.stat().st_size < size_ratio * full.stat().st_size
    meta = {p.key: p.value for p in onnx.load(str(small)).metadata_props}
    assert meta["weights"].startswith(weights)
    faces = np.random.default_rng(0).integers(0, 256, (16, 48, 48), dtype=np.uint8)
    a = EmotionRecognizer.from_onnx(full, detector="none").classify(faces)
    b = EmotionRecognizer.from_onnx(small, detector="none").classify(faces)
    assert np.abs(a - b).max() < max_diff and (a.argmax(1) == b.argmax(1)).mean() >= 0.9


def test_rounded_weights_are_for_onnx_only(tmp_path_factory, tmp_path):
    ckpt = tiny_checkpoint(tmp_path_factory)
    with pytest.raises(ValueError, match="int8 weights are for ONNX exports only"):
        export(ckpt, "torchscript", tmp_path / "model.pt", weights="int8")
    with pytest.raises(ValueError, match="weights 'int4' is not one of float32, float16, int8"):
        export(ckpt, "onnx", tmp_path / "model.onnx", weights="int4")
