"""Tracks, smoothing, timelines and EmotionRecognizer.stream on synthetic boxes and videos written in tmp_path."""

from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_lightning.deploy import EmotionRecognizer
from fer_lightning.deploy.faces import Box
from fer_lightning.deploy.recognizer import FaceResult
from fer_lightning.deploy.tracking import BoxTracker, FaceTracks, ProbabilitySmoother
from fer_lightning.predict import main
from tests.helpers.deploy import GRACE_HOPPER, check_record, tiny_onnx

FPS = 30.0


def id_switches(per_frame: list[dict[str, int]]) -> int:
    """How often a person's track ID changed from one frame to the next (``{person: track ID}`` per frame)."""
    switches, last = 0, {}
    for frame in per_frame:
        for person, track in frame.items():
            switches += person in last and last[person] != track
            last[person] = track
    return switches


def test_two_faces_that_cross_keep_their_ids():
    tracker = BoxTracker(max_gap_s=1.0)
    frames = []
    for i in range(60):  # A moves right, B left; they overlap for about a dozen frames around i = 30
        a, b = Box(40 + 6 * i, 100, 80, 80), Box(400 - 6 * i, 112, 80, 80)
        ids = tracker.update([a, b], i / FPS)
        frames.append({"A": ids[0], "B": ids[1]})
    assert id_switches(frames) == 0 and frames[0] == {"A": 1, "B": 2}


def test_crossing_in_detector_order_that_flips():
    tracker = BoxTracker()
    frames = []
    for i in range(60):  # the detector lists the larger face first: their order flips half-way
        a, b = Box(40 + 6 * i, 100, 80 + (i > 30) * 4, 80), Box(400 - 6 * i, 112, 82, 80)
        boxes = [a, b] if a.w * a.h > b.w * b.h else [b, a]
        ids = dict(zip(["A", "B"] if boxes[0] is a else ["B", "A"], tracker.update(boxes, i / FPS)))
        frames.append(ids)
    assert id_switches(frames) == 0


def test_missed_frames_leaving_and_coming_back():
    tracker = BoxTracker(max_gap_s=1.0)
    box = Box(100, 100, 80, 80)
    first = tracker.update([box], 0.0)
    assert tracker.update([], 0.1) == []  # a frame without faces
    assert tracker.update([box], 0.6) == first  # back within the gap: the same person
    assert tracker.update([box], 2.0) != first  # back after more than max_gap: a new track
    assert tracker.ended == first


def test_smoothing_is_an_ema_weighted_by_time():
    smoother = ProbabilitySmoother(0.5)
    p0, p1 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert np.allclose(smoother.update(1, 0.0, p0), p0)  # a track's first frame is its own average
    weight = 1 - math.exp(-0.5 / 0.5)
    assert np.allclose(smoother.update(1, 0.5, p1), p0 + weight * (p1 - p0))
    # 15 fps and 30 fps smooth alike: two 1/30 s steps equal one 1/15 s step
    a, b = ProbabilitySmoother(0.5), ProbabilitySmoother(0.5)
    a.update(1, 0.0, p0), b.update(1, 0.0, p0)
    a.update(1, 1 / 30, p1)
    assert np.allclose(a.update(1, 2 / 30, p1), b.update(1, 2 / 30, p1))
    off = ProbabilitySmoother(0.0)
    off.update(1, 0.0, p0)
    assert np.allclose(off.update(1, 0.1, p1), p1)


def result(box: list[int], probs: list[float]) -> FaceResult:
    names = ["happy", "sad"]
    return FaceResult(box, names[int(np.argmax(probs))], max(probs), dict(zip(names, probs)))


def test_face_tracks_set_ids_and_smoothed_fields():
    tracks = FaceTracks(smooth_s=1.0)
    first = tracks.update([result([0, 0, 50, 50], [0.9, 0.1])], 0.0)[0]
    second = tracks.update([result([2, 0, 50, 50], [0.2, 0.8])], 0.1)[0]
    assert first.track_id == second.track_id == 1 and second.emotion == "sad"
    assert second.smoothed_emotion == "happy"  # one sad frame does not flip a second-long average
    assert sum(second.smoothed_probs.values()) == pytest.approx(1.0)


def moving_face_frames(n: int, blank: tuple[int, ...] = ()) -> list[np.ndarray]:
    with Image.open(GRACE_HOPPER) as photo:
        face = np.asarray(photo.convert("RGB").resize((128, 150)))
    frames = []
    for i in range(n):
        frame = np.full((240, 320, 3), 90, np.uint8)
        if i not in blank:
            frame[40:190, 20 + 4 * i : 148 + 4 * i] = face
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory) -> EmotionRecognizer:
    return EmotionRecognizer.from_onnx(tiny_onnx(tmp_path_factory))


def test_stream_on_a_frame_iterator(recognizer):
    frames = list(recognizer.stream(iter(moving_face_frames(12, blank=(5,))), smooth=0.5, fps=10))
    assert [f.frame for f in frames] == list(range(12)) and frames[3].time_s == pytest.approx(0.3)
    assert frames[5].faces == []
    faces = [f.faces[0] for f in frames if f.faces]
    assert len(faces) == 11 and {f.track_id for f in faces} == {1}  # one person, through the empty frame
    assert faces[0].smoothed_probs == pytest.approx(faces[0].probs)
    assert all(sum(f.smoothed_probs.values()) == pytest.approx(1.0, abs=1e-6) for f in faces)
    every = list(recognizer.stream(iter(moving_face_frames(12)), every=3, fps=10))
    assert [f.frame for f in every] == [0, 3, 6, 9]


def write_video(path, frames: list[np.ndarray]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_fer_predict_video_tracks_smooths_and_writes_the_timeline(tmp_path, tmp_path_factory):
    video = tmp_path / "clip.avi"
    write_video(video, moving_face_frames(16, blank=(6,)))
    out, timeline = tmp_path / "rows.jsonl", tmp_path / "timeline"
    model = str(tiny_onnx(tmp_path_factory))
    args = [str(video), "--model", model, "--output", str(out), "--timeline", str(timeline), "--smooth", "0.4"]
    assert main(args) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    classes = list(next(r for r in records if r["status"] == "ok")["probs"])
    for record in records:
        check_record(record, classes)
    faces = [r for r in records if r["status"] == "ok"]
    assert len(faces) == 15 and {r["track_id"] for r in faces} == {1}
    folder = timeline / "clip"
    with (folder / "track_1.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["frame"]) for r in rows] == [r["frame"] for r in faces]
    assert [r["emotion"] for r in rows] == [r["smoothed_emotion"] for r in faces]
    assert float(rows[3][f"s_{classes[0]}"]) == pytest.approx(faces[3]["smoothed_probs"][classes[0]], abs=1e-6)
    with (folder / "summary.csv").open() as fh:
        (summary,) = list(csv.DictReader(fh))
    assert int(summary["frames"]) == 15
    assert sum(float(summary[f"share_{c}"]) for c in classes) == pytest.approx(1.0)
    assert Image.open(folder / "timeline.png").size[0] > 500
    assert main(args[:-4] + ["--output", str(tmp_path / "again.jsonl"), "--timeline", str(timeline)]) == 0
    assert (timeline / "clip_1" / "summary.csv").is_file()  # the earlier timeline is kept
    assert main([str(video), "--model", model, "--output", str(tmp_path / "raw.jsonl"), "--smooth", "0"]) == 0
    raw = [json.loads(line) for line in (tmp_path / "raw.jsonl").read_text().splitlines()]
    assert all(r["smoothed_probs"] == pytest.approx(r["probs"]) for r in raw if r["status"] == "ok")


def test_a_truncated_video_still_gets_the_timeline_of_its_frames(tmp_path, tmp_path_factory):
    """The file breaks half-way: exit status 1 and an error record, and the timeline holds every frame before it."""
    video = tmp_path / "clip.avi"
    write_video(video, moving_face_frames(24))
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    out, timeline = tmp_path / "rows.jsonl", tmp_path / "timeline"
    args = [str(cut), "--model", str(tiny_onnx(tmp_path_factory)), "--output", str(out), "--timeline", str(timeline)]
    assert main(args) == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[-1]["status"] == "error" and "of its 24 frames" in records[-1]["error"]
    faces = [r for r in records if r["status"] == "ok"]
    assert 0 < len(faces) < 24
    with (timeline / "cut" / "track_1.csv").open() as fh:
        assert [int(r["frame"]) for r in csv.DictReader(fh)] == [r["frame"] for r in faces]
    with (timeline / "cut" / "summary.csv").open() as fh:
        assert int(next(csv.DictReader(fh))["frames"]) == len(faces)


def test_detect_every_carries_the_faces_between_detections(recognizer, monkeypatch):
    frames = moving_face_frames(12)
    every_frame = list(recognizer.stream(iter(frames), fps=10))
    calls = []
    real = recognizer.find_faces
    monkeypatch.setattr(recognizer, "find_faces", lambda image: calls.append(1) or real(image))
    carried = list(recognizer.stream(iter(frames), fps=10, detect_every=4))
    assert len(calls) == 3  # frames 0, 4 and 8
    assert all(len(f.faces) == 1 and f.faces[0].track_id == 1 for f in carried)
    # The face moves 4 px a frame. Until the second detection the track has no velocity (the box stays); from
    # then on the carried box follows the face.
    for k, (detected, moved) in enumerate(zip(every_frame, carried)):
        error = np.abs(np.subtract(detected.faces[0].box, moved.faces[0].box)).max()
        assert error <= (4 * k + 4 if k < 4 else 8), k
    assert sum(carried[5].faces[0].probs.values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="detect_every must be >= 1"):
        next(recognizer.stream(iter(frames), detect_every=0))


def test_fer_predict_detect_every_tracks_the_carried_faces(tmp_path, tmp_path_factory):
    video = tmp_path / "clip.avi"
    write_video(video, moving_face_frames(12))
    out = tmp_path / "rows.jsonl"
    model = str(tiny_onnx(tmp_path_factory))
    assert main([str(video), "--model", model, "--output", str(out), "--detect-every", "4", "--batch-size", "5"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(12)) and {r["track_id"] for r in records} == {1}
    for record in records:
        check_record(record, list(record["probs"]))
