"""fer-export: ONNX and TorchScript models that take raw pixels and agree with the PyTorch model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from benchmarks.deploy import benchmark_deploy
from fer_lightning.deploy.checkpoint import RawPixelClassifier, load_classifier
from fer_lightning.evaluation.tta import average_views, view_logits
from fer_lightning.export import export, main
from tests.conftest import ROOT
from tests.helpers.deploy import GRACE_HOPPER, check_record, perturbed_checkpoint, tiny_checkpoint, tiny_onnx


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(ckpt) -> RawPixelClassifier:
    return RawPixelClassifier(load_classifier(ckpt))


def faces(batch: int, dtype: torch.dtype, channel: bool, seed: int) -> torch.Tensor:
    """Random faces; float ones get fractional values (as after resizing), not only integers."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 1, 48, 48) if channel else (batch, 48, 48)
    pixels = torch.rand(shape, generator=generator) * 255
    return pixels.to(torch.uint8) if dtype == torch.uint8 else pixels


CASES = [(torch.uint8, False, 3), (torch.uint8, True, 1), (torch.float32, True, 5), (torch.float32, False, 8)]


def test_onnx_matches_pytorch_for_uint8_and_float_any_batch(tmp_path_factory, reference):
    session = ort.InferenceSession(str(tiny_onnx(tmp_path_factory)), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == list(reference.classifier.class_names)
    for i, (dtype, channel, batch) in enumerate(CASES):
        x = faces(batch, dtype, channel, seed=i)
        got = session.run(None, {"pixels": x.numpy().astype(np.float32)})[0]
        with torch.no_grad():
            expected = reference(x).numpy()
        assert got.shape == (batch, 7)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_torchscript_matches_pytorch_for_uint8_and_float_any_batch(ckpt, tmp_path, reference):
    path = export(ckpt, "torchscript", tmp_path / "model.pt")
    extra = {"class_names": ""}
    scripted = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["class_names"]) == list(reference.classifier.class_names)
    for i, (dtype, channel, batch) in enumerate(CASES):
        x = faces(batch, dtype, channel, seed=i)
        with torch.no_grad():
            np.testing.assert_allclose(scripted(x).numpy(), reference(x).numpy(), atol=1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_flip_tta_in_the_graph_averages_each_face_with_its_mirror_image(ckpt, tmp_path, reference, fmt):
    path = export(ckpt, fmt, tmp_path / f"model.{fmt}", tta="flip")
    x = faces(5, torch.uint8, False, seed=3)
    with torch.no_grad():
        plain, mirrored = reference(x).numpy(), reference(x.flip(-1)).numpy()
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.get_modelmeta().custom_metadata_map["tta"] == "flip"
        got = session.run(None, {"pixels": x.numpy().astype(np.float32)})[0]
    else:
        with torch.no_grad():
            got = torch.jit.load(str(path))(x).numpy()
    np.testing.assert_allclose(got, (plain + mirrored) / 2, atol=5e-6)
    # The tiny model's outputs barely depend on the face, hence the small but still 50x larger difference.
    assert np.abs(got - plain).max() > 2.5e-4, "random faces are not symmetric: averaging must change something"
    with pytest.raises(ValueError, match="fivecrop"):
        RawPixelClassifier(reference.classifier, tta="fivecrop")


@pytest.mark.parametrize(("fmt", "crop"), [("onnx", 44), ("torchscript", 44), ("onnx", 48)])
def test_tencrop_tta_in_the_graph_gives_what_evaluate_computes(ckpt, tmp_path, reference, fmt, crop):
    """The exported model averages the same 10 views as ``python -m fer_lightning.evaluate tta=tencrop``."""
    path = export(ckpt, fmt, tmp_path / f"model.{fmt}", tta="tencrop", tta_crop=crop)
    x = faces(6, torch.uint8, False, seed=4)
    with torch.no_grad():
        expected = average_views(view_logits(reference.classifier, x[:, None].float(), "tencrop", 48, crop)).numpy()
        plain = reference(x).numpy()
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        assert (meta["tta"], meta["tta_crop"]) == ("tencrop", str(crop))
        got = session.run(None, {"pixels": x.numpy().astype(np.float32)})[0]
    else:
        with torch.no_grad():
            got = torch.jit.load(str(path))(x).numpy()
    np.testing.assert_allclose(got, expected, atol=5e-6)
    assert np.abs(got - plain).max() > 2.5e-4, "ten views of random faces must differ from the one"
    with pytest.raises(ValueError, match="tta_crop=49 must be in 1..48"):
        RawPixelClassifier(reference.classifier, tta="tencrop", tta_crop=49)


def test_refuses_to_overwrite_without_force(ckpt, tmp_path, capsys):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"precious")
    assert main(["--ckpt", str(ckpt), "--format", "onnx", "--output", str(target)]) == 1
    assert "already exists" in capsys.readouterr().err and target.read_bytes() == b"precious"
    with pytest.raises(FileExistsError, match="--force"):
        export(ckpt, "onnx", target)
    assert main(["--ckpt", str(ckpt), "--format", "onnx", "--output", str(target), "--force"]) == 0
    assert target.stat().st_size > 1000
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temporary file left behind"


def test_missing_or_bad_checkpoint_is_named(tmp_path, capsys):
    assert main(["--ckpt", str(tmp_path / "gone.ckpt"), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 1
    assert "gone.ckpt" in capsys.readouterr().err
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x80\x04 definitely not a checkpoint")
    with pytest.raises(ValueError, match="bad.ckpt"):
        export(bad, "torchscript", tmp_path / "m.pt")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.pt").exists()


def test_fer_predict_with_the_onnx_model_in_a_subprocess_without_torch(tmp_path_factory, tmp_path):
    model = tiny_onnx(tmp_path_factory)
    photo = tmp_path / "grace.jpg"  # half size: the face is still found, detection is 4x cheaper
    with Image.open(GRACE_HOPPER) as image:
        image.resize((256, 300)).save(photo)
    script = Path(sys.executable).with_name("fer-predict")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "fer_lightning.predict"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*command, str(photo), "--model", str(model)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == 1 and records[0]["status"] == "ok"
    check_record(
        records[0], json.loads(ort.InferenceSession(str(model)).get_modelmeta().custom_metadata_map["class_names"])
    )
    # The ONNX path is meant to run where torch is not installed: it must not even import it.
    probe = "import sys; from fer_lightning.predict import main; main(sys.argv[1:]); assert 'torch' not in sys.modules"
    done = subprocess.run(
        [sys.executable, "-c", probe, str(photo), "--model", str(model)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr


def test_deploy_benchmark_returns_numbers(ckpt, tmp_path):
    small = tmp_path / "small.jpg"  # the benchmark's own photo is grace_hopper.jpg; a small one keeps this quick
    with Image.open(GRACE_HOPPER) as image:
        image.resize((128, 150)).save(small)
    numbers = benchmark_deploy(ckpt, image=small, repeats=1, batch_size=8, threads=1)
    assert numbers["image_size"] == "128x150" and numbers["detect_ms"] > 0
    for backend in ("torch", "onnxruntime"):
        assert numbers[f"{backend}/end_to_end_ms"] > 0 and numbers[f"{backend}/batch_faces_per_s"] > 0
    assert numbers["shipped_fer2013/batch_faces_per_s"] > 0
    assert numbers["onnxruntime_flip/batch_faces_per_s"] > 0 and numbers["onnxruntime_tencrop/batch_faces_per_s"] > 0


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_temperature_divides_the_logits_inside_the_graph(ckpt, tmp_path, reference, fmt):
    """``--temperature``: evaluate's probabilities at that temperature, recorded in the file, same predictions."""
    path = export(ckpt, fmt, tmp_path / f"model.{fmt}", tta="flip", temperature=0.25)
    x = faces(6, torch.uint8, False, seed=5)
    with torch.no_grad():
        logits = view_logits(reference.classifier, x[:, None].float(), "flip", 48)
        expected, at_one = average_views(logits, temperature=0.25).numpy(), average_views(logits).numpy()
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.get_modelmeta().custom_metadata_map["temperature"] == "0.25"
        got = session.run(None, {"pixels": x.numpy().astype(np.float32)})[0]
    else:
        with torch.no_grad():
            got = torch.jit.load(str(path))(x).numpy()
    np.testing.assert_allclose(got, expected, atol=5e-6)
    assert np.abs(got - at_one).max() > 1e-3, "a temperature of 0.25 must sharpen the probabilities"
    with pytest.raises(ValueError, match="temperature must be > 0"):
        RawPixelClassifier(reference.classifier, temperature=0)


def test_several_checkpoints_make_one_file_of_evaluates_ensemble(ckpt, tmp_path_factory, tmp_path, reference):
    """``--ckpt a b``: the mean of the members' probabilities over the views at the temperature, as evaluate's
    ``ckpt_path=[a,b]`` scores them, in one file that names its members."""
    other = perturbed_checkpoint(tmp_path_factory)
    path = export([ckpt, other], "onnx", tmp_path / "pair.onnx", tta="flip", temperature=0.5)
    x = faces(6, torch.uint8, False, seed=6)
    with torch.no_grad():
        members = [reference.classifier, load_classifier(other)]
        logits = torch.cat([view_logits(m, x[:, None].float(), "flip", 48) for m in members])
        expected, first = average_views(logits, temperature=0.5).numpy(), average_views(logits[:2], 0.5).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"pixels": x.numpy().astype(np.float32)})[0], expected, atol=5e-6)
    assert np.abs(expected - first).max() > 1e-3, "the second member must move the probabilities"
    meta = session.get_modelmeta().custom_metadata_map
    assert [m["model"] for m in json.loads(meta["ensemble_of"])] == [
        f"{ckpt.parent.parent.name}/last.ckpt",
        f"{other.parent.name}/perturbed.ckpt",
    ]
    assert meta["temperature"] == "0.5" and "the mean of 2 networks'" in meta["output"]
    with pytest.raises(ValueError, match="an ensemble of checkpoints exports as ONNX only"):
        export([ckpt, other], "torchscript", tmp_path / "pair.pt")
