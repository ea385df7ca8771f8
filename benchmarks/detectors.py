"""Face detectors side by side: ``python -m benchmarks.detectors [--out docs/benchmarks.md]``.

Every installed backend (``fer_lightning.deploy.detectors``) runs on one labelled set of photos, built from
pictures that ship inside installed packages (nothing is downloaded) and kept out of the repository:

- ``real``: the three portraits with a face (matplotlib's ``grace_hopper.jpg``; scikit-image's ``astronaut.png``
  and ``camera.png``, a profile half hidden by a camera), their face boxes checked by eye;
- ``faceless``: 14 photos without a human face (a cat, a horse, coffee, a rocket, textures, text, a galaxy...);
- composite scenes (960x720) of the real faces and scikit-image's 100 LFW faces (25x25 px each, many people)
  pasted on the faceless photos, at a known place: ``tilted`` (turned 15-45 degrees either way), ``tiny``
  (14-30 px faces), ``occluded`` (dark glasses or a mask painted on), ``lighting`` (dark, washed out, side
  shadow) and ``group`` (6-9 LFW faces of 28-90 px).

A detection matches a labelled face when its centre lies in the face's box and its size is within a factor 2
of the box's (detectors frame faces differently); each face matches at most one detection. Recall: matched
faces / labelled faces; precision: matched detections / detections. Detection time is per photo, on one thread
(ONNX Runtime and OpenCV), CPU time of this process (steady on a shared machine) and wall time. The end-to-end
rate (``photos_per_s``) times ``EmotionRecognizer.predict`` on the set saved as JPEG files: decode, grayscale,
detect, align or crop, classify with an untrained cnn3 checkpoint (the weights do not change the cost).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import matplotlib
import numpy as np
from PIL import Image

from fer_lightning.deploy import detectors
from fer_lightning.deploy.faces import Box, load_image, load_pixels, to_gray, to_rgb

if TYPE_CHECKING:
    from benchmarks.common import Row

MPL_DATA = Path(matplotlib.get_data_path()) / "sample_data"
SKIMAGE_DATA = Path(find_spec("skimage").submodule_search_locations[0]) / "data" if find_spec("skimage") else None
# file -> (face box x, y, w, h; landmarks: the person's right eye, left eye, nose, right and left mouth corners)
PORTRAITS = {
    "grace_hopper.jpg": ((178, 107, 176, 221), ((219, 188), (303, 187), (260, 247), (232, 273), (299, 273))),
    "astronaut.png": ((178, 57, 95, 120), ((205, 101), (247, 103), (224, 129), (202, 138), (244, 141))),
    "camera.png": ((195, 114, 61, 81), ((236, 149), (249, 148), (250, 169), (229, 177), (238, 177))),
}
FACELESS = (
    "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "horse.png", "hubble_deep_field.jpg",
    "brick.png", "gravel.png", "coins.png", "page.png", "color.png", "ihc.png", "retina.jpg", "moon.png",
)  # fmt: skip
KINDS = ("real", "tilted", "tiny", "occluded", "lighting", "group", "faceless")
SCENE = (960, 720)
SCENES_PER_KIND = 8
DECODE_SIDE = 640  # RetinaFace's default max_side: what a JPEG is decoded for by default
FAST_SIDE = 480  # the second RetinaFace configuration: detection on a 480 px copy
FOLDER_PASSES = 3  # fer-predict --workers: each phone-sized file this many times in one run
PHONE_NOISE = 8.0  # pixel noise that gives the 12 MP scenes a phone JPEG's size (about 3.4 MB, not 1 MB)
# the end-to-end sets: (label, result key, make bench row name, its note)
FILE_SETS = (
    ("960x720", "photos_per_s", "photos", "960x720 JPEGs, 1 thread, per CPU second; baseline: haar; target >= 30"),
    ("12 MP", "photos_per_s_12mp", "12 MP photos", "4000x3000 JPEGs"),
    (
        "phone-sized",
        "photos_per_s_12mp_phone",
        "12 MP phone-sized photos",
        f"4000x3000 JPEGs with pixel noise (sigma {PHONE_NOISE:g}), the size of a phone's",
    ),
)


@dataclass(frozen=True)
class Photo:
    name: str
    kind: str
    rgb: np.ndarray
    faces: tuple[Box, ...]


def sample_path(name: str) -> Path:
    path = MPL_DATA / name if name == "grace_hopper.jpg" else (SKIMAGE_DATA or Path("skimage-missing")) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the labelled set needs matplotlib and scikit-image (the dev extra)")
    return path


def real_photos() -> list[Photo]:
    photos = [Photo(n, "real", to_rgb(load_image(sample_path(n))), (Box(*box),)) for n, (box, _) in PORTRAITS.items()]
    return photos + [Photo(n, "faceless", to_rgb(load_image(sample_path(n))), ()) for n in FACELESS]


# ---- composites ----------------------------------------------------------------------------------------------
@dataclass
class Patch:
    """A face with its surroundings, ready to paste: RGBA pixels and the face box / landmarks inside them."""

    rgba: np.ndarray
    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None = None


@dataclass
class Canvas:
    rgb: np.ndarray
    faces: list[Box] = field(default_factory=list)


def portrait_patch(name: str) -> Patch:
    """The face of a portrait with 0.4 of its size around it on every side (hair, ears, neck), clipped."""
    (x, y, w, h), marks = PORTRAITS[name]
    rgb = to_rgb(load_image(sample_path(name)))
    side = 1.8 * max(w, h)
    left, top = max(0, round(x + w / 2 - side / 2)), max(0, round(y + h / 2 - side / 2))
    right, bottom = min(rgb.shape[1], round(left + side)), min(rgb.shape[0], round(top + side))
    pixels = np.dstack([rgb[top:bottom, left:right], np.full((bottom - top, right - left), 255, np.uint8)])
    return Patch(pixels, (x - left, y - top, w, h), np.asarray(marks, float) - [left, top])


def lfw_patches() -> list[Patch]:
    """scikit-image's 100 LFW faces (25x25 grey, the face filling most of the square)."""
    faces = np.load(SKIMAGE_DATA / "lfw_subset.npy")[:100] if SKIMAGE_DATA else np.empty((0, 25, 25))
    patches = []
    for face in faces:
        gray = np.clip(face * 255 + 0.5, 0, 255).astype(np.uint8)
        patches.append(Patch(np.dstack([gray, gray, gray, np.full_like(gray, 255)]), (2.0, 2.0, 21.0, 21.0)))
    return patches


def occlude(patch: Patch, what: str) -> Patch:
    """Dark glasses over the eyes or a pale mask from the nose down, painted on a copy."""
    rgba = patch.rgba.copy()
    x, y, w, h = patch.box
    eyes, nose = patch.landmarks[:2], patch.landmarks[2]
    if what == "glasses":
        radius = max(3, round(0.22 * np.linalg.norm(eyes[1] - eyes[0])) + round(0.06 * w))
        for ex, ey in eyes:
            cv2.circle(rgba, (round(ex), round(ey)), radius, (15, 15, 20, 255), -1)
        cv2.line(rgba, tuple(map(round, eyes[0])), tuple(map(round, eyes[1])), (15, 15, 20, 255), max(1, radius // 3))
    else:  # mask
        top = round(nose[1] - 0.05 * h)
        cv2.rectangle(rgba, (round(x + 0.08 * w), top), (round(x + 0.92 * w), round(y + h)), (190, 215, 230, 255), -1)
    return Patch(rgba, patch.box, patch.landmarks)


def relight(patch: Patch, how: str) -> Patch:
    rgb = patch.rgba[..., :3].astype(np.float32)
    if how == "dark":
        rgb = rgb * 0.3
    elif how == "washed":
        rgb = 0.35 * rgb + 160
    else:  # a shadow over one side of the face
        ramp = np.linspace(0.15, 1.0, rgb.shape[1], dtype=np.float32)[None, :, None]
        rgb = rgb * ramp
    rgba = np.dstack([np.clip(rgb + 0.5, 0, 255).astype(np.uint8), patch.rgba[..., 3]])
    return Patch(rgba, patch.box, patch.landmarks)


def paste(canvas: Canvas, patch: Patch, face_side: float, angle: float, centre: tuple[float, float]) -> None:
    """Scale ``patch`` so its face box's larger side is ``face_side``, turn it ``angle`` degrees (anticlockwise),
    paste it with its face centre at ``centre`` and record the face: its box at the new scale, about the same
    centre (a tilted face's box is the upright one, turned about its centre)."""
    x, y, w, h = patch.box
    scale = face_side / max(w, h)
    face_centre = np.array([x + w / 2, y + h / 2]) * scale
    size = (max(1, round(patch.rgba.shape[1] * scale)), max(1, round(patch.rgba.shape[0] * scale)))
    image = Image.fromarray(patch.rgba).resize(
        size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    )
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    turn = math.radians(angle)  # PIL turns anticlockwise about the image centre; the y axis points down
    offset = face_centre - np.array(size) / 2
    moved = np.array(
        [
            offset[0] * math.cos(turn) + offset[1] * math.sin(turn),
            -offset[0] * math.sin(turn) + offset[1] * math.cos(turn),
        ]
    )
    face_in_rotated = moved + np.array(rotated.size) / 2
    left, top = round(centre[0] - face_in_rotated[0]), round(centre[1] - face_in_rotated[1])
    base = Image.fromarray(canvas.rgb)
    base.paste(rotated.convert("RGB"), (left, top), rotated.getchannel("A"))
    canvas.rgb = np.asarray(base).copy()
    fw, fh = w * scale, h * scale
    canvas.faces.append(Box(round(centre[0] - fw / 2), round(centre[1] - fh / 2), round(fw), round(fh)))


def background(index: int, photos: Sequence[Photo]) -> np.ndarray:
    """A faceless photo scaled to cover the scene and centre-cropped."""
    rgb = photos[index % len(photos)].rgb
    h, w = rgb.shape[:2]
    scale = max(SCENE[0] / w, SCENE[1] / h)
    big = cv2.resize(rgb, (math.ceil(w * scale), math.ceil(h * scale)), interpolation=cv2.INTER_LINEAR)
    top, left = (big.shape[0] - SCENE[1]) // 2, (big.shape[1] - SCENE[0]) // 2
    return np.ascontiguousarray(big[top : top + SCENE[1], left : left + SCENE[0]])


def grid_centres(rng: np.random.Generator, count: int, margin: float) -> list[tuple[float, float]]:
    """``count`` well-separated points: the centres of randomly chosen cells of a grid, jittered."""
    cols, rows = 4, 3
    cells = rng.permutation(cols * rows)[:count]
    cw, ch = SCENE[0] / cols, SCENE[1] / rows
    jitter = lambda span: rng.uniform(-1, 1) * max(0.0, span / 2 - margin)  # noqa: E731
    return [((c % cols + 0.5) * cw + jitter(cw), (c // cols + 0.5) * ch + jitter(ch)) for c in cells]


def composites(faceless: Sequence[Photo], seed: int = 0, per_kind: int = SCENES_PER_KIND) -> list[Photo]:
    """``per_kind`` scenes of each composite kind, the same ones for a given ``seed``."""
    rng = np.random.default_rng(seed)
    portraits = [portrait_patch(name) for name in PORTRAITS]
    frontal = portraits[:2]  # the profile in camera.png is left out where it would be unfair to every detector
    lfw = lfw_patches()
    photos = []
    for i in range(per_kind):
        canvas = Canvas(background(i, faceless))
        angle = (15, 30, 45)[i % 3] * (1 if i % 2 else -1)
        (x, y) = grid_centres(rng, 1, 200)[0]
        paste(canvas, frontal[i % 2], rng.uniform(130, 200), angle, (x, y))
        photos.append(Photo(f"tilted_{i}", "tilted", canvas.rgb, tuple(canvas.faces)))

        canvas = Canvas(background(i + 3, faceless))
        for j, centre in enumerate(grid_centres(rng, 3, 30)):
            paste(canvas, portraits[(i + j) % 3], rng.uniform(14, 30), 0, centre)
        photos.append(Photo(f"tiny_{i}", "tiny", canvas.rgb, tuple(canvas.faces)))

        canvas = Canvas(background(i + 6, faceless))
        for j, centre in enumerate(grid_centres(rng, 2, 150)):
            patch = occlude(frontal[(i + j) % 2], "glasses" if (i + j) % 2 else "mask")
            paste(canvas, patch, rng.uniform(90, 180), rng.uniform(-8, 8), centre)
        photos.append(Photo(f"occluded_{i}", "occluded", canvas.rgb, tuple(canvas.faces)))

        canvas = Canvas(background(i + 9, faceless))
        for j, centre in enumerate(grid_centres(rng, 2, 150)):
            patch = relight(portraits[(i + j) % 3], ("dark", "washed", "shadow")[(i + j) % 3])
            paste(canvas, patch, rng.uniform(70, 160), 0, centre)
        photos.append(Photo(f"lighting_{i}", "lighting", canvas.rgb, tuple(canvas.faces)))

        canvas = Canvas(background(i + 12, faceless))
        count = 6 + i % 4
        for j, centre in enumerate(grid_centres(rng, count, 50)):
            paste(canvas, lfw[(i * 9 + j) % len(lfw)], rng.uniform(28, 90), rng.uniform(-10, 10), centre)
        photos.append(Photo(f"group_{i}", "group", canvas.rgb, tuple(canvas.faces)))
    return photos


def labelled_set(seed: int = 0, per_kind: int = SCENES_PER_KIND) -> list[Photo]:
    photos = real_photos()
    return photos + composites([p for p in photos if p.kind == "faceless"], seed, per_kind)


# ---- scoring -------------------------------------------------------------------------------------------------
def matches(found: Box, face: Box) -> bool:
    """The detection's centre lies in the face's box and its size is within a factor 2 of the box's."""
    cx, cy = found.x + found.w / 2, found.y + found.h / 2
    inside = face.x <= cx <= face.x + face.w and face.y <= cy <= face.y + face.h
    return inside and 0.5 <= math.sqrt(found.w * found.h / max(1, face.w * face.h)) <= 2


def score_photo(found: Sequence[Box], faces: Sequence[Box]) -> tuple[int, int]:
    """(true positives, false positives), each labelled face matched at most once."""
    free = list(faces)
    hits = 0
    for box in found:
        match = next((face for face in free if matches(box, face)), None)
        if match is not None:
            free.remove(match)
            hits += 1
    return hits, len(found) - hits


@dataclass
class Tally:
    faces: int = 0
    found: int = 0
    hits: int = 0

    @property
    def recall(self) -> float:
        return self.hits / self.faces if self.faces else float("nan")

    @property
    def precision(self) -> float:
        return self.hits / self.found if self.found else float("nan")


def evaluate(detector: detectors.FaceDetector, photos: Sequence[Photo]) -> dict:
    """Recall, precision, false positives and time per photo of one detector over the labelled set."""
    kinds = {kind: Tally() for kind in KINDS}
    cpu, wall = [], []
    for photo in photos:
        gray = to_gray(photo.rgb)
        rgb = photo.rgb if detector.uses_color else None
        detector(gray, rgb)  # warm-up (ONNX Runtime's first call at a new size is slower)
        c, t = time.process_time(), time.perf_counter()
        found = detector(gray, rgb)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
        hits, _ = score_photo(found, photo.faces)
        tally = kinds[photo.kind]
        tally.faces, tally.found, tally.hits = (
            tally.faces + len(photo.faces),
            tally.found + len(found),
            tally.hits + hits,
        )
    total = Tally(*(sum(getattr(t, k) for t in kinds.values()) for k in ("faces", "found", "hits")))
    return {
        "kinds": kinds,
        "total": total,
        "false_on_faceless": kinds["faceless"].found,
        "cpu_ms": 1000 * statistics.mean(cpu),
        "wall_ms": 1000 * statistics.mean(wall),
    }


def save_jpegs(photos: Sequence[Photo], folder: Path) -> list[Path]:
    """``photos`` written to ``folder`` as JPEG files (quality 90), as a camera or phone would save them."""
    paths = []
    for photo in photos:
        path = folder / f"{photo.name}.jpg"
        Image.fromarray(photo.rgb).save(path, quality=90)
        paths.append(path)
    return paths


def best_seconds(run: Callable[[], object], repeats: int, clock: Callable[[], float] = time.process_time) -> float:
    """The shortest of ``repeats`` timings of ``run()`` by ``clock`` (CPU time of this process by default)."""
    best = math.inf
    for _ in range(repeats):
        start = clock()
        run()
        best = min(best, clock() - start)
    return best


def end_to_end(
    make_recognizer: Callable[[str, int | None], object],
    configs: Sequence[tuple[str, str, int | None]],
    paths: Sequence[Path],
    repeats: int = 2,
) -> dict[str, float]:
    """Photos per second of ``EmotionRecognizer.predict(path)`` over the image files ``paths``, for each
    (label, detector, max_side) config: the best of ``repeats`` passes, CPU time of this process."""
    rates = {}
    for label, name, max_side in configs:
        recognizer = make_recognizer(name, max_side)
        recognizer.predict(paths[0])
        best = best_seconds(lambda r=recognizer: [r.predict(path) for path in paths], repeats)
        rates[label] = len(paths) / best
    return rates


def decode_ms(paths: Sequence[Path], min_side: int = DECODE_SIDE, repeats: int = 2) -> float:
    """CPU ms per photo of decoding alone, as the recognizer decodes for RetinaFace at its default
    (``load_pixels``), the best of ``repeats`` passes: the floor under the end-to-end time that no detector
    setting lowers."""
    best = best_seconds(lambda: [load_pixels(path, min_side) for path in paths], repeats)
    return 1000 * best / len(paths)


def folder_rates(paths: Sequence[Path], workers: Sequence[int], repeats: int = 2) -> dict[int, float]:
    """Photos per wall-clock second of fer-predict's work on the image files ``paths`` with ``--workers N``, for
    each N: the default shipped model and detector, threads as fer-predict leaves them (one worker: ONNX Runtime's
    one per core; several: one each), the best of ``repeats`` passes. Records are not written (a small cost)."""
    from fer_lightning.deploy import EmotionRecognizer
    from fer_lightning.deploy.batching import Batcher
    from fer_lightning.deploy.predictor import process_image
    from fer_lightning.deploy.sources import expand_inputs, found_ahead

    recognizer = EmotionRecognizer.pretrained()
    items = expand_inputs([str(path) for path in paths])
    recognizer.predict(paths[0])

    def run(count: int) -> None:
        batcher = Batcher(recognizer, lambda item: None)
        for item, found in found_ahead(items, recognizer, count):
            process_image(str(item.source), recognizer, batcher, None, found and found.result())
        batcher.flush()

    return {count: len(paths) / best_seconds(lambda n=count: run(n), repeats, time.perf_counter) for count in workers}


def worker_counts() -> list[int]:
    """1, 2 and every core of this machine."""
    return sorted({1, 2, os.cpu_count() or 1})


def recognizer_factory(workdir: Path) -> Callable[[str, int | None], object]:
    """Recognizers around an untrained cnn3 checkpoint on the CPU (the caller sets torch's threads)."""
    from benchmarks.deploy import untrained_checkpoint
    from fer_lightning.deploy.recognizer import EmotionRecognizer

    ckpt = untrained_checkpoint(workdir / "untrained.ckpt")
    return lambda name, max_side: EmotionRecognizer.from_checkpoint(
        ckpt, device="cpu", detector=name, max_side=max_side, detector_threads=1
    )


def configurations() -> list[tuple[str, str, int | None]]:
    """(label, detector, max_side): every installed backend at its default, and RetinaFace on a smaller copy."""
    configs = [(name, name, None) for name in detectors.installed()]
    if "retinaface" in detectors.installed():
        configs.insert(1, (f"retinaface --max-side {FAST_SIDE}", "retinaface", FAST_SIDE))
    return configs


def twelve_megapixel(photos: Sequence[Photo], count: int = 4, noise: float = 0.0) -> list[Photo]:
    """The first ``count`` composite scenes (else photos with faces) scaled up to 4000x3000 (12 MP), as a phone
    would take them. ``noise``: the standard deviation of Gaussian noise added to every pixel: an image scaled
    up is smoother than a photo and its JPEG file 3-4x smaller, and decoding time follows the file's size
    (``PHONE_NOISE`` gives files of the size a phone's 12 MP JPEGs have)."""
    scenes = [p for p in photos if p.kind not in ("real", "faceless")] or [p for p in photos if p.faces]
    rng = np.random.default_rng(0)
    out = []
    for p in scenes[:count]:
        rgb = cv2.resize(p.rgb, (4000, 3000), interpolation=cv2.INTER_CUBIC)
        if noise:
            rgb = np.clip(rgb + rng.normal(0, noise, rgb.shape), 0, 255).astype(np.uint8)
        out.append(Photo(p.name, p.kind, rgb, ()))
    return out


def compare(seed: int = 0, with_end_to_end: bool = True, per_kind: int = SCENES_PER_KIND, twelve_mp: int = 4) -> dict:
    """Every configuration on the labelled set (one thread each), plus the end-to-end photo rates (on the set,
    and on ``twelve_mp`` scenes scaled to 12 MP, as they are and with a phone photo's noise)."""
    photos = labelled_set(seed, per_kind)
    configs = configurations()
    file_mb: dict[str, float] = {}  # the mean JPEG file size of each end-to-end set
    file_decode_ms: dict[str, float] = {}  # decoding alone, per photo of each end-to-end set
    rates_by_workers: dict[int, float] = {}  # fer-predict --workers N on phone-sized files, wall clock
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        results = {
            label: evaluate(detectors.make_detector(name, max_side, threads=1), photos)
            for label, name, max_side in configs
        }
        if with_end_to_end:
            from fer_lightning.threads import torch_threads

            sets = {
                "photos_per_s": (photos, 2),
                "photos_per_s_12mp": (twelve_megapixel(photos, twelve_mp), 2),
                "photos_per_s_12mp_phone": (twelve_megapixel(photos, twelve_mp, PHONE_NOISE), 2),
            }
            with tempfile.TemporaryDirectory() as workdir, torch_threads(1):
                factory = recognizer_factory(Path(workdir))
                for key, (chosen, repeats) in sets.items():
                    folder = Path(workdir) / key
                    folder.mkdir()
                    paths = save_jpegs(chosen, folder)
                    file_mb[key] = statistics.mean(path.stat().st_size for path in paths) / 1e6
                    file_decode_ms[key] = decode_ms(paths)
                    for label, rate in end_to_end(factory, configs, paths, repeats).items():
                        results[label][key] = rate
                folder = Path(workdir) / "folder"
                folder.mkdir()
                # 4 x twelve_mp files, 3 times over: enough photos that the workers' start is a small part
                phone_files = save_jpegs(twelve_megapixel(photos, 4 * twelve_mp, PHONE_NOISE), folder)
                rates_by_workers = folder_rates(phone_files * FOLDER_PASSES, worker_counts())
    finally:
        cv2.setNumThreads(previous)
    return {
        "photos": photos,
        "results": results,
        "file_mb": file_mb,
        "decode_ms": file_decode_ms,
        "folder_rates": rates_by_workers,
        "folder_files": 4 * twelve_mp,
    }


# ---- reporting -----------------------------------------------------------------------------------------------
def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.0f}%"


def markdown(comparison: dict, command: str, machine: Sequence[str]) -> str:
    photos, results = comparison["photos"], comparison["results"]
    counts = {
        kind: (sum(p.kind == kind for p in photos), sum(len(p.faces) for p in photos if p.kind == kind))
        for kind in KINDS
    }
    lines = [
        SECTION_START,
        "## Face detectors",
        "",
        f"- Date: {datetime.now(timezone.utc).astimezone().isoformat(timespec='seconds')}",
        f"- Command: `{command}`",
        *machine,
        f"- Labelled set: {len(photos)} photos, {sum(len(p.faces) for p in photos)} faces: "
        + ", ".join(f"{kind} {n} ({f} faces)" for kind, (n, f) in counts.items())
        + " (see `benchmarks/detectors.py`)",
        "- One thread for every library; each detector at its default `max_side` (RetinaFace 640, Haar 1280)",
        "  unless the row says otherwise.",
        "",
        "| Detector | Recall | Precision | False detections on faceless photos | Detect ms/photo (CPU) "
        "| Detect ms/photo (wall) | Photos/s end to end, 960x720 (CPU) | Photos/s end to end, 12 MP (CPU) "
        "| Photos/s end to end, 12 MP phone-sized files (CPU) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, r in results.items():
        t = r["total"]
        rates = [r.get(key) for _, key, _, _ in FILE_SETS]
        lines.append(
            f"| {name} | {_pct(t.recall)} ({t.hits}/{t.faces}) | {_pct(t.precision)} ({t.hits}/{t.found}) "
            f"| {r['false_on_faceless']} | {r['cpu_ms']:.1f} | {r['wall_ms']:.1f} | "
            + " | ".join("—" if rate is None else f"{rate:.1f}" for rate in rates)
            + " |"
        )
    lines += ["", "Recall by kind of photo:", "", "| Detector | " + " | ".join(KINDS[:-1]) + " |"]
    lines.append("|---|" + "--:|" * (len(KINDS) - 1))
    for name, r in results.items():
        cells = [f"{_pct(r['kinds'][k].recall)} ({r['kinds'][k].hits}/{r['kinds'][k].faces})" for k in KINDS[:-1]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    mb = comparison.get("file_mb", {})
    sizes = ", ".join(f"{label} {mb[key]:.2f} MB" for label, key, _, _ in FILE_SETS if key in mb)
    ms = comparison.get("decode_ms", {})
    decodes = ", ".join(f"{label} {ms[key]:.1f}" for label, key, _, _ in FILE_SETS if key in ms)
    lines += [
        "",
        "Photos/s end to end: `EmotionRecognizer.predict(path)` on the set saved as JPEG files (decode, detect,",
        "align or crop, classify with an untrained cnn3 in PyTorch), the best of 2 passes, per CPU second of this",
        "process (the machine is shared: wall-clock time is longer and varies); 12 MP: 4 of the scenes scaled up",
        f"to 4000x3000; phone-sized: the same with pixel noise (sigma {PHONE_NOISE:g}), since decoding",
        "time follows the file's size and a scaled-up scene compresses 3-4x better than a photo.",
        f"Mean file size: {sizes}.",
        f"Decoding alone (`load_pixels` as for RetinaFace at {DECODE_SIDE}), CPU ms/photo: {decodes}: the floor under",
        "the end-to-end time.",
        *folder_lines(comparison.get("folder_rates", {}), comparison.get("folder_files", 0)),
        "A JPEG is decoded by OpenCV straight into an array (`load_pixels`), at the smallest of 1/2, 1/4, 1/8",
        "scale whose longer side stays at least the detector's `max_side` (`EmotionRecognizer.decode_side`):",
        "12 MP at 1/4 (1000x750) for RetinaFace at 640, at 1/8 (500x375) at 480, at 1/2 for Haar (1280), and",
        "again at a finer scale where a face found is under 48 px there (`find_faces_in_file`); boxes are mapped",
        "back to full size.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def folder_lines(rates: dict[int, float], files: int) -> list[str]:
    if not rates:
        return []
    one = rates[1]
    cells = ", ".join(f"{n} worker(s) {rate:.1f} ({rate / one:.2f}x)" for n, rate in rates.items())
    return [
        f"`fer-predict FOLDER --workers N` on {files} phone-sized 12 MP files, each {FOLDER_PASSES} times, photos",
        f"per wall-clock second on this machine's {os.cpu_count()} cores (shipped fer2013 model, default detector):",
        f"{cells}.",
    ]


SECTION_START = "<!-- section: face detectors (python -m benchmarks.detectors) -->"
SECTION_END = "<!-- end section -->"


def carry_section(path: Path, text: str) -> str:
    """``text`` (a new ``make bench`` page) with the face-detector section of the page at ``path`` appended."""
    old = path.read_text() if path.exists() else ""
    found = re.search(re.escape(SECTION_START) + r".*?" + re.escape(SECTION_END) + r"\n?", old, re.S)
    return text if found is None else text.rstrip("\n") + "\n\n" + found.group(0)


def write_section(path: Path, section: str) -> None:
    """Put ``section`` into ``path`` in place of its previous version, or at the end."""
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(SECTION_START) + r".*?" + re.escape(SECTION_END) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    path.write_text(text)


def detector_rows(seed: int = 0, per_kind: int = SCENES_PER_KIND, twelve_mp: int = 4) -> list[Row]:
    """``make bench`` rows: recall and end-to-end photos/s of each installed detector, Haar as the baseline."""
    from benchmarks.common import Row  # with torch and Lightning: not needed to score detectors

    comparison = compare(seed, True, per_kind, twelve_mp)
    results = comparison["results"]
    haar = results.get("haar")
    rows = []
    for name, r in results.items():
        t = r["total"]
        note = (
            f"{t.hits}/{t.faces} labelled faces, precision {_pct(t.precision)}, {r['false_on_faceless']} false on "
            f"faceless photos; detect {r['cpu_ms']:.1f} ms CPU/photo; see the face detectors section"
        )
        base = haar["total"].recall if haar and name != "haar" else None
        ratio = t.recall / base if base else None
        rows.append(
            Row(f"Detect: {name} recall", 100 * t.recall, "%", None if base is None else 100 * base, ratio, note)
        )
        (_, key, what, rate_note), *twelve_mp_sets = FILE_SETS
        rate, base_rate = r.get(key), haar.get(key) if haar and name != "haar" else None
        ratio = rate / base_rate if rate and base_rate else None
        rows.append(Row(f"Detect: {name} {what} end to end", rate, "photos/s", base_rate, ratio, rate_note))
        for _, key, what, rate_note in twelve_mp_sets:
            rows.append(Row(f"Detect: {name} {what} end to end", r.get(key), "photos/s", note=rate_note))
    rates = comparison["folder_rates"]
    for count, rate in rates.items():
        rows.append(
            Row(
                f"fer-predict phone-sized folder, --workers {count}",
                rate,
                "photos/s",
                rates[1] if count > 1 else None,
                rate / rates[1] if count > 1 else None,
                f"wall clock on {os.cpu_count()} cores; baseline: --workers 1",
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.suite import _load, machine_lines

    parser = argparse.ArgumentParser(prog="python -m benchmarks.detectors", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Markdown file whose face-detector section to write (or add)")
    parser.add_argument("--seed", type=int, default=0, help="draws the composite scenes")
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the end-to-end photos/s")
    args = parser.parse_args(argv)
    load_at_start = _load()
    comparison = compare(args.seed, not args.no_end_to_end)
    command = " ".join(["python -m benchmarks.detectors", *(argv if argv is not None else sys.argv[1:])])
    section = markdown(comparison, command, machine_lines(load_at_start))
    print(section)
    if args.out:
        write_section(args.out, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
