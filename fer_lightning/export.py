"""``fer-export``: a checkpoint as a self-contained ONNX or TorchScript model that takes raw pixels.

    fer-export --ckpt logs/train/runs/<run>/checkpoints/last.ckpt --format onnx --output model.onnx

The exported graph is ``RawPixelClassifier``: a batch of faces (N, 48, 48) or (N, 1, 48, 48) with raw pixel
values 0..255 in, class probabilities (N, 7) out, any N. Casting, the channel dimension, a crop-trained model's
centre crop, the normalisation and the softmax are inside, so users need no code of ours.

* ONNX: input ``pixels`` float32 (uint8 faces cast with ``faces.astype(np.float32)``, which is exact), output
  ``probs``; metadata ``class_names`` (JSON list) and ``input_size``. Exported with the TorchScript-based
  exporter (``dynamo=False``): it needs neither onnxscript nor a network connection.
* TorchScript: the network traced, the wrapper scripted; takes uint8 or float tensors directly;
  ``class_names`` in the archive's extra files. (torch 2.14 deprecates TorchScript: prefer ONNX.)

Sharing an ONNX file is the safe way to share a model: unlike a checkpoint (a pickle) it cannot run code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer_lightning.data.splits import IMAGE_SIZE
from fer_lightning.inference import RawPixelClassifier, load_classifier, model_input_size
from fer_lightning.module import FERClassifier

FORMATS = ("onnx", "torchscript")
OPSET = 17
TOLERANCE = 1e-4


def build_wrapper(ckpt_path: str | Path) -> RawPixelClassifier:
    """The raw-pixel model of a checkpoint, on the CPU, in eval mode."""
    classifier = load_classifier(ckpt_path, "cpu")
    return RawPixelClassifier(classifier, model_input_size(classifier, ckpt_path)).eval()


def _example(batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 1, IMAGE_SIZE, IMAGE_SIZE), generator=generator, dtype=torch.uint8)


def _write_onnx(model: RawPixelClassifier, path: Path, opset: int) -> None:
    import onnx

    with warnings.catch_warnings():  # the legacy exporter announces its deprecation on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (_example().float(),),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["pixels"],
            output_names=["probs"],
            dynamic_axes={"pixels": {0: "batch"}, "probs": {0: "batch"}},
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    # The graph reshapes its input to (N, 1, 48, 48) itself: leave the declared rank open so (N, 48, 48) is valid.
    proto.graph.input[0].type.tensor_type.ClearField("shape")
    meta = {
        "class_names": json.dumps(list(model.classifier.class_names)),
        "input_size": str(model.input_size),
        "input": "pixels: float32 (N, 48, 48) or (N, 1, 48, 48), raw grayscale values 0..255",
        "output": "probs: float32 (N, classes), softmax probabilities",
    }
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


class _Normalised(nn.Module):
    """``FERClassifier.forward`` without the LightningModule around it, which ``torch.jit.trace`` cannot walk
    (its ``trainer`` property raises outside a Trainer). ``verify`` checks it still matches the original."""

    def __init__(self, classifier: FERClassifier) -> None:
        super().__init__()
        self.net = classifier.net
        self.register_buffer("input_mean", classifier.input_mean.detach().clone())
        self.register_buffer("input_std", classifier.input_std.detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.input_mean) / self.input_std)


def _write_torchscript(model: RawPixelClassifier, path: Path) -> None:
    """Trace the network, script the thin wrapper around it: the script keeps the wrapper's cast from any dtype,
    the trace accepts any architecture."""
    size = model.input_size
    extra = {"class_names": json.dumps(list(model.classifier.class_names)), "input_size": str(size)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates TorchScript; ONNX is the way ahead
        core = torch.jit.trace(_Normalised(model.classifier).eval(), torch.zeros(2, 1, size, size))
        torch.jit.save(torch.jit.script(RawPixelClassifier(core, size)), str(path), _extra_files=extra)


def _run_exported(path: Path, fmt: str, faces: torch.Tensor) -> np.ndarray:
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"pixels": faces.numpy().astype(np.float32)})[0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")(faces).numpy()


def verify(model: RawPixelClassifier, path: Path, fmt: str) -> float:
    """Largest difference between the exported and the PyTorch model's probabilities on random faces."""
    faces = _example(batch=3, seed=1)[:, 0]  # (N, 48, 48) uint8: the other layout than the one exported
    with torch.no_grad():
        expected = model(faces).numpy()
    return float(np.abs(_run_exported(path, fmt, faces) - expected).max())


def export(ckpt_path: str | Path, fmt: str, output: str | Path, force: bool = False, opset: int = OPSET) -> Path:
    """Write ``ckpt_path`` as ``fmt`` to ``output`` (atomically; never over an existing file unless ``force``)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    output = Path(output).expanduser()
    if output.exists() and not force:
        raise FileExistsError(f"{output} already exists; pass --force to overwrite it")
    model = build_wrapper(ckpt_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write_onnx(model, tmp, opset) if fmt == "onnx" else _write_torchscript(model, tmp)
        error = verify(model, tmp, fmt)
        if error > TOLERANCE:
            raise RuntimeError(f"the exported {fmt} model differs from PyTorch by {error:.2e} (> {TOLERANCE})")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fer-export", description="Export a checkpoint as ONNX or TorchScript.")
    parser.add_argument("--ckpt", type=Path, required=True, help="training checkpoint (loaded with weights_only=True)")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--output", type=Path, required=True, help="file to write, e.g. model.onnx or model.pt")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    parser.add_argument("--opset", type=int, default=OPSET, help="ONNX opset version")
    args = parser.parse_args(argv)
    try:
        path = export(args.ckpt, args.format, args.output, force=args.force, opset=args.opset)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
        print(f"fer-export: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
