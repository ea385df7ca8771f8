"""``fer-export``: a checkpoint as a self-contained ONNX or TorchScript model that takes raw pixels.

    fer-export --ckpt logs/train/runs/<run>/checkpoints/last.ckpt --format onnx --output model.onnx

The exported graph is ``RawPixelClassifier``: a batch of faces (N, 48, 48) or (N, 1, 48, 48) with raw pixel
values 0..255 in, class probabilities (N, 7) out, any N. Casting, the channel dimension, a crop-trained model's
centre crop, the normalisation and the softmax are inside, so users need no code of ours.

* ONNX: input ``pixels`` float32 (uint8 faces cast with ``faces.astype(np.float32)``, which is exact), output
  ``probs``; metadata ``class_names`` (JSON list), ``input_size`` and ``tta`` (``none``, or ``flip``: see
  ``--tta``), ``temperature``, and ``distilled_from`` (a distilled checkpoint's teachers, a JSON tree:
  ``training/lineage.py``) or ``ensemble_of`` (several checkpoints' members). Exported with the TorchScript-based
  exporter (``dynamo=False``): it needs neither onnxscript nor a network connection.
* TorchScript: the network traced, the wrapper scripted; takes uint8 or float tensors directly;
  ``class_names`` in the archive's extra files. (torch 2.14 deprecates TorchScript: prefer ONNX.)

Sharing an ONNX file is the safe way to share a model: unlike a checkpoint (a pickle) it cannot run code.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer_lightning.atomic import atomic_write, check_writable
from fer_lightning.deploy.checkpoint import (
    DEPLOY_TTA,
    TENCROP_SIDE,
    ProbabilityAverage,
    RawPixelClassifier,
    load_classifier,
    model_input_size,
)
from fer_lightning.labels import IMAGE_SIZE
from fer_lightning.training.lineage import describe_model, distilled_from
from fer_lightning.training.module import FERClassifier

FORMATS = ("onnx", "torchscript")
OPSET = 17
MIN_OPSET, MAX_OPSET = 9, 20  # what torch's TorchScript-based ONNX exporter writes


def checkpoint_paths(ckpt_path: str | Path | Sequence[str | Path]) -> list[Path]:
    """One checkpoint or several, as a list."""
    return [Path(ckpt_path)] if isinstance(ckpt_path, (str, Path)) else [Path(p) for p in ckpt_path]


def build_wrapper(
    ckpt_path: str | Path | Sequence[str | Path],
    tta: str = "none",
    tta_crop: int = TENCROP_SIDE,
    temperature: float = 1.0,
) -> RawPixelClassifier:
    """The raw-pixel model of a checkpoint, or of several averaged (``ProbabilityAverage``), on the CPU, in eval
    mode."""
    paths = checkpoint_paths(ckpt_path)
    classifiers = [load_classifier(path, "cpu") for path in paths]
    for path, classifier in zip(paths, classifiers):
        if classifier.hparams["net"].get("in_channels", 1) != 1:
            raise ValueError(
                f"{path}: the network takes {classifier.hparams['net']['in_channels']}-channel faces; the exported "
                "models and fer-predict take 48x48 grayscale faces (evaluate scores it as it is)"
            )
    classifier = classifiers[0] if len(classifiers) == 1 else ProbabilityAverage(classifiers, temperature)
    return RawPixelClassifier(classifier, model_input_size(classifier), tta, tta_crop, temperature).eval()


def _example(batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 1, IMAGE_SIZE, IMAGE_SIZE), generator=generator, dtype=torch.uint8)


def _large_weights(proto) -> list:
    """The float32 initializers worth rounding: scalars and tiny vectors gain nothing, and shapes stay exact."""
    from onnx import TensorProto

    return [w for w in proto.graph.initializer if w.data_type == TensorProto.FLOAT and int(np.prod(w.dims)) >= 64]


def _prepend(proto, nodes: list) -> None:
    existing = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes + existing)


def store_weights_fp16(proto) -> None:
    """Halve the file: float32 weights stored as float16 and cast back to float32 when the graph is loaded
    (ONNX Runtime folds the casts at session start), so inference still computes in fp32 at fp32 speed."""
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for weight in _large_weights(proto):
        name = weight.name
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight).astype(np.float16), f"{name}.fp16"))
        casts.append(helper.make_node("Cast", [f"{name}.fp16"], [name], to=TensorProto.FLOAT, name=f"{name}.to_fp32"))
    _prepend(proto, casts)


def store_weights_int8(proto) -> None:
    """Quarter the file: each convolution and linear weight stored as int8 with one float32 scale per output
    channel (symmetric, the scale maps the channel's largest magnitude to 127), turned back into float32 by a
    Cast and a Mul that ONNX Runtime folds at session start: fp32 arithmetic at fp32 speed. Per-channel scales
    keep the rounding error of a channel proportional to that channel's own weights. Biases and other vectors
    stay float32 (they are small, and a bias's error is not scaled down by anything)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    for weight in _large_weights(proto):
        if len(weight.dims) < 2:
            continue
        name, values = weight.name, numpy_helper.to_array(weight)
        peak = np.abs(values.reshape(values.shape[0], -1)).max(axis=1)
        scale = (np.where(peak > 0, peak, 1.0) / 127).astype(np.float32).reshape(-1, *[1] * (values.ndim - 1))
        quantized = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
        weight.CopyFrom(numpy_helper.from_array(quantized, f"{name}.int8"))
        proto.graph.initializer.append(numpy_helper.from_array(scale, f"{name}.scale"))
        nodes += [
            helper.make_node("Cast", [f"{name}.int8"], [f"{name}.as_fp32"], to=TensorProto.FLOAT, name=f"{name}.cast"),
            helper.make_node("Mul", [f"{name}.as_fp32", f"{name}.scale"], [name], name=f"{name}.dequantize"),
        ]
    _prepend(proto, nodes)


@dataclass(frozen=True)
class WeightStorage:
    """How an ONNX file stores its weights (it always computes in float32): the graph rewrite (None: as
    exported), the note for the file's metadata, and the largest change in a probability the export may make
    (measure the accuracy before shipping a rounded model)."""

    store: Callable | None
    note: str | None
    tolerance: float


WEIGHTS = {
    "float32": WeightStorage(None, None, 1e-4),
    "float16": WeightStorage(store_weights_fp16, "float16, computed in float32", 1e-2),
    "int8": WeightStorage(store_weights_int8, "int8 per output channel, computed in float32", 5e-2),
}


def _write_onnx(
    model: RawPixelClassifier,
    path: Path,
    opset: int,
    weights: str = "float32",
    provenance: dict[str, str] | None = None,
) -> None:
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
    meta = {
        "class_names": json.dumps(list(model.classifier.class_names)),
        "input_size": str(model.input_size),
        "normalisation": (
            f"inside the graph: (pixels - {float(model.classifier.input_mean):.4f}) / "
            f"{float(model.classifier.input_std):.4f}"
        ),
        "input": "pixels: float32 (N, 48, 48) or (N, 1, 48, 48), raw grayscale values 0..255",
        "output": "probs: float32 (N, classes), softmax probabilities",
        "tta": model.tta,
        "temperature": f"{model.temperature:g}",
    }
    if model.temperature != 1.0:
        meta["output"] += f", at temperature {model.temperature:g} (logits divided by it before the softmax)"
    if isinstance(model.classifier, ProbabilityAverage):
        meta["output"] += f", the mean of {len(model.classifier.members)} networks'"
    if model.tta == "flip":
        meta["output"] += ", averaged over each face and its mirror image"
    if model.tta == "tencrop":
        meta["tta_crop"] = str(model.tta_crop)
        meta["output"] += f", averaged over the 4 corner and the centre {model.tta_crop} px crops and their mirrors"
    storage = WEIGHTS[weights]
    if storage.store is not None:
        storage.store(proto)
        meta["weights"] = storage.note
    meta.update(provenance or {})
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)  # before the next step: the checker wants every input's shape declared
    # The graph reshapes its input to (N, 1, 48, 48) itself: leave the declared rank open so (N, 48, 48) is valid.
    proto.graph.input[0].type.tensor_type.ClearField("shape")
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


def _write_torchscript(model: RawPixelClassifier, path: Path, provenance: dict[str, str] | None = None) -> None:
    """Trace the network, script the thin wrapper around it: the script keeps the wrapper's cast from any dtype,
    the trace accepts any architecture."""
    size = model.input_size
    extra = {"class_names": json.dumps(list(model.classifier.class_names)), "input_size": str(size), "tta": model.tta}
    extra["temperature"] = f"{model.temperature:g}"
    if model.tta == "tencrop":
        extra["tta_crop"] = str(model.tta_crop)
    extra.update(provenance or {})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates TorchScript; ONNX is the way ahead
        core = torch.jit.trace(_Normalised(model.classifier).eval(), torch.zeros(2, 1, size, size))
        torch.jit.save(
            torch.jit.script(RawPixelClassifier(core, size, model.tta, model.tta_crop, model.temperature)),
            str(path),
            _extra_files=extra,
        )


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
    got = _run_exported(path, fmt, faces)
    if not (np.isfinite(got).all() and np.isfinite(expected).all()):
        raise ValueError("the model outputs NaN or infinite probabilities: refusing to export it")
    return float(np.abs(got - expected).max())


def export(
    ckpt_path: str | Path | Sequence[str | Path],
    fmt: str,
    output: str | Path,
    force: bool = False,
    opset: int = OPSET,
    weights: str = "float32",
    tta: str = "none",
    tta_crop: int = TENCROP_SIDE,
    temperature: float = 1.0,
) -> Path:
    """Write ``ckpt_path`` as ``fmt`` to ``output`` (atomically; never over an existing file unless ``force``).

    ``weights`` (ONNX only): how the file stores the weights: float16 halves the file, int8 quarters it; both
    compute in float32 (see ``store_weights_fp16`` and ``store_weights_int8``). ``tta``: ``flip`` averages each
    face's probabilities with its mirror image's, ``tencrop`` over ten views, the corner and centre crops of side
    ``tta_crop`` and their mirrors (``RawPixelClassifier``). ``temperature`` divides the logits before the softmax
    (fit one with ``evaluate split=val fit_temperature=true tta=<the same>``). Several checkpoints make one ONNX
    file of their averaged probabilities, as evaluate's ``ckpt_path=[a,b]`` scores them."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if weights not in WEIGHTS:
        raise ValueError(f"weights {weights!r} is not one of {', '.join(WEIGHTS)}")
    if weights != "float32" and fmt != "onnx":
        raise ValueError(f"{weights} weights are for ONNX exports only")
    if fmt == "onnx" and not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"--opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET} (default {OPSET})")
    paths = checkpoint_paths(ckpt_path)
    if len(paths) > 1 and fmt != "onnx":
        raise ValueError("an ensemble of checkpoints exports as ONNX only")
    output = check_writable(output, force=force, inputs=paths)  # before the model is loaded
    model = build_wrapper(paths, tta, tta_crop, temperature)  # refuses a checkpoint with NaN or infinite weights
    tolerance = WEIGHTS[weights].tolerance
    provenance = provenance_of(paths)
    with atomic_write(output) as tmp:
        if fmt == "onnx":
            _write_onnx(model, tmp, opset, weights, provenance)
        else:
            _write_torchscript(model, tmp, provenance)
        error = verify(model, tmp, fmt)
        if not error <= tolerance:  # NaN too
            raise RuntimeError(f"the exported {fmt} model differs from PyTorch by {error:.2e} (> {tolerance})")
    return output


def provenance_of(paths: list[Path]) -> dict[str, str]:
    """Metadata naming where the weights came from: an ensemble's members, or a distilled model's teachers."""
    if len(paths) > 1:
        return {"ensemble_of": json.dumps([describe_model(path) for path in paths])}
    teachers = distilled_from(paths[0])
    return {"distilled_from": json.dumps(teachers)} if teachers else {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fer-export", description="Export a checkpoint as ONNX or TorchScript.")
    parser.add_argument(
        "--ckpt",
        type=Path,
        nargs="+",
        required=True,
        help="training checkpoint (loaded with weights_only=True); several: one ONNX file of their mean probabilities",
    )
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--output", type=Path, required=True, help="file to write, e.g. model.onnx or model.pt")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    parser.add_argument("--opset", type=int, default=OPSET, help="ONNX opset version")
    parser.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="float32",
        help="ONNX: how the file stores the weights (float16: half the file, int8: a quarter; float32 arithmetic)",
    )
    parser.add_argument(
        "--tta",
        choices=DEPLOY_TTA,
        default="none",
        help="flip: the model averages each face with its mirror image (evaluate's tta=flip; twice the work); "
        "tencrop: over the corner and centre crops and their mirrors (evaluate's tta=tencrop; 10x the work)",
    )
    parser.add_argument(
        "--tta-crop",
        type=int,
        default=TENCROP_SIDE,
        help=f"--tta tencrop: the crops' side in px, at most the model's input size (default {TENCROP_SIDE})",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="divide the logits by it before the softmax: the val/temperature of evaluate split=val "
        "fit_temperature=true with the same tta (calibrated probabilities, the same predictions)",
    )
    args = parser.parse_args(argv)
    try:
        path = export(
            args.ckpt,
            args.format,
            args.output,
            force=args.force,
            opset=args.opset,
            weights=args.weights,
            tta=args.tta,
            tta_crop=args.tta_crop,
            temperature=args.temperature,
        )
    except (OSError, ValueError, RuntimeError) as exc:  # missing, existing or unwritable files; bad checkpoints
        print(f"fer-export: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
