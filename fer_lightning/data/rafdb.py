"""RAF-DB basic (the Real-world Affective Faces Database, Li et al. 2017): 15,339 faces from the web, 7 classes.

Two layouts (``layout=auto`` takes the first present):

- ``list``, the release: ``EmoLabel/list_patition_label.txt`` (sic), one face per line, ``train_00001.jpg 5``
  (1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral), with the images in
  ``Image/aligned/train_00001_aligned.jpg`` (100x100 colour, already aligned: ``images=aligned``) or
  ``Image/original/train_00001.jpg`` (``images=original``: the face is found and cropped as ``fer-predict`` does).
  The split is the file name's prefix, ``train`` or ``test``.
- ``folders``, the common copy: ``train/1..7/*.jpg`` and ``test/1..7/*.jpg`` (the same codes), in ``root`` or
  ``root/DATASET``.

RAF-DB has no validation split: ``data=rafdb`` validates on a stratified part of ``train`` (``val_fraction``)
and tests on ``test``, as its papers report.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fer_lightning.data.face_files import DatasetError
from fer_lightning.data.image_source import Entry, ImageFileSource, class_folder_entries

RAFDB_EMOTIONS: tuple[str, ...] = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")  # 1..7
LAYOUTS = ("auto", "list", "folders")
IMAGES = ("aligned", "original")
LABEL_FILE = Path("EmoLabel/list_patition_label.txt")
LINE = re.compile(r"(?P<name>(?P<split>train|test)_\d+\.jpg)\s+(?P<code>\S+)")
FOLDERS = "1..7 (1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral)"
_HELP = (
    f"{LABEL_FILE} with Image/aligned/ or Image/original/, or class folders train/1..7/ and test/1..7/ {FOLDERS[5:]}"
)


class RAFDBSource(ImageFileSource):
    """RAF-DB basic faces: ``{"train": ..., "test": ...}``; see the module docstring for the layouts."""

    name = "RAF-DB"
    class_names = RAFDB_EMOTIONS

    def __init__(self, root: str | Path, layout: str = "auto", images: str = "aligned", **kwargs) -> None:
        super().__init__(root, **kwargs)
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r} is not one of {', '.join(LAYOUTS)}")
        if images not in IMAGES:
            raise ValueError(f"images={images!r} is not one of {', '.join(IMAGES)}")
        self.layout, self.images = layout, images

    @property
    def found_layout(self) -> str:
        if self.layout != "auto":
            return self.layout
        return "list" if (self.root / LABEL_FILE).is_file() else "folders"

    def options(self) -> list:
        layout = self.found_layout
        return [layout, self.images, self.cropper.identity] if layout == "list" else [layout]

    def entries(self) -> list[Entry]:
        self.require_root(_HELP)
        return self._listed() if self.found_layout == "list" else self._folders()

    def read_face(self, entry: Entry) -> np.ndarray | None:
        if self.found_layout == "list" and self.images == "original":
            return self.cropper.find(entry.path)
        return super().read_face(entry)

    def _listed(self) -> list[Entry]:
        label_file = self.root / LABEL_FILE
        image_dir = self.root / "Image" / self.images
        entries = []
        for number, line in enumerate(label_file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            match = LINE.fullmatch(line.strip())
            if match is None:
                raise DatasetError(
                    f"{label_file}: line {number}: {line.strip()[:80]!r} is not 'train_00001.jpg <label>' or "
                    "'test_0001.jpg <label>'"
                )
            code = _code(match["code"], label_file, number)
            name = match["name"]
            file = image_dir / (name.replace(".jpg", "_aligned.jpg") if self.images == "aligned" else name)
            if self.bad_images == "error" and not file.is_file():
                raise DatasetError(
                    f"{label_file}: line {number}: image {file} is missing (bad_images=skip leaves it out)"
                )
            entries.append(Entry(file, code - 1, match["split"]))
        if not entries:
            raise DatasetError(f"{label_file}: no labelled faces")
        return entries

    def _folders(self) -> list[Entry]:
        base = self.root / "DATASET" if (self.root / "DATASET").is_dir() else self.root
        if not (base / "train").is_dir():
            raise FileNotFoundError(f"no RAF-DB data in {self.root}: expected {_HELP}")
        entries = []
        for split in ("train", "test"):
            if (base / split).is_dir():
                found, _ = class_folder_entries(base / split, _folder_label, split, FOLDERS)
                entries += found
        return entries


def _code(text: str, path: Path, line: int) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 7:
        raise DatasetError(f"{path}: line {line}: label {text!r} is not a RAF-DB basic code 1..7")
    return int(text)


def _folder_label(name: str) -> int:
    if not name.isdigit() or not 1 <= int(name) <= 7:
        raise KeyError(name)
    return int(name) - 1
