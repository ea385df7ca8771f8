"""Tiny copies of CK+, JAFFE, RAF-DB and AffectNet in their exact layouts, written into a test's tmp_path.

Real image files (PNG, TIFF, JPEG) and label files in each dataset's own syntax. Pre-cropped faces are drawn by
the synthetic source (``generate_faces``), so a test can compare what a reader returns with what was written;
full frames (CK+'s original 640x490 sequences, JAFFE's 256x256 photos, AffectNet's photos with a face box) hold
Grace Hopper's face, which the face finder finds, at a position that moves from frame to frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fer_lightning.data.synthetic import generate_faces
from tests.helpers.deploy import GRACE_HOPPER

# Where Grace Hopper's face is in her 512x600 photo (see tests/helpers/deploy.py), and the square around it.
_FACE = (265, 215)


def faces(n: int, seed: int = 0, size: int = 48) -> np.ndarray:
    """``n`` synthetic 48x48 faces (uint8), resized to ``size``."""
    drawn = generate_faces(n, seed).images.numpy()
    if size == 48:
        return drawn
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BILINEAR)) for f in drawn])


def grace_face(side: int) -> np.ndarray:
    """Grace Hopper's head and shoulders in grayscale, ``side`` x ``side`` px, her face in the middle."""
    with Image.open(GRACE_HOPPER) as photo:
        gray = photo.convert("L")
    half = 170
    box = (_FACE[0] - half, _FACE[1] - half + 20, _FACE[0] + half, _FACE[1] + half + 20)
    return np.asarray(gray.crop(box).resize((side, side), Image.Resampling.BILINEAR))


def frame_with_face(width: int, height: int, left: int, top: int, side: int = 260) -> np.ndarray:
    """A flat grey ``width`` x ``height`` frame with Grace Hopper's face pasted at (left, top)."""
    frame = np.full((height, width), 120, np.uint8)
    frame[top : top + side, left : left + side] = grace_face(side)
    return frame


def write_ck48(root: Path, subjects: int = 4, per_class: int = 2) -> dict[Path, int]:
    """``root/CK+48/<class>/S0xx_00y_000000zz.png``; returns {file: label index in EXPRESSIONS}."""
    from fer_lightning.data.ckplus import EXPRESSIONS

    written, pixels = {}, faces(len(EXPRESSIONS) * subjects * per_class)
    k = 0
    for label, name in enumerate(EXPRESSIONS):
        folder = root / "CK+48" / name
        folder.mkdir(parents=True)
        for s in range(subjects):
            for take in range(per_class):
                path = folder / f"S{10 + s:03d}_{label + 1:03d}_{take + 10:08d}.png"
                Image.fromarray(pixels[k]).save(path)
                written[path], k = label, k + 1
    return written


def write_ckplus_original(root: Path, sequences: dict[str, dict[str, int]], frames: int = 5) -> None:
    """``cohn-kanade-images/S/NNN/S_NNN_0000000k.png`` (640x490, the face moving) and, for each labelled sequence,
    ``Emotion/S/NNN/S_NNN_<last frame>_emotion.txt`` holding its code as CK+ writes it (``   3.0000000e+00``).
    ``sequences``: {subject: {sequence: code}}; a code of None leaves the sequence unlabelled."""
    for subject, seqs in sequences.items():
        for seq, code in seqs.items():
            folder = root / "cohn-kanade-images" / subject / seq
            folder.mkdir(parents=True)
            for k in range(1, frames + 1):
                frame = frame_with_face(640, 490, 150 + 12 * k, 90 + 6 * k)
                Image.fromarray(frame).save(folder / f"{subject}_{seq}_{k:08d}.png")
            if code is not None:
                labels = root / "Emotion" / subject / seq
                labels.mkdir(parents=True)
                (labels / f"{subject}_{seq}_{frames:08d}_emotion.txt").write_text(f"   {code:.7e}\n")


def write_jaffe(root: Path, posers: tuple[str, ...] = ("KA", "KL", "KM"), codes: str = "NE HA SA SU AN DI FE") -> dict:
    """``root/POSER.CODE1.N.tiff`` 256x256 grayscale photos, one per poser and code, plus JAFFE's README."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "README").write_text("The Japanese Female Facial Expression (JAFFE) Database\n")
    written, number = {}, 1
    for poser in posers:
        for i, code in enumerate(codes.split()):
            photo = np.asarray(Image.fromarray(grace_face(300)).resize((256, 256)))
            photo = np.roll(photo, (i - 3) * 2, axis=1)  # each a little different
            path = root / f"{poser}.{code}1.{number}.tiff"
            Image.fromarray(photo).save(path)
            written[path], number = code, number + 1
    return written


def write_rafdb_list(root: Path, train: int = 14, test: int = 7, aligned: bool = True) -> list[tuple[str, int]]:
    """``EmoLabel/list_patition_label.txt`` and ``Image/aligned/*_aligned.jpg`` (100x100 colour) or
    ``Image/original/*.jpg`` (photos with a face); returns the label file's (name, code) lines."""
    (root / "EmoLabel").mkdir(parents=True)
    images = root / "Image" / ("aligned" if aligned else "original")
    images.mkdir(parents=True)
    lines, pixels = [], faces(train + test, seed=3, size=100)
    for k in range(train + test):
        split, number = ("train", k + 1) if k < train else ("test", k - train + 1)
        name = f"{split}_{number:05d}.jpg" if split == "train" else f"{split}_{number:04d}.jpg"
        code = k % 7 + 1
        if aligned:
            rgb = np.stack([pixels[k], pixels[k], pixels[k]], axis=2)
            Image.fromarray(rgb).save(images / name.replace(".jpg", "_aligned.jpg"), quality=95)
        else:
            Image.fromarray(frame_with_face(400, 400, 60 + k, 60)).convert("RGB").save(images / name, quality=95)
        lines.append((name, code))
    (root / "EmoLabel" / "list_patition_label.txt").write_text("".join(f"{n} {c}\n" for n, c in lines))
    return lines


def write_class_folders(root: Path, splits: dict[str, dict[str, int]], suffix: str = ".png", size: int = 48) -> dict:
    """``root/<split>/<folder>/<n>.png`` with ``count`` synthetic faces per {split: {folder: count}}; returns
    {file: folder}."""
    written, seed = {}, 0
    for split, folders in splits.items():
        for folder, count in folders.items():
            (root / split / folder).mkdir(parents=True)
            for k, face in enumerate(faces(count, seed, size)):
                path = root / split / folder / f"{k:04d}{suffix}"
                Image.fromarray(face).save(path)
                written[path], seed = folder, seed + 1
    return written


AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
)


def write_affectnet_csv(root: Path, codes: dict[str, list[int]]) -> dict[str, list[tuple[str, int]]]:
    """``training.csv`` / ``validation.csv`` ({csv name: expression codes}, one photo each) and
    ``Manually_Annotated_Images/<dir>/<file>.jpg``: a 300x300 photo with Grace Hopper's face in the row's box."""
    written = {}
    for csv_name, row_codes in codes.items():
        rows = []
        for k, code in enumerate(row_codes):
            relative = f"{k % 3 + 1}/{csv_name[:5]}_{k:04d}.jpg"
            path = root / "Manually_Annotated_Images" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame_with_face(300, 300, 20 + k, 20, side=240)).convert("RGB").save(path, quality=95)
            landmarks = ";".join(f"{60 + i}.5" for i in range(136))
            rows.append(f"{relative},{80 + k},70,140,140,{landmarks},{code},0.1,-0.2\n")
            written.setdefault(csv_name, []).append((relative, code))
        (root / csv_name).write_text(AFFECTNET_HEADER + "".join(rows))
    return written
