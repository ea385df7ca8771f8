"""fer-predict and EmotionRecognizer on real photos (matplotlib's and scikit-image's samples) and made-up inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_lightning.deploy import EmotionRecognizer
from fer_lightning.labels import EMOTIONS
from fer_lightning.predict import main
from tests.helpers.deploy import (
    ASTRONAUT,
    GRACE_FACE_CENTRE,
    GRACE_FACE_SIDE,
    GRACE_HOPPER,
    check_record,
    tiny_checkpoint,
    tiny_onnx,
)

CLASSES = list(EMOTIONS)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory) -> EmotionRecognizer:
    return EmotionRecognizer.from_onnx(tiny_onnx(tmp_path_factory))


@pytest.fixture(scope="module")
def small_grace() -> Image.Image:
    """Half-size Grace Hopper (256x300): detection is 4x cheaper and the face is still found."""
    with Image.open(GRACE_HOPPER) as image:
        return image.resize((256, 300), Image.Resampling.BILINEAR)


def centre(box: list[int]) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def read_jsonl(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        check_record(record, CLASSES)
    return records


def test_grace_hopper_one_face_where_expected_and_both_backends_agree(ckpt, recognizer):
    from_ckpt = EmotionRecognizer.from_checkpoint(ckpt, device="cpu").predict(GRACE_HOPPER)
    from_onnx = recognizer.predict(str(GRACE_HOPPER))
    assert len(from_ckpt) == len(from_onnx) == 1
    face = from_onnx[0]
    assert np.hypot(*np.subtract(centre(face.box), GRACE_FACE_CENTRE)) < 25
    assert 0.8 * GRACE_FACE_SIDE < face.box[3] < 1.2 * GRACE_FACE_SIDE  # height: RetinaFace's boxes are narrower
    assert face.box == from_ckpt[0].box and face.emotion == from_ckpt[0].emotion
    assert list(face.probs) == CLASSES and sum(face.probs.values()) == pytest.approx(1.0, abs=1e-5)
    for name in CLASSES:
        assert face.probs[name] == pytest.approx(from_ckpt[0].probs[name], abs=1e-4)


def test_astronaut_face(recognizer):
    faces = recognizer.predict(ASTRONAUT)
    assert len(faces) >= 1
    assert np.hypot(*np.subtract(centre(faces[0].box), (224, 114))) < 25  # Eileen Collins' face


def test_many_faces_largest_first(recognizer, small_grace):
    pair = np.asarray(small_grace)
    collage = np.concatenate([pair, np.asarray(small_grace.resize((192, 225)).crop((0, 0, 192, 300)))], axis=1)
    faces = recognizer.predict(collage)
    assert len(faces) == 2
    assert faces[0].box[2] > faces[1].box[2] and faces[1].box[0] >= 256


def test_huge_image_is_detected_downscaled_and_boxes_map_back(tmp_path_factory, small_grace):
    recognizer = EmotionRecognizer.from_onnx(tiny_onnx(tmp_path_factory), max_side=300)
    small = recognizer.predict(small_grace)[0].box
    huge = recognizer.predict(small_grace.resize((256 * 8, 300 * 8)))[0].box
    assert huge == pytest.approx([8 * v for v in small], abs=8 * 2)


def test_detector_none_takes_the_whole_image_as_the_face(tmp_path_factory, small_grace):
    recognizer = EmotionRecognizer.from_onnx(tiny_onnx(tmp_path_factory), detector="none")
    faces = recognizer.predict(small_grace.crop((70, 50, 190, 170)).resize((48, 48)))
    assert len(faces) == 1 and faces[0].box == [0, 0, 48, 48]


def test_cli_mixed_inputs_report_errors_and_carry_on(tmp_path, tmp_path_factory, small_grace, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    small_grace.save(folder / "a_rgb.jpg")
    small_grace.convert("RGBA").save(folder / "b_rgba.png")
    small_grace.convert("L").save(folder / "c_gray.png")
    # EXIF Orientation 6 = "rotate 90 degrees clockwise to display": store the pixels rotated the other way.
    exif = Image.Exif()
    exif[0x0112] = 6
    small_grace.transpose(Image.Transpose.ROTATE_90).save(folder / "d_exif.jpg", exif=exif)
    Image.new("L", (200, 150), 128).save(folder / "e_flat.png")
    (folder / "f_broken.jpg").write_bytes(b"this is not a JPEG")
    out = tmp_path / "records.jsonl"
    code = main(
        [
            str(folder),
            str(tmp_path / "missing.png"),
            "--model",
            str(tiny_onnx(tmp_path_factory)),
            "--output",
            str(out),
            "--annotate",
            str(tmp_path / "drawn"),
        ]
    )
    assert code == 1
    records = {Path(r["source"]).name: r for r in read_jsonl(out)}
    assert len(records) == 7
    for name in ("a_rgb.jpg", "b_rgba.png", "c_gray.png", "d_exif.jpg"):
        assert records[name]["status"] == "ok", name
    upright = records["a_rgb.jpg"]["box"]
    assert np.hypot(*np.subtract(centre(records["d_exif.jpg"]["box"]), centre(upright))) < 8
    assert records["e_flat.png"]["status"] == "no_face"
    for name in ("f_broken.jpg", "missing.png"):
        assert records[name]["status"] == "error" and name in records[name]["error"]
    stderr = capsys.readouterr().err
    assert "f_broken.jpg" in stderr and "missing.png" in stderr
    drawn = sorted(p.name for p in (tmp_path / "drawn").iterdir())
    assert drawn == ["a_rgb.png", "b_rgba.png", "c_gray.png", "d_exif.png", "e_flat.png"]
    with Image.open(tmp_path / "drawn" / "d_exif.png") as image:
        assert image.size == (256, 300), "annotated upright"


def test_worker_threads_give_the_records_of_one_thread_in_input_order(tmp_path, tmp_path_factory, small_grace):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        small_grace.crop((0, 10 * i, 256, 300)).save(folder / f"{2 * i}_face.jpg")
        Image.new("L", (120 + 40 * i, 90), 60 * i).save(folder / f"{2 * i + 1}_flat.png")
    (folder / "3_flat.png").write_bytes(b"broken in the middle")
    runs = {}
    for workers in (1, 3):
        out = tmp_path / f"records_{workers}.jsonl"
        argv = [str(folder), "--model", str(tiny_onnx(tmp_path_factory)), "--output", str(out)]
        assert main([*argv, "--workers", str(workers)]) == 1  # the broken file
        runs[workers] = read_jsonl(out)
    names = [Path(r["source"]).name for r in runs[3]]
    assert names == sorted(p.name for p in folder.iterdir()), "one record per image, in input order"
    assert [r["status"] for r in runs[3]] == ["ok", "no_face", "ok", "error", "ok", "no_face"]
    for one, many in zip(runs[1], runs[3], strict=True):
        assert (one["source"], one["status"], one.get("box")) == (many["source"], many["status"], many.get("box"))
        if one["status"] == "ok":
            np.testing.assert_allclose(list(one["probs"].values()), list(many["probs"].values()), atol=1e-5)


def test_a_worker_copy_shares_the_classifier_but_not_the_detector(recognizer):
    copy = recognizer.with_own_detector(threads=1)
    assert copy.backend is recognizer.backend and copy.detector is not recognizer.detector
    assert (copy.detector_name, copy.detector.max_side) == (recognizer.detector_name, recognizer.detector.max_side)


def test_cli_video_rows_with_frame_and_time_and_annotated_video(tmp_path, tmp_path_factory, small_grace):
    video = tmp_path / "clip.avi"
    frame = cv2.cvtColor(np.asarray(small_grace), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (256, 300))
    for i in range(10):
        writer.write(np.roll(frame, 2 * i, axis=1) if i != 4 else np.full_like(frame, 128))
    writer.release()
    out = tmp_path / "rows.csv"
    code = main(
        [
            str(video),
            "--model",
            str(tiny_onnx(tmp_path_factory)),
            "--every",
            "2",
            "--format",
            "csv",
            "--output",
            str(out),
            "--annotate",
            str(tmp_path / "drawn"),
            "--batch-size",
            "2",
        ]
    )
    assert code == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["frame"]) for r in rows] == [0, 2, 4, 6, 8]
    assert [float(r["time_s"]) for r in rows] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert [r["status"] for r in rows] == ["ok", "ok", "no_face", "ok", "ok"], "frame 4 is blank"
    assert list(rows[0]) == [
        "source",
        "frame",
        "time_s",
        "status",
        "face",
        "x",
        "y",
        "w",
        "h",
        "detector",
        "detector_score",
        "emotion",
        "confidence",
        *[f"p_{c}" for c in CLASSES],
        "track_id",
        "smoothed_emotion",
        *[f"s_{c}" for c in CLASSES],
        "error",
    ]
    assert sum(float(rows[0][f"p_{c}"]) for c in CLASSES) == pytest.approx(1.0, abs=1e-4)
    assert rows[0]["emotion"] in CLASSES and int(rows[0]["w"]) > 50
    drawn = cv2.VideoCapture(str(tmp_path / "drawn" / "clip.mp4"))
    assert int(drawn.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert (int(drawn.get(cv2.CAP_PROP_FRAME_WIDTH)), int(drawn.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (256, 300)
    drawn.release()


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main([str(GRACE_HOPPER), "--model", str(tmp_path / "nope.onnx")]) == 2
    assert "nope.onnx" in capsys.readouterr().err
