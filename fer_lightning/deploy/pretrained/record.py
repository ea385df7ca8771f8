"""``python -m fer_lightning.deploy.pretrained.record NAME --ckpt CKPT``: what ``make models`` writes beside a
freshly exported ``NAME.onnx``: its sha256, metadata, its probabilities on a few synthetic faces (which the
tests compare against, so a changed file or runtime shows up), and how far its rounded (float16 or int8) weights
move them from the float32 checkpoint's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fer_lightning.deploy.pretrained import HERE, PRETRAINED, pretrained_path
from fer_lightning.deploy.recognizer import OnnxBackend
from fer_lightning.training.lineage import short_name

FACES = 8  # synthetic faces recorded
FACES_SEED = 0


def record_faces() -> np.ndarray:
    """The faces the outputs are recorded on: ``generate_faces(8, seed=0)``, uint8 (8, 48, 48)."""
    from fer_lightning.data.synthetic import generate_faces

    return generate_faces(FACES, seed=FACES_SEED).images.numpy()


def make_record(name: str, ckpt_paths: Sequence[Path]) -> dict:
    """``ckpt_paths``: the checkpoint the file was exported from, or the members of an ensemble file."""
    import torch

    from fer_lightning.export import build_wrapper

    path = pretrained_path(name)
    backend = OnnxBackend(path)
    meta = backend.session.get_modelmeta().custom_metadata_map
    temperature = float(meta.get("temperature", 1.0))
    faces = record_faces()
    probs = backend(faces)
    with torch.no_grad():
        fp32 = build_wrapper(ckpt_paths, backend.tta, temperature=temperature)(torch.from_numpy(faces)).numpy()
    return {
        "name": name,
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "class_names": backend.class_names,
        "checkpoints": [short_name(p) for p in ckpt_paths],
        "tta": backend.tta,
        "temperature": temperature,
        "faces": f"fer_lightning.data.synthetic.generate_faces({FACES}, seed={FACES_SEED})",
        "probs": np.round(probs, 6).tolist(),
        "max_abs_diff_vs_fp32_checkpoint": float(np.abs(probs - fp32).max()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_lightning.deploy.pretrained.record", description=__doc__)
    parser.add_argument("name", choices=PRETRAINED)
    parser.add_argument(
        "--ckpt", type=Path, nargs="+", required=True, help="the checkpoint(s) NAME.onnx was exported from"
    )
    args = parser.parse_args(argv)
    data = make_record(args.name, args.ckpt)
    (HERE / f"{args.name}.json").write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps({k: v for k, v in data.items() if k != "probs"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
