"""Row 6, deployment latency: ``python -m benchmarks.deploy [--ckpt PATH]``.

Measures, for PyTorch (the checkpoint) and ONNX Runtime (its export), the end-to-end latency of one photo
(load-free: grayscale, Haar detection, crop, classify) on matplotlib's ``grace_hopper.jpg``, the latency of
classifying one face, and the throughput of batched classification in faces per second, also for the ONNX
export with flip and with ten-crop TTA in its graph (``fer-export --tta``: 2 and 10 views a face). Without a
checkpoint an untrained ``cnn3`` is used: latency does not depend on the weights. Medians over ``repeats``
runs. ``--compare A.onnx B.onnx ...`` instead times the batched classification of those files side by side,
interleaved, on the same faces (e.g. a new shipped file against the one it replaces).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import lightning as L
import matplotlib
import numpy as np
import torch

from benchmarks.common import Row
from fer_lightning.deploy.faces import load_image, to_gray
from fer_lightning.deploy.recognizer import EmotionRecognizer, OnnxBackend
from fer_lightning.export import export
from fer_lightning.threads import torch_threads
from fer_lightning.training.module import FERClassifier

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
TENCROP_CROP = 44  # the crop side of the README's ten-crop figures
DEFAULT_NET = {"_target_": "fer_lightning.models.cnn3.CNN3", "num_classes": 7}


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(min(warmup, repeats)):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _faces_per_s(classify: Callable[[np.ndarray], object], faces: np.ndarray, repeats: int) -> float:
    """Throughput of ``classify`` on the batch ``faces``: fewer repeats than the latencies, a batch takes long."""
    return len(faces) / (_median_ms(lambda: classify(faces), max(3, repeats // 4)) / 1000)


def untrained_checkpoint(path: Path, net: dict | None = None) -> Path:
    """A loadable checkpoint of a randomly initialised model (the keys ``load_from_checkpoint`` reads)."""
    model = FERClassifier(net=net or DEFAULT_NET, optimizer={"_target_": "torch.optim.Adam", "_partial_": True})
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    torch.save(checkpoint, path)
    return path


def benchmark_deploy(
    ckpt_path: str | Path | None = None,
    image: str | Path = GRACE_HOPPER,
    repeats: int = 20,
    batch_size: int = 256,
    threads: int | None = None,
    tta_crop: int = TENCROP_CROP,
) -> dict[str, float | int | str]:
    """Latency (ms) and throughput (faces/s) of the PyTorch and ONNX Runtime backends on the CPU.

    ``threads`` sets torch's and ONNX Runtime's intra-op threads (and OpenCV's) for the run; None keeps the
    libraries' defaults. On a shared, oversubscribed machine 1 thread gives far steadier single-face latencies.
    """
    previous = cv2.getNumThreads()
    if threads:
        cv2.setNumThreads(threads)
    try:
        with torch_threads(threads):
            return _benchmark(ckpt_path, image, repeats, batch_size, threads, tta_crop)
    finally:
        cv2.setNumThreads(previous)


def _benchmark(
    ckpt_path: str | Path | None, image: str | Path, repeats: int, batch_size: int, threads: int | None, tta_crop: int
) -> dict[str, float | int | str]:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(ckpt_path) if ckpt_path else untrained_checkpoint(Path(tmp) / "untrained.ckpt")
        onnx_path = export(ckpt, "onnx", Path(tmp) / "model.onnx")
        with_tta = {
            tta: export(ckpt, "onnx", Path(tmp) / f"model_{tta}.onnx", tta=tta, tta_crop=tta_crop)
            for tta in ("flip", "tencrop")
        }
        recognizers = {
            # Haar, as these rows always timed it; every detector side by side: the rows of bench.detectors
            "torch": EmotionRecognizer.from_checkpoint(ckpt, device="cpu", batch_size=batch_size, detector="haar"),
            "onnxruntime": EmotionRecognizer.from_onnx(
                onnx_path, threads=threads, batch_size=batch_size, detector="haar"
            ),
        }
        photo = load_image(image)
        gray = to_gray(photo)
        detector = recognizers["torch"]
        boxes, _ = detector.find_faces(gray)
        out: dict[str, float | int | str] = {
            "image": Path(image).name,
            "image_size": f"{photo.width}x{photo.height}",
            "faces_found": len(boxes),
            "torch_threads": torch.get_num_threads(),
            "detect_ms": _median_ms(lambda: detector.find_faces(gray), repeats),
        }
        faces = np.random.default_rng(0).integers(0, 256, (batch_size, 48, 48), dtype=np.uint8)
        for name, recognizer in recognizers.items():
            out[f"{name}/end_to_end_ms"] = _median_ms(lambda r=recognizer: r.predict(photo), repeats)
            out[f"{name}/classify_one_ms"] = _median_ms(lambda r=recognizer: r.classify(faces[:1]), repeats)
            out[f"{name}/batch_faces_per_s"] = _faces_per_s(recognizer.classify, faces, repeats)
        for tta, path in with_tta.items():
            backend = OnnxBackend(path, threads=threads)
            out[f"onnxruntime_{tta}/batch_faces_per_s"] = _faces_per_s(backend, faces, repeats)
        # The shipped default model: a larger network than cnn3, and it classifies each face and its mirror image.
        shipped = EmotionRecognizer.pretrained(threads=threads, batch_size=batch_size, detector="none")
        out["shipped_fer2013/batch_faces_per_s"] = _faces_per_s(shipped.classify, faces, repeats)
    return out


def compare_files(paths: list[Path], repeats: int, batch_size: int, threads: int | None) -> dict[str, float]:
    """Batched faces/s of each ONNX file, measured in turns so load on the machine falls on all alike."""
    faces = np.random.default_rng(0).integers(0, 256, (batch_size, 48, 48), dtype=np.uint8)
    backends = {str(path): OnnxBackend(path, threads=threads) for path in paths}
    rates: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(3):
        for name, backend in backends.items():
            rates[name].append(_faces_per_s(backend, faces, repeats))
    return {f"{name}/batch_faces_per_s": statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="checkpoint to time (default: an untrained cnn3)")
    parser.add_argument("--image", type=Path, default=GRACE_HOPPER)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, help="intra-op threads for torch, ONNX Runtime and OpenCV")
    parser.add_argument("--tta-crop", type=int, default=TENCROP_CROP, help="the ten-crop export's crop side (px)")
    parser.add_argument("--compare", type=Path, nargs="+", help="ONNX files to time side by side instead")
    args = parser.parse_args()
    if args.compare:
        print(json.dumps(compare_files(args.compare, args.repeats, args.batch_size, args.threads), indent=2))
        return
    result = benchmark_deploy(args.ckpt, args.image, args.repeats, args.batch_size, args.threads, args.tta_crop)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()


def deploy_rows(repeats: int = 20, batch_size: int = 256) -> list[Row]:
    """Row 6 of ``make bench``, with the thread count the bench set for everything else."""
    result = benchmark_deploy(repeats=repeats, batch_size=batch_size, threads=torch.get_num_threads())
    note = f"{result['image']} ({result['image_size']}, {result['faces_found']} faces), untrained cnn3"
    rows = [Row("Deploy: Haar face detection", float(result["detect_ms"]), "ms", note=note)]
    for backend in ("torch", "onnxruntime"):
        rows += [
            Row(f"Deploy: {backend} photo end to end", float(result[f"{backend}/end_to_end_ms"]), "ms", note=note),
            Row(f"Deploy: {backend} one face", float(result[f"{backend}/classify_one_ms"]), "ms"),
            Row(f"Deploy: {backend} batched", float(result[f"{backend}/batch_faces_per_s"]), "faces/s"),
        ]
    shipped = float(result["shipped_fer2013/batch_faces_per_s"])
    return [*rows, Row("Deploy: shipped fer2013 model batched", shipped, "faces/s", note="ONNX, flip averaged inside")]
