"""``fer-predict``: facial expressions in photos, folders, videos and webcams, one record per face.

    fer-predict photo.jpg holiday/ clip.mp4 --ckpt logs/train/runs/<run>/checkpoints/last.ckpt
    fer-predict 0 --model model.onnx --every 5 --annotate out/      # webcam 0, every 5th frame

Records go to stdout (or ``--output``) as JSON lines, or CSV with ``--format csv``; see ``docs/deploy.md`` for
the schema. An image without a face gives one ``no_face`` record; an unreadable input gives an ``error``
record (and a message on stderr), the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from fer_lightning.atomic import atomic_write, check_writable
from fer_lightning.deploy.options import add_recognizer_arguments, check_recognizer_arguments, load_recognizer
from fer_lightning.deploy.predictor import Predictor, VideoOptions
from fer_lightning.deploy.recognizer import EmotionRecognizer, FaceResult
from fer_lightning.deploy.records import RecordWriter
from fer_lightning.deploy.sources import expand_inputs

__all__ = ["EmotionRecognizer", "FaceResult", "main", "run"]


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
    explain = None
    if args.explain is not None:
        from fer_lightning.deploy.explain import ExplanationFolder

        explain = ExplanationFolder(args.explain, recognizer, args.explain_method)
    video = VideoOptions(args.every, args.detect_every, args.max_frames, args.smooth, args.max_gap, args.progress)
    writer = RecordWriter(stream, args.format, recognizer.class_names)
    predictor = Predictor(recognizer, writer, video, args.workers, args.annotate, args.timeline, explain)
    start = time.perf_counter()
    failed = predictor.run(args.inputs)
    seconds = time.perf_counter() - start
    if predictor.processed > 1:  # the rate of a folder or a video, as wall-clock time (the model's loading left out)
        rate = f"{predictor.processed / seconds:.1f}" if seconds > 0 else "-"
        print(
            f"fer-predict: {predictor.processed} images/frames in {seconds:.1f} s: {rate} per second, "
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
