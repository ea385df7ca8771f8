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
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from fer_lightning.atomic import atomic_write, check_writable
from fer_lightning.deploy.batching import Batcher, Pending
from fer_lightning.deploy.faces import to_rgb
from fer_lightning.deploy.options import add_recognizer_arguments, check_recognizer_arguments, load_recognizer
from fer_lightning.deploy.recognizer import EmotionRecognizer, FaceResult, FoundFaces
from fer_lightning.deploy.timeline import TimelineWriter
from fer_lightning.deploy.tracking import FaceTracks
from fer_lightning.deploy.video import faces_of_frame, read_frames

__all__ = ["EmotionRecognizer", "FaceResult", "main", "run"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
STATUSES = ("ok", "no_face", "error")


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
    detector: str | None = None,
) -> dict:
    """The output schema: the same keys for every record, ``None`` where a field does not apply. ``detector``
    names the detector for a record without a face (``no_face``); a face's own comes with its ``result``."""
    return {
        "source": source,
        "frame": frame,
        "time_s": None if time_s is None else round(time_s, 4),
        "status": status,
        "face": face,
        "box": result.box if result else None,
        "detector": result.detector if result else detector,
        "detector_score": result.detector_score if result else None,
        "emotion": result.emotion if result else None,
        "confidence": result.confidence if result else None,
        "probs": result.probs if result else None,
        "track_id": result.track_id if result else None,
        "smoothed_emotion": result.smoothed_emotion if result else None,
        "smoothed_probs": result.smoothed_probs if result else None,
        "error": error,
    }


class RecordWriter:
    """JSON lines (one object per line) or CSV (box and probabilities in columns ``x,y,w,h``, ``p_<class>``)."""

    def __init__(self, stream: IO[str], fmt: str, class_names: Sequence[str]) -> None:
        self.stream, self.fmt = stream, fmt
        self.columns = ["source", "frame", "time_s", "status", "face", "x", "y", "w", "h"]
        self.columns += ["detector", "detector_score", "emotion", "confidence"]
        self.columns += [f"p_{name}" for name in class_names] + ["track_id", "smoothed_emotion"]
        self.columns += [f"s_{name}" for name in class_names] + ["error"]
        self.csv = csv.DictWriter(stream, self.columns) if fmt == "csv" else None
        if self.csv:
            self.csv.writeheader()

    def write(self, record: dict) -> None:
        if self.csv is None:
            self.stream.write(json.dumps(record, allow_nan=False) + "\n")  # NaN is not JSON: an error, never written
        else:
            row = {k: v for k, v in record.items() if k in self.columns}
            row.update(zip("xywh", record["box"] or [None] * 4))
            row.update({f"p_{k}": v for k, v in (record["probs"] or {}).items()})
            row.update({f"s_{k}": v for k, v in (record["smoothed_probs"] or {}).items()})
            self.csv.writerow(row)
        self.stream.flush()


def write_records(item: Pending, writer: RecordWriter, detector: str | None = None) -> None:
    """A photo or frame's records: one per face, or one ``no_face`` (naming the ``detector`` that looked)."""
    if not item.results:
        writer.write(make_record(item.source, "no_face", item.frame, item.time_s, detector=detector))
    for i, result in enumerate(item.results):
        writer.write(make_record(item.source, "ok", item.frame, item.time_s, i, result))


# ---- annotation ------------------------------------------------------------------------------------------------
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


# ---- media -----------------------------------------------------------------------------------------------------
def process_image(
    path: str,
    recognizer: EmotionRecognizer,
    batcher: Batcher,
    annotate: AnnotationFolder | None,
    found: FoundFaces | None = None,
) -> None:
    """``found``: what ``recognizer.find_faces_in_file(path)`` returned, when a worker thread already ran it."""
    image, reduction, boxes, faces = found or recognizer.find_faces_in_file(path)  # boxes full-size
    canvas = sink = None
    if annotate is not None:  # drawn on the image as decoded (a large JPEG: the reduced one, boxes scaled down)
        canvas, target = to_rgb(image), annotate.reserve(Path(path).stem, ".png")

        def sink(drawn: np.ndarray, target: Path = target) -> None:
            Image.fromarray(drawn).save(target)

    scale = 1.0 if reduction is None else reduction.scale
    batcher.add(Pending(path, None, None, boxes, faces, canvas, sink, canvas_scale=scale))


def process_video(
    item: Input,
    recognizer: EmotionRecognizer,
    batcher: Batcher,
    annotate: AnnotationFolder | None,
    every: int,
    max_frames: int | None,
    progress: bool | None,
    tracks: FaceTracks,
    detect_every: int = 1,
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
    stem = _stem(item)
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

    frames, seen = 0, [0]
    try:
        bar = tqdm(
            read_frames(capture, every, max_frames, item.kind == "camera", seen),
            total=expected,
            desc=item.name,
            unit="frame",
            disable=not progress if progress is not None else None,
            file=sys.stderr,
            leave=False,
        )
        for index, seconds, frame in bar:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            boxes, faces, ids = faces_of_frame(recognizer, tracks, rgb, seconds, frames % detect_every == 0)
            frames += 1
            canvas, draw = (frame, sink) if target else (None, None)
            batcher.add(Pending(item.name, index, seconds, boxes, faces, canvas, draw, track_ids=ids))
    finally:
        batcher.flush()  # also on Ctrl-C (how a webcam run ends): the frames read so far are reported and written
        capture.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        raise ValueError(f"{item.name}: no frame could be decoded")
    # A damaged or truncated file ends early: its container still says how many frames it has. Counts that
    # FFmpeg estimates from the duration can be a frame off, hence the tolerance.
    if total > 0 and seen[-1] == -1 and seen[0] < total - max(1, total // 100):
        raise ValueError(
            f"{item.name}: the video ended after {seen[0]} of its {total} frames (truncated or damaged file); "
            "the frames before that were processed"
        )


def _stem(item: Input) -> str:
    return Path(str(item.source)).stem if item.kind == "video" else f"camera_{item.source}"


# ---- look-ahead ------------------------------------------------------------------------------------------------
def found_ahead(
    items: Sequence[Input], recognizer: EmotionRecognizer, workers: int
) -> Iterator[tuple[Input, Future[FoundFaces] | None]]:
    """Each input, in order, with (for an image, when ``workers`` > 1) the future of its faces, found by
    ``workers`` threads up to ``2 * workers`` images ahead of the caller.

    Decoding (Pillow), detecting (ONNX Runtime, OpenCV) and aligning release the GIL, so the threads keep that
    many cores busy on the costly part of a photo while the caller classifies the faces in batches and writes
    the records in input order. Each thread finds faces with a detector of its own and one intra-op thread."""
    if workers <= 1:
        yield from ((item, None) for item in items)
        return
    local = threading.local()

    def find(path: str) -> FoundFaces:
        if not hasattr(local, "recognizer"):
            local.recognizer = recognizer.with_own_detector(threads=1)
        return local.recognizer.find_faces_in_file(path)

    with ThreadPoolExecutor(workers, thread_name_prefix="fer-predict-faces") as pool:
        ahead: deque[tuple[Input, Future[FoundFaces] | None]] = deque()
        for item in items:
            ahead.append((item, pool.submit(find, str(item.source)) if item.kind == "image" else None))
            while len(ahead) > 2 * workers or (ahead and ahead[-1][1] is None):  # a video: its turn comes in order
                yield ahead.popleft()
        yield from ahead


# ---- command line ---------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fer-predict",
        description="Facial expressions of every face in photos, folders, videos or a webcam (a digit: its index).",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, video files, webcam index")
    add_recognizer_arguments(parser)
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    parser.add_argument("--output", type=Path, help="write records here instead of stdout (never over an input)")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    parser.add_argument("--annotate", type=Path, metavar="DIR", help="write the images / videos with boxes and labels")
    parser.add_argument(
        "--explain", type=Path, metavar="DIR", help="write each face with its heat map (DIR/<input>_face<i>.png)"
    )
    parser.add_argument(
        "--explain-method",
        choices=("auto", "gradcam", "occlusion"),
        default="auto",
        help="auto: Grad-CAM for --ckpt, occlusion (gradient-free, slower) for ONNX models",
    )
    parser.add_argument("--every", type=int, default=1, metavar="N", help="video: process every N-th frame")
    parser.add_argument(
        "--detect-every",
        type=int,
        default=1,
        metavar="N",
        help="video: find faces in every N-th processed frame; in between, the tracks carry them (faster)",
    )
    parser.add_argument(
        "--smooth",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="video: smooth each person's probabilities over time, time constant SECONDS (0: off)",
    )
    parser.add_argument(
        "--max-gap",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="video: a person unseen for longer than this gets a new track ID when seen again",
    )
    parser.add_argument(
        "--timeline",
        type=Path,
        metavar="DIR",
        help="video: per person a CSV and a plot of the emotions over time, and a summary (DIR/<video stem>/)",
    )
    parser.add_argument("--max-frames", type=int, metavar="N", help="video / webcam: stop after N processed frames")
    parser.add_argument("--batch-size", type=int, default=64, help="faces per classifier call")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="photos: N threads decode and find faces ahead while the classifier runs (about one core each)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="video progress bar (default: when stderr is a terminal)",
    )
    args = parser.parse_args(argv)
    if min(args.every, args.batch_size, args.workers, args.detect_every) < 1 or (
        args.max_frames is not None and args.max_frames < 1
    ):
        parser.error("--every, --detect-every, --batch-size, --workers and --max-frames must be >= 1")
    if args.smooth < 0 or args.max_gap < 0:
        parser.error("--smooth and --max-gap are seconds, >= 0")
    if args.timeline is not None and args.timeline.exists() and not args.timeline.is_dir():
        parser.error(f"--timeline {args.timeline} is a file, not a folder")
    check_recognizer_arguments(parser, args)
    if args.annotate is not None and args.annotate.exists() and not args.annotate.is_dir():
        parser.error(f"--annotate {args.annotate} is a file, not a folder")
    return args


def run(args: argparse.Namespace, stream: IO[str]) -> int:
    """Process every input, writing records to ``stream``; returns the exit status (1 if any input failed)."""
    recognizer = load_recognizer(args, batch_size=args.batch_size)
    annotate = AnnotationFolder(args.annotate) if args.annotate is not None else None
    writer = RecordWriter(stream, args.format, recognizer.class_names)
    explain = None
    if args.explain is not None:
        from fer_lightning.deploy.explain import ExplanationFolder

        explain = ExplanationFolder(args.explain, recognizer, args.explain_method)

    processed = 0
    tracks: dict[str, FaceTracks] = {}  # per video: who is who, and their smoothed probabilities
    timelines: dict[str, TimelineWriter] = {}

    def done(item: Pending) -> None:
        nonlocal processed
        processed += 1
        if item.track_ids is not None:  # a video frame: tracked and smoothed (drawn so, too); photos never are
            item.results = tracks[item.source].smooth(item.results, item.track_ids, item.time_s)
            if item.source in timelines:
                timelines[item.source].add(item.frame, item.time_s, item.results)
        write_records(item, writer, recognizer.detector_name)
        if explain is not None:
            explain.write(item.source, item.frame, item.faces, item.results)

    batcher = Batcher(recognizer, done)
    failed = 0
    start = time.perf_counter()
    for item, found in found_ahead(expand_inputs(args.inputs), recognizer, args.workers):
        try:
            if item.kind == "error":
                raise ValueError(f"{item.name}: {item.error}")
            if item.kind == "image":
                process_image(str(item.source), recognizer, batcher, annotate, found and found.result())
            else:
                tracks[item.name] = FaceTracks(args.smooth, args.max_gap)
                if args.timeline is not None:
                    timelines[item.name] = TimelineWriter(args.timeline, _stem(item), recognizer.class_names)
                try:
                    process_video(
                        item,
                        recognizer,
                        batcher,
                        annotate,
                        args.every,
                        args.max_frames,
                        args.progress,
                        tracks[item.name],
                        args.detect_every,
                    )
                finally:  # a truncated video, Ctrl-C on a webcam: the timeline of the frames processed
                    batcher.flush()
                    tracks.pop(item.name)
                    if item.name in timelines:
                        timelines.pop(item.name).write()
        except (ValueError, OSError, cv2.error) as exc:
            batcher.flush()  # keep the records in input order
            failed += 1
            message = str(exc) if str(item.source) in str(exc) else f"{item.name}: {exc}"
            print(f"fer-predict: {message}", file=sys.stderr)
            writer.write(make_record(item.name, "error", error=message))
    batcher.flush()
    seconds = time.perf_counter() - start
    if processed > 1:  # the rate of a folder or a video, as wall-clock time (the model's loading left out)
        rate = f"{processed / seconds:.1f}" if seconds > 0 else "-"
        print(
            f"fer-predict: {processed} images/frames in {seconds:.1f} s: {rate} per second, "
            f"{recognizer.detector_name} detector, {args.workers} worker(s)",
            file=sys.stderr,
        )
    if failed:
        print(f"fer-predict: {failed} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def _input_files(args: argparse.Namespace) -> list[str]:
    """Every file this run reads: the inputs (folders expanded) and the model."""
    files = [str(item.source) for item in expand_inputs(args.inputs) if item.kind in ("image", "video")]
    return files + [str(path) for path in (args.ckpt, args.model) if path is not None and Path(path).is_file()]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.output is None:
            return run(args, sys.stdout)
        # Checked before the model is loaded; written beside and renamed at the end, so an earlier file is
        # replaced (--force) only by a complete one, and a failed run leaves nothing behind.
        output = check_writable(args.output, force=args.force, inputs=_input_files(args))
        with atomic_write(output) as tmp, tmp.open("w", newline="" if args.format == "csv" else None) as stream:
            try:
                return run(args, stream)
            except KeyboardInterrupt:  # how a webcam run ends: keep the records written so far
                return 130
    except (OSError, ValueError, RuntimeError) as exc:  # the model or the output cannot be used
        print(f"fer-predict: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
