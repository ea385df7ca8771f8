"""The model and face-finding options that ``fer-predict`` and ``fer-serve`` share: declared, checked and turned
into an ``EmotionRecognizer`` in one place, so both commands accept the same flags with the same meaning."""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_lightning.deploy.pretrained import DEFAULT, PRETRAINED
from fer_lightning.deploy.recognizer import DETECTORS, MIN_SIDE, EmotionRecognizer


def add_recognizer_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--ckpt", type=Path, help="a training checkpoint (only from a source you trust; needs torch)")
    model.add_argument(
        "--model",
        default=DEFAULT,
        help=f"a shipped model ({' | '.join(PRETRAINED)}; default: {DEFAULT}) or an ONNX file written by fer-export",
    )
    parser.add_argument("--device", default="auto", help="--ckpt only: auto | cpu | cuda")
    parser.add_argument(
        "--detector",
        choices=DETECTORS,
        default="auto",
        help="auto: the best installed (retinaface with onnxruntime, else haar); none: every input is a face",
    )
    parser.add_argument(
        "--align",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="turn faces upright from their eye landmarks before cropping (retinaface)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.1,
        help="added around each face box, as a fraction of its side (box crops: haar, or --no-align)",
    )
    parser.add_argument(
        "--max-side",
        type=int,
        help="detect on images downscaled to this longer side (default: the detector's, retinaface 640, haar 1280)",
    )


def check_recognizer_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad values before any model is loaded."""
    if args.max_side is not None and args.max_side < MIN_SIDE:
        parser.error(f"--max-side must be >= {MIN_SIDE} (the face detector's window), got {args.max_side}")
    if not args.margin >= 0:
        parser.error(f"--margin must be >= 0, got {args.margin}")


def load_recognizer(args: argparse.Namespace, threads: int | None = None, **options) -> EmotionRecognizer:
    """The recognizer those options describe; ``threads``: ONNX Runtime's (ONNX models only)."""
    options = {
        "detector": args.detector,
        "margin": args.margin,
        "max_side": args.max_side,
        "align": args.align,
        **options,
    }
    if args.ckpt is not None:
        return EmotionRecognizer.from_checkpoint(args.ckpt, device=args.device, **options)
    return EmotionRecognizer.from_model(args.model, threads=threads, **options)
