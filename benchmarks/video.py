"""Row 8 of ``make bench``: video end to end (decode + detect + classify + track + smooth), frames/s.

A second row finds faces in every 5th frame only (``detect_every``), the tracks carrying them in between.
A 640x480 MJPG video is written first: two faces (Grace Hopper's, at about 150 px) that move across the frame.
``EmotionRecognizer.stream`` reads it back and gives every frame's tracked, smoothed faces; the baseline is the
per-frame path without tracking (decode, ``find_faces``, ``classify``), on the same frames in the same run.
The shipped ``fer2013`` model and the best installed detector, at the bench's thread count.

    python -m benchmarks.video [--frames 150]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import torch
from PIL import Image

from benchmarks.common import Row
from fer_lightning.deploy import EmotionRecognizer
from fer_lightning.deploy.video import rgb_frames

DETECT_EVERY = 5
GRACE = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def write_clip(path: Path, frames: int) -> Path:
    with Image.open(GRACE) as photo:
        face = cv2.cvtColor(np.asarray(photo.convert("RGB").resize((128, 150))), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (640, 480))
    for i in range(frames):
        frame = np.full((480, 640, 3), 100, np.uint8)
        x = 20 + (2 * i) % 300
        frame[60:210, x : x + 128] = face
        frame[260:410, 480 - x : 608 - x] = face
        writer.write(frame)
    writer.release()
    return path


def frames_per_second(
    recognizer: EmotionRecognizer, clip: Path, tracked: bool, detect_every: int = 1
) -> tuple[float, int]:
    start, frames, faces = time.perf_counter(), 0, 0
    if tracked:
        for frame in recognizer.stream(clip, detect_every=detect_every):
            frames, faces = frames + 1, faces + len(frame.faces)
    else:
        for _, _, rgb in rgb_frames(clip):
            boxes, crops = recognizer.find_faces(rgb)
            recognizer.results(boxes, recognizer.classify(crops))
            frames, faces = frames + 1, faces + len(boxes)
    return frames / (time.perf_counter() - start), faces


def video_rows(frames: int = 150, threads: int | None = None) -> list[Row]:
    recognizer = EmotionRecognizer.pretrained("fer2013", threads=threads, detector_threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.avi", frames)
        frames_per_second(recognizer, clip, True)  # warm-up: sessions, caches
        plain, _ = frames_per_second(recognizer, clip, False)
        tracked, faces = frames_per_second(recognizer, clip, True)
        carried, _ = frames_per_second(recognizer, clip, True, DETECT_EVERY)
    note = f"640x480, {frames} frames, {faces / frames:.1f} faces/frame, {recognizer.detector_name}, shipped fer2013"
    return [
        Row("Video: stream() end to end, tracked + smoothed", tracked, "frames/s", plain, tracked / plain, note),
        Row(
            f"Video: stream(detect_every={DETECT_EVERY}), faces carried between detections",
            carried,
            "frames/s",
            plain,
            carried / plain,
            "classified on every frame; baseline: the untracked per-frame path",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    args = parser.parse_args()
    for row in video_rows(args.frames, torch.get_num_threads()):
        print(row)


if __name__ == "__main__":
    main()
