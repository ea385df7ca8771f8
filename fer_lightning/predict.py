"""``fer-predict``: facial expressions in photos, folders, videos and webcams, one record per face.

    fer-predict photo.jpg holiday/ clip.mp4 --ckpt logs/train/runs/<run>/checkpoints/last.ckpt
    fer-predict 0 --model model.onnx --every 5 --annotate out/      # webcam 0, every 5th frame

Records go to stdout (or ``--output``) as JSON lines, or CSV with ``--format csv``; see ``docs/deploy.md`` for
the schema. An image without a face gives one ``no_face`` record; an unreadable input gives an ``error``
record (and a message on stderr), the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from fer_lightning.faces import Box, load_image, to_gray, to_rgb
from fer_lightning.recognizer import DETECTORS, EmotionRecognizer, FaceResult

__all__ = ["EmotionRecognizer", "FaceResult", "main", "run"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
STATUSES = ("ok", "no_face", "error")
MAX_PENDING_FRAMES = 32  # frames (or photos) held while their faces fill a batch
MAX_HELD_BYTES = 256 * 2**20  # ... and at most this much of their pixels kept for --annotate


# ---- inputs -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Input:
    kind: str  # image | video | camera | error
    source: str | int
    error: str = ""

    @property
    def name(self) -> str:
        return f"camera:{self.source}" if self.kind == "camera" else str(self.source)


def expand_inputs(items: Sequence[str]) -> list[Input]:
    """Files by suffix (videos by theirs, anything else is tried as an image), folders recursively (image and
    video files only, sorted), a bare digit string as a webcam index."""
    out: list[Input] = []
    for item in items:
        path = Path(item).expanduser()
        if item.isdigit() and not path.exists():
            out.append(Input("camera", int(item)))
        elif path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            )
            out += [Input("video" if p.suffix.lower() in VIDEO_SUFFIXES else "image", str(p)) for p in found]
            if not found:
                out.append(Input("error", item, "folder has no image or video files"))
        elif path.is_file():
            out.append(Input("video" if path.suffix.lower() in VIDEO_SUFFIXES else "image", item))
        else:
            out.append(Input("error", item, "no such file or directory"))
    return out


# ---- records --------------------------------------------------------------------------------------------------
def make_record(
    source: str,
    status: str,
    frame: int | None = None,
    time_s: float | None = None,
    face: int | None = None,
    result: FaceResult | None = None,
    error: str | None = None,
) -> dict:
    """The output schema: the same keys for every record, ``None`` where a field does not apply."""
    return {
        "source": source,
        "frame": frame,
        "time_s": None if time_s is None else round(time_s, 4),
        "status": status,
        "face": face,
        "box": result.box if result else None,
        "emotion": result.emotion if result else None,
        "confidence": result.confidence if result else None,
        "probs": result.probs if result else None,
        "error": error,
    }


class RecordWriter:
    """JSON lines (one object per line) or CSV (box and probabilities in columns ``x,y,w,h``, ``p_<class>``)."""

    def __init__(self, stream: IO[str], fmt: str, class_names: Sequence[str]) -> None:
        self.stream, self.fmt = stream, fmt
        self.columns = ["source", "frame", "time_s", "status", "face", "x", "y", "w", "h", "emotion", "confidence"]
        self.columns += [f"p_{name}" for name in class_names] + ["error"]
        self.csv = csv.DictWriter(stream, self.columns) if fmt == "csv" else None
        if self.csv:
            self.csv.writeheader()

    def write(self, record: dict) -> None:
        if self.csv is None:
            self.stream.write(json.dumps(record) + "\n")
        else:
            row = {k: v for k, v in record.items() if k in self.columns}
            row.update(zip("xywh", record["box"] or [None] * 4))
            row.update({f"p_{k}": v for k, v in (record["probs"] or {}).items()})
            self.csv.writerow(row)
        self.stream.flush()


# ---- annotation ------------------------------------------------------------------------------------------------
def draw_faces(rgb: np.ndarray, results: Sequence[FaceResult]) -> np.ndarray:
    """Boxes and "emotion confidence" labels drawn on a copy of an RGB (or BGR: colours are symmetric) image."""
    canvas = np.ascontiguousarray(rgb).copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    scale = max(0.4, max(canvas.shape[:2]) / 1000)
    for result in results:
        x, y, w, h = result.box
        cv2.rectangle(canvas, (x, y), (x + w, y + h), (0, 255, 0), thickness)
        label = f"{result.emotion} {result.confidence:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y - th - base - 2)
        cv2.rectangle(canvas, (x, top), (x + tw + 2, top + th + base + 2), (0, 255, 0), -1)
        cv2.putText(canvas, label, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness)
    return canvas


class AnnotationFolder:
    """Where ``--annotate`` writes: ``DIR/<input stem>.png`` for photos, ``DIR/<input stem>.mp4`` for videos, with
    ``_1``, ``_2``... when inputs share a stem. Names are reserved up front: images are written later, when
    their batch has been classified."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.reserved: set[Path] = set()

    def reserve(self, stem: str, suffix: str) -> Path:
        path, n = self.folder / f"{stem}{suffix}", 0
        while path.exists() or path in self.reserved:
            n += 1
            path = self.folder / f"{stem}_{n}{suffix}"
        self.reserved.add(path)
        return path


# ---- batching --------------------------------------------------------------------------------------------------
@dataclass
class Pending:
    """One photo or video frame whose faces wait for a batch; ``sink`` receives its annotated image."""

    source: str
    frame: int | None
    time_s: float | None
    boxes: list[Box]
    faces: np.ndarray
    canvas: np.ndarray | None = None
    sink: Callable[[np.ndarray], None] | None = None
    results: list[FaceResult] = field(default_factory=list)


class Batcher:
    """Collects faces across photos / frames and classifies them ``batch_size`` at a time, then emits records."""

    def __init__(self, recognizer: EmotionRecognizer, emit: Callable[[dict], None]) -> None:
        self.recognizer, self.emit = recognizer, emit
        self.pending: list[Pending] = []

    def add(self, item: Pending) -> None:
        self.pending.append(item)
        faces = sum(len(p.faces) for p in self.pending)
        held = sum(p.canvas.nbytes for p in self.pending if p.canvas is not None)
        if faces >= self.recognizer.batch_size or len(self.pending) >= MAX_PENDING_FRAMES or held > MAX_HELD_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        probs = self.recognizer.classify(np.concatenate([p.faces for p in self.pending]))
        start = 0
        for item in self.pending:
            item.results = self.recognizer.results(item.boxes, probs[start : start + len(item.faces)])
            start += len(item.faces)
            if not item.results:
                self.emit(make_record(item.source, "no_face", item.frame, item.time_s))
            for i, result in enumerate(item.results):
                self.emit(make_record(item.source, "ok", item.frame, item.time_s, i, result))
            if item.sink is not None and item.canvas is not None:
                item.sink(draw_faces(item.canvas, item.results))
        self.pending = []


# ---- media -----------------------------------------------------------------------------------------------------
def process_image(
    path: str, recognizer: EmotionRecognizer, batcher: Batcher, annotate: AnnotationFolder | None
) -> None:
    image = load_image(path)
    boxes, faces = recognizer.find_faces(to_gray(image))
    canvas = sink = None
    if annotate is not None:
        canvas, target = to_rgb(image), annotate.reserve(Path(path).stem, ".png")

        def sink(drawn: np.ndarray, target: Path = target) -> None:
            Image.fromarray(drawn).save(target)

    batcher.add(Pending(path, None, None, boxes, faces, canvas, sink))


def read_frames(
    capture: cv2.VideoCapture, every: int, max_frames: int | None, camera: bool
) -> Iterator[tuple[int, float, np.ndarray]]:
    """(frame index, seconds, BGR frame) for every ``every``-th frame; file times from the frame rate, camera
    times from the wall clock (webcams report nominal rates)."""
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    start, index, taken = time.monotonic(), -1, 0
    while max_frames is None or taken < max_frames:
        if not capture.grab():
            return
        index += 1
        if index % every:
            continue
        ok, frame = capture.retrieve()
        if not ok:
            return
        taken += 1
        if camera or fps <= 0:
            seconds = time.monotonic() - start if camera else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
        else:
            seconds = index / fps
        yield index, seconds, frame


def process_video(
    item: Input,
    recognizer: EmotionRecognizer,
    batcher: Batcher,
    annotate: AnnotationFolder | None,
    every: int,
    max_frames: int | None,
    progress: bool | None,
) -> None:
    capture = cv2.VideoCapture(item.source)
    if not capture.isOpened():
        raise ValueError(f"{item.name}: cannot open as a video{' (no such camera?)' if item.kind == 'camera' else ''}")
    writer: cv2.VideoWriter | None = None
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if item.kind == "video" else 0
    expected = -(-total // every) if total > 0 else None
    if expected is not None and max_frames is not None:
        expected = min(expected, max_frames)
    stem = Path(str(item.source)).stem if item.kind == "video" else f"camera_{item.source}"
    target = annotate.reserve(stem, ".mp4") if annotate else None

    def sink(drawn: np.ndarray) -> None:
        nonlocal writer
        if writer is None:
            h, w = drawn.shape[:2]
            rate = (fps if fps > 0 else 30.0) / every  # the annotated video holds the processed frames only
            writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), rate, (w, h))
            if not writer.isOpened():
                raise ValueError(f"{target}: OpenCV cannot write an mp4v video here")
        writer.write(drawn)  # frames stay BGR end to end

    frames = 0
    try:
        bar = tqdm(
            read_frames(capture, every, max_frames, item.kind == "camera"),
            total=expected,
            desc=item.name,
            unit="frame",
            disable=not progress if progress is not None else None,
            file=sys.stderr,
            leave=False,
        )
        for index, seconds, frame in bar:
            frames += 1
            boxes, faces = recognizer.find_faces(to_gray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
            batcher.add(
                Pending(item.name, index, seconds, boxes, faces, frame if target else None, sink if target else None)
            )
    finally:
        batcher.flush()  # also on Ctrl-C (how a webcam run ends): the frames read so far are reported and written
        capture.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        raise ValueError(f"{item.name}: no frame could be decoded")


# ---- command line ---------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fer-predict",
        description="Facial expressions of every face in photos, folders, videos or a webcam (a digit: its index).",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, video files, webcam index")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--ckpt", type=Path, help="a training checkpoint (only from a source you trust)")
    model.add_argument("--model", type=Path, help="an ONNX model written by fer-export")
    parser.add_argument("--detector", choices=DETECTORS, default="haar", help="none: every input is a cropped face")
    parser.add_argument(
        "--margin", type=float, default=0.1, help="added around each face box, as a fraction of its side"
    )
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    parser.add_argument("--output", type=Path, help="write records here instead of stdout")
    parser.add_argument("--annotate", type=Path, metavar="DIR", help="write the images / videos with boxes and labels")
    parser.add_argument("--every", type=int, default=1, metavar="N", help="video: process every N-th frame")
    parser.add_argument("--max-frames", type=int, metavar="N", help="video / webcam: stop after N processed frames")
    parser.add_argument("--batch-size", type=int, default=64, help="faces per classifier call")
    parser.add_argument("--max-side", type=int, default=1280, help="detect on images downscaled to this longer side")
    parser.add_argument("--device", default="auto", help="--ckpt only: auto | cpu | cuda")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="video progress bar (default: when stderr is a terminal)",
    )
    args = parser.parse_args(argv)
    if args.every < 1 or args.batch_size < 1 or (args.max_frames is not None and args.max_frames < 1):
        parser.error("--every, --batch-size and --max-frames must be >= 1")
    return args


def run(args: argparse.Namespace, stream: IO[str]) -> int:
    """Process every input, writing records to ``stream``; returns the exit status (1 if any input failed)."""
    options = {
        "detector": args.detector,
        "margin": args.margin,
        "batch_size": args.batch_size,
        "max_side": args.max_side,
    }
    if args.ckpt is not None:
        recognizer = EmotionRecognizer.from_checkpoint(args.ckpt, device=args.device, **options)
    else:
        recognizer = EmotionRecognizer.from_onnx(args.model, **options)
    annotate = AnnotationFolder(args.annotate) if args.annotate is not None else None
    writer = RecordWriter(stream, args.format, recognizer.class_names)
    batcher = Batcher(recognizer, writer.write)
    failed = 0
    for item in expand_inputs(args.inputs):
        try:
            if item.kind == "error":
                raise ValueError(f"{item.name}: {item.error}")
            if item.kind == "image":
                process_image(str(item.source), recognizer, batcher, annotate)
            else:
                process_video(item, recognizer, batcher, annotate, args.every, args.max_frames, args.progress)
        except (ValueError, OSError, cv2.error) as exc:
            batcher.flush()  # keep the records in input order
            failed += 1
            message = str(exc) if str(item.source) in str(exc) else f"{item.name}: {exc}"
            print(f"fer-predict: {message}", file=sys.stderr)
            writer.write(make_record(item.name, "error", error=message))
    batcher.flush()
    if failed:
        print(f"fer-predict: {failed} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.output is None:
            return run(args, sys.stdout)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("w", newline="" if args.format == "csv" else None) as stream:
            return run(args, stream)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # the model could not be loaded
        print(f"fer-predict: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
