"""Face detector backends, alignment and ``--detector auto`` on photos that ship in installed packages.

The classifier is a stub (or a one-layer ONNX model built here): these tests are about finding and cropping
faces, so they need neither torch nor a trained model, and each takes at most a few seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_lightning.deploy import detectors
from fer_lightning.deploy.align import FER_TEMPLATE, align_face, roll_degrees
from fer_lightning.deploy.detectors import Detection, make_detector
from fer_lightning.deploy.faces import (
    Reduction,
    crop_face,
    image_size,
    load_image,
    load_image_reduced,
    load_pixels,
    to_gray,
    to_rgb,
)
from fer_lightning.deploy.recognizer import DETECTORS, EmotionRecognizer
from fer_lightning.deploy.records import RecordWriter, make_record
from fer_lightning.labels import EMOTIONS
from tests.helpers.deploy import GRACE_HOPPER, check_record

SKIMAGE_DATA = Path(find_spec("skimage").submodule_search_locations[0]) / "data"
GRACE_FACE_CENTRE = (266, 217)  # the centre of Grace Hopper's face, by eye
HAS_RETINAFACE = "retinaface" in detectors.installed()
BACKENDS = [
    pytest.param(
        "retinaface",
        marks=pytest.mark.skipif(not HAS_RETINAFACE, reason="onnxruntime is not installed (the deploy extra)"),
    ),
    "haar",
]


class StubClassifier:
    """A stand-in for the expression model: 'bright' vs 'dark' by the face's mean pixel value."""

    class_names = ["bright", "dark"]

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        bright = faces.reshape(len(faces), -1).mean(axis=1) / 255
        return np.stack([bright, 1 - bright], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def grace() -> Image.Image:
    return load_image(GRACE_HOPPER)


@pytest.fixture(scope="module")
def recognizers() -> dict[str, EmotionRecognizer]:
    names = [*detectors.installed(), "none"]
    return {name: EmotionRecognizer(StubClassifier(), detector=name, detector_threads=1) for name in names}


def centre(box: list[int]) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


# ---- the table, auto, the contract ----------------------------------------------------------------------------
def test_table_names_and_auto_picks_the_best_installed():
    assert DETECTORS == ("auto", "retinaface", "haar", "none")
    assert detectors.installed()[-1] == "haar", "Haar ships with OpenCV: always there"
    assert detectors.resolve("auto") == ("retinaface" if HAS_RETINAFACE else "haar")
    with pytest.raises(ValueError, match="not one of"):
        detectors.resolve("mtcnn")


def test_auto_falls_back_to_haar_and_a_missing_backend_says_how_to_install_it(monkeypatch):
    gone = replace(detectors.BACKENDS["retinaface"], requires="no-such-distribution-fer")
    monkeypatch.setitem(detectors.BACKENDS, "retinaface", gone)
    assert detectors.resolve("auto") == "haar"
    assert EmotionRecognizer(StubClassifier()).detector_name == "haar"
    with pytest.raises(RuntimeError, match=r"fer-lightning\[deploy\]"):
        detectors.resolve("retinaface")


@pytest.mark.parametrize("name", BACKENDS)
def test_each_backend_keeps_the_contract(name):
    detector = make_detector(name, threads=1)
    assert detector.name == name and isinstance(detector.uses_color, bool)
    found = detector(to_gray(load_image(GRACE_HOPPER)))
    assert found and all(isinstance(d, Detection) for d in found)


def test_importing_and_detecting_never_imports_torch():
    code = (
        "import sys, numpy as np; import fer_lightning.deploy;"
        "from fer_lightning.deploy.detectors import make_detector;"
        "make_detector('auto', threads=1)(np.zeros((64, 64), np.uint8)); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---- real photos ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BACKENDS)
def test_grace_hopper_one_face_with_detector_and_score(recognizers, grace, name):
    (face,) = recognizers[name].predict(grace)
    cx, cy = centre(face.box)
    assert abs(cx - GRACE_FACE_CENTRE[0]) < 25 and abs(cy - GRACE_FACE_CENTRE[1]) < 25
    assert face.detector == name
    if name == "haar":
        assert face.detector_score is None
    else:
        assert 0.9 < face.detector_score <= 1.0
    assert face.to_dict()["detector"] == name


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("photo", ["coffee.png", "chelsea.png", "page.png"])
def test_photos_without_a_person_give_no_face(recognizers, name, photo):
    assert recognizers[name].predict(SKIMAGE_DATA / photo) == []


@pytest.mark.skipif(not HAS_RETINAFACE, reason="onnxruntime is not installed (the deploy extra)")
def test_retinaface_finds_the_profile_haar_misses(recognizers):
    """scikit-image's cameraman: a face in profile, half hidden by the camera."""
    (face,) = recognizers["retinaface"].predict(SKIMAGE_DATA / "camera.png")
    cx, cy = centre(face.box)
    assert 195 < cx < 256 and 114 < cy < 195


# ---- awkward images ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (31, 33, 3), (48, 48, 4)])
def test_tiny_and_thin_images_give_no_face_and_no_error(recognizers, name, shape):
    image = np.full(shape, 128, np.uint8)
    assert recognizers[name].predict(image) == []


@pytest.mark.parametrize("name", BACKENDS)
def test_huge_image_detected_downscaled_boxes_map_back(recognizers, grace, name):
    small = recognizers[name].predict(grace)[0].box
    huge = recognizers[name].predict(grace.resize((512 * 6, 600 * 6), Image.Resampling.BILINEAR))  # 11 MP
    assert len(huge) == 1 or name == "haar", "Haar may add false faces"
    assert np.allclose(huge[0].box, np.array(small) * 6, atol=0.1 * small[2] * 6)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("mode", ["RGBA", "L", "CMYK", "P", "I;16", "LA"])
def test_every_image_mode_from_a_file(recognizers, grace, tmp_path, name, mode):
    image = grace.convert(mode) if mode != "I;16" else Image.fromarray(to_gray(grace).astype(np.uint16) * 257)
    if mode == "RGBA":  # a transparent frame around the photo, as cut-outs have
        alpha = np.zeros((grace.height, grace.width), np.uint8)
        alpha[40:-40, 40:-40] = 255
        image.putalpha(Image.fromarray(alpha))
    path = tmp_path / ("photo.jpg" if mode in ("CMYK", "L") else "photo.png")
    image.save(path)
    (face,) = recognizers[name].predict(path)
    cx, cy = centre(face.box)
    assert abs(cx - GRACE_FACE_CENTRE[0]) < 30 and abs(cy - GRACE_FACE_CENTRE[1]) < 30


# ---- tilted faces and alignment ---------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_RETINAFACE, reason="onnxruntime is not installed (the deploy extra)")
@pytest.mark.parametrize("angle", [-35, 20, 45])
def test_tilted_face_is_found_and_aligned_upright(recognizers, grace, angle):
    """Its landmarks give its tilt (within 12 degrees: they are less exact on tilted faces), and the aligned crop
    is much closer to the upright face's than the box crop is."""
    recognizer = recognizers["retinaface"]
    upright_found, upright = recognizer.find_faces(grace)
    tilted = grace.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128))
    found, faces = recognizer.find_faces(tilted)
    assert len(found) == 1
    assert roll_degrees(found[0].landmarks) == pytest.approx(roll_degrees(upright_found[0].landmarks) - angle, abs=12)
    aligned_gap = np.abs(faces[0].astype(int) - upright[0]).mean()
    boxed_gap = np.abs(crop_face(to_gray(tilted), found[0], 0.1).astype(int) - upright[0]).mean()
    assert aligned_gap < 0.6 * boxed_gap, (aligned_gap, boxed_gap)


def test_align_face_puts_the_landmarks_on_the_fer_template():
    """A face drawn at 3x scale, turned 30 degrees: aligned, its eyes and mouth land where FER-2013 has them."""
    size, scale, turn = 400, 3.0, np.radians(30)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    points = (FER_TEMPLATE - 24) @ rotation.T * scale + size / 2
    image = np.full((size, size), 200, np.uint8)
    for x, y in points:
        image[round(y) - 4 : round(y) + 5, round(x) - 4 : round(x) + 5] = 0
    face = align_face(image, [tuple(p) for p in points])
    assert face.shape == (48, 48) and face.dtype == np.uint8
    for x, y in FER_TEMPLATE:
        assert face[round(y), round(x)] < 100, (x, y)
    assert roll_degrees(points) == pytest.approx(30, abs=0.01)
    with pytest.raises(ValueError, match="5 finite"):
        align_face(image, [(0.0, 0.0)] * 4)


@pytest.mark.skipif(not HAS_RETINAFACE, reason="onnxruntime is not installed (the deploy extra)")
def test_no_align_crops_the_box(grace):
    recognizer = EmotionRecognizer(StubClassifier(), detector="retinaface", align=False, detector_threads=1)
    found, faces = recognizer.find_faces(grace)
    assert np.array_equal(faces[0], crop_face(to_gray(grace), found[0], recognizer.margin))


def test_detector_none_is_named_in_the_record(recognizers):
    (face,) = recognizers["none"].predict(np.full((60, 50), 90, np.uint8))
    assert face.box == [0, 0, 50, 60] and face.detector == "none" and face.detector_score is None


# ---- records and the command line ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BACKENDS)
def test_records_carry_the_detector_and_its_score(recognizers, grace, name):
    (face,) = recognizers[name].predict(to_rgb(grace))
    record = make_record("g.jpg", "ok", face=0, result=face)
    check_record(record, StubClassifier.class_names)
    assert record["detector"] == name
    empty = make_record("e.jpg", "no_face", detector=name)
    assert empty["detector"] == name and empty["detector_score"] is None
    check_record(empty, StubClassifier.class_names)


def test_csv_has_detector_columns(recognizers, grace, tmp_path):
    (face,) = recognizers[detectors.resolve("auto")].predict(grace)
    path = tmp_path / "faces.csv"
    with path.open("w", newline="") as stream:
        RecordWriter(stream, "csv", StubClassifier.class_names).write(make_record("g", "ok", face=0, result=face))
    header, row = path.read_text().splitlines()
    values = dict(zip(header.split(","), row.split(",")))
    assert values["detector"] == face.detector
    assert values["detector_score"] == ("" if face.detector_score is None else str(face.detector_score))


def tiny_onnx_classifier(path: Path) -> Path:
    """A one-layer expression model in ONNX (pixels (N, 48, 48) -> softmax (N, 7)), built without torch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).normal(0, 1e-3, (48 * 48, 7)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["pixels"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 48, 48])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", 7])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_fer_predict_default_auto_detector_in_every_record(tmp_path, grace, capsys):
    from fer_lightning.predict import main

    grace.save(tmp_path / "grace.jpg")
    Image.new("RGB", (320, 240), (30, 120, 200)).save(tmp_path / "sky.png")
    model = tiny_onnx_classifier(tmp_path / "tiny.onnx")
    assert main([str(tmp_path / "grace.jpg"), str(tmp_path / "sky.png"), "--model", str(model)]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert "fer-predict: 2 images/frames in" in captured.err and "per second" in captured.err
    expected = detectors.resolve("auto")
    assert [(r["status"], r["detector"]) for r in records] == [("ok", expected), ("no_face", expected)]
    for record in records:
        check_record(record, list(EMOTIONS))  # a model without class names: the FER-2013 order


# ---- the comparison's scoring and its section in docs/benchmarks.md ---------------------------------------------
def test_comparison_scoring_matches_each_face_once():
    from benchmarks.detectors import score_photo
    from fer_lightning.deploy.faces import Box

    face = Box(100, 100, 80, 100)
    same, shifted, too_big, elsewhere = (
        Box(95, 110, 90, 90),
        Box(130, 140, 80, 80),
        Box(0, 0, 400, 400),
        Box(0, 0, 9, 9),
    )
    assert score_photo([same, shifted], [face]) == (1, 1), "one face, two boxes on it: one hit, one false"
    assert score_photo([too_big, elsewhere], [face]) == (0, 2)
    assert score_photo([], [face]) == (0, 0)


def test_detector_section_replaced_in_place_and_kept_by_make_bench(tmp_path):
    from benchmarks.detectors import SECTION_END, SECTION_START, carry_section, write_section

    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n| table |\n")
    write_section(page, f"{SECTION_START}\nfirst\n{SECTION_END}\n")
    write_section(page, f"{SECTION_START}\nsecond\n{SECTION_END}\n")
    text = page.read_text()
    assert text.count(SECTION_START) == 1 and "second" in text and "first" not in text and "| table |" in text
    assert carry_section(page, "# Benchmarks\n\n| new table |\n").endswith(f"{SECTION_START}\nsecond\n{SECTION_END}\n")


# ---- large JPEGs decoded at a reduced scale ---------------------------------------------------------------------
BIG = 8  # grace_hopper.jpg (512x600) scaled up 8x: 4096x4800, 19.7 MP


@pytest.fixture(scope="module")
def big_jpegs(grace, tmp_path_factory) -> dict[str, Path]:
    """The big photo as a JPEG, and as a JPEG stored on its side with EXIF Orientation 6 (turn 90 degrees
    clockwise to view), as phones write them."""
    folder = tmp_path_factory.mktemp("big")
    big = grace.resize((512 * BIG, 600 * BIG), Image.Resampling.BILINEAR)
    big.save(folder / "big.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    big.transpose(Image.Transpose.ROTATE_90).save(folder / "turned.jpg", quality=90, exif=exif)
    return {"big": folder / "big.jpg", "turned": folder / "turned.jpg"}


@pytest.mark.parametrize(("min_side", "scale"), [(None, None), (2401, None), (2400, 2), (1280, 2), (600, 8), (640, 4)])
def test_load_image_reduced_picks_the_smallest_scale_keeping_min_side(big_jpegs, min_side, scale):
    image, reduction = load_image_reduced(big_jpegs["big"], min_side)
    if scale is None:
        assert reduction is None and image.size == (512 * BIG, 600 * BIG)
    else:
        assert reduction == Reduction(scale, (512 * BIG, 600 * BIG))
        assert image.size == (512 * BIG // scale, 600 * BIG // scale)
        assert max(image.size) >= min_side


@pytest.mark.parametrize("min_side", [None, 2400, 1280, 640, 600])
@pytest.mark.parametrize("which", ["big", "turned"])
def test_load_pixels_decodes_a_jpeg_into_the_same_pixels_as_pillow(big_jpegs, which, min_side):
    pixels, reduction = load_pixels(big_jpegs[which], min_side)
    image, expected = load_image_reduced(big_jpegs[which], min_side)
    assert isinstance(pixels, np.ndarray) and reduction == expected
    assert np.array_equal(pixels, np.asarray(image))  # the same scale, orientation and colours


@pytest.mark.parametrize("orientation", range(1, 9))
def test_load_pixels_turns_a_jpeg_upright_as_pillow_does(grace, tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    grace.save(tmp_path / "photo.jpg", exif=exif)
    pixels, reduction = load_pixels(tmp_path / "photo.jpg")
    assert reduction is None and np.array_equal(pixels, np.asarray(load_image(tmp_path / "photo.jpg")))


def test_load_pixels_reads_grayscale_jpegs_and_leaves_the_rest_to_pillow(grace, tmp_path):
    grace.convert("L").save(tmp_path / "gray.jpg")
    pixels, _ = load_pixels(tmp_path / "gray.jpg")
    assert pixels.shape == (600, 512) and np.array_equal(pixels, np.asarray(Image.open(tmp_path / "gray.jpg")))
    grace.convert("CMYK").save(tmp_path / "cmyk.jpg")
    grace.save(tmp_path / "grace.png")
    for name in ("cmyk.jpg", "grace.png"):
        image, _ = load_pixels(tmp_path / name)
        assert isinstance(image, Image.Image) and image.size == (512, 600)


def test_load_pixels_refuses_a_truncated_jpeg_naming_it(grace, tmp_path):
    """OpenCV fills the missing part of a cut JPEG with grey; the file must be refused instead, as Pillow does."""
    grace.save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match="cut.jpg: cannot read as an image"):
        load_pixels(tmp_path / "cut.jpg")


def test_to_gray_of_an_rgb_array_is_pillows_luma_within_one_level(grace):
    rgb = np.asarray(grace.convert("RGB"))
    difference = to_gray(rgb).astype(int) - np.asarray(grace.convert("L"), dtype=int)
    assert np.abs(difference).max() <= 1 and (difference != 0).mean() < 0.01


@pytest.mark.skipif(not HAS_RETINAFACE, reason="onnxruntime is not installed (the deploy extra)")
@pytest.mark.parametrize("which", ["big", "turned"])
def test_big_jpeg_decoded_reduced_gives_the_full_size_box(recognizers, grace, big_jpegs, which):
    recognizer = recognizers["retinaface"]
    image, reduction = recognizer.load(big_jpegs[which])
    assert recognizer.decode_side == 640
    assert image_size(image) == (512 * BIG // 4, 600 * BIG // 4)  # 1/4 scale: 1024x1200, upright
    assert reduction == Reduction(4, (512 * BIG, 600 * BIG))  # sizes of the upright full image
    small = np.array(recognizer.predict(grace)[0].box)
    (face,) = recognizer.predict(big_jpegs[which])
    assert np.allclose(face.box, small * BIG, atol=0.04 * small[2] * BIG), (face.box, small * BIG)
    (again,) = recognizer.predict(load_image(big_jpegs[which]))  # decoded at full size: the same box
    assert np.allclose(face.box, again.box, atol=0.02 * again.box[2])


@pytest.mark.skipif(not HAS_RETINAFACE, reason="onnxruntime is not installed (the deploy extra)")
def test_a_face_small_in_the_reduced_decode_is_cropped_from_a_sharper_one(
    recognizers, grace, big_jpegs, tmp_path, monkeypatch
):
    """Grace's face (176 px wide) in a 4096x4800 canvas: the 1/4 decode for the detector makes it 44 px, so the
    file is decoded again at 1/2 and the crop is cut from that; the large face of big.jpg needs one decode."""
    recognizer = recognizers["retinaface"]
    canvas = Image.new("RGB", (512 * BIG, 600 * BIG), (128, 128, 128))
    canvas.paste(grace, (1500, 2000))
    canvas.save(tmp_path / "small_face.jpg", quality=90)
    decodes = []

    def counted(path, min_side=None):
        decodes.append(min_side)
        return load_pixels(path, min_side)

    monkeypatch.setattr("fer_lightning.deploy.recognizer.load_pixels", counted)
    image, reduction, (face,), crops = recognizer.find_faces_in_file(tmp_path / "small_face.jpg")
    assert reduction == Reduction(4, canvas.size) and image_size(image) == (1024, 1200)
    assert face.w < 4 * 48 and len(decodes) == 2
    sharp_image, sharp = load_pixels(tmp_path / "small_face.jpg", decodes[1])
    assert sharp.scale == 2 and min(face.w, face.h) / sharp.scale >= 48
    local = face.scaled(1 / sharp.scale, image_size(sharp_image))
    assert np.array_equal(crops[0], align_face(to_gray(sharp_image), local.landmarks))
    decodes.clear()
    recognizer.find_faces_in_file(big_jpegs["big"])
    assert decodes == [640]


@pytest.mark.parametrize("name", BACKENDS)
def test_png_and_small_jpeg_are_decoded_whole(recognizers, grace, tmp_path, name):
    grace.resize((512 * 2, 600 * 2), Image.Resampling.BILINEAR).save(tmp_path / "big.png", compress_level=1)
    grace.save(tmp_path / "small.jpg")
    image, reduction = recognizers[name].load(tmp_path / "big.png")
    assert reduction is None and image_size(image) == (512 * 2, 600 * 2)
    image, reduction = recognizers[name].load(tmp_path / "small.jpg")
    assert reduction is None and image_size(image) == (512, 600)
    assert load_image_reduced(tmp_path / "big.png", 64)[1] is None  # never for other formats


@pytest.mark.skipif(not HAS_RETINAFACE, reason="onnxruntime is not installed (the deploy extra)")
def test_fer_predict_big_jpeg_records_full_size_boxes_and_annotates_the_reduced_image(
    recognizers, big_jpegs, tmp_path, capsys
):
    from fer_lightning.predict import main

    model = tiny_onnx_classifier(tmp_path / "tiny.onnx")
    args = [str(big_jpegs["big"]), "--model", str(model), "--detector", "retinaface", "--annotate", str(tmp_path)]
    assert main(args) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (face,) = recognizers["retinaface"].predict(big_jpegs["big"])
    assert record["box"] == face.box
    drawn = np.asarray(Image.open(tmp_path / "big.png"))
    assert drawn.shape == (600 * BIG // 4, 512 * BIG // 4, 3)  # the reduced decode, boxes scaled down to it
    x, y, w, h = (round(v / 4) for v in record["box"])
    assert (drawn[y + h // 2, x - 2 : x + 3] == (0, 255, 0)).all(axis=1).any()  # the box's left edge


def test_detector_section_reports_decoding_alone_per_file_set(big_jpegs):
    from benchmarks.detectors import KINDS, Tally, decode_ms, markdown

    spent = decode_ms([big_jpegs["big"]], repeats=1)
    assert 0 < spent < 10_000
    kinds = {kind: Tally(1, 1, 1) for kind in KINDS}
    result = {"kinds": kinds, "total": Tally(6, 6, 6), "false_on_faceless": 0, "cpu_ms": 1.0, "wall_ms": 1.0}
    comparison = {
        "photos": [],
        "results": {"retinaface": result},
        "file_mb": {"photos_per_s_12mp": 0.97},
        "decode_ms": {"photos_per_s_12mp": spent, "photos_per_s_12mp_phone": 34.0},
    }
    text = markdown(comparison, "python -m benchmarks.detectors", ["- CPU: test"])
    assert f"CPU ms/photo: 12 MP {spent:.1f}, phone-sized 34.0:" in text
