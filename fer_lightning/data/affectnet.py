"""AffectNet (Mollahosseini et al. 2017), the manually annotated part: about 290k faces from the web, 8 classes.

Two layouts (``layout=auto`` takes the first present):

- ``csv``, the release: ``training.csv`` and ``validation.csv`` (in ``root`` or
  ``root/Manually_Annotated_file_lists``) with the header ``subDirectory_filePath, face_x, face_y, face_width,
  face_height, facial_landmarks, expression, valence, arousal``; the image ``subDirectory_filePath`` under
  ``images_dir`` (default: ``root/Manually_Annotated_Images``, else ``root``). ``expression``: 0 neutral,
  1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt; 8 none, 9 uncertain and 10 non-face are
  left out and counted. The face is cut at the CSV's box, grown by ``margin``.
- ``folders``, the common copy: ``train/<class>/`` and ``val/<class>/``, the class folders named by code
  (``0``..``7``; ``8``..``10`` left out) or by name (``neutral``, ``happy``, ...; ``none``, ``uncertain``,
  ``non-face`` left out), the images already face crops.

AffectNet's test set was never released, so papers report its validation set: here it is the split ``test``,
and ``data=affectnet`` validates on a stratified part of ``train`` (``val_fraction``).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from fer_lightning.data.face_files import DatasetError
from fer_lightning.data.image_source import Entry, ImageFileSource, class_folder_entries
from fer_lightning.labels import canonical

log = logging.getLogger("fer_lightning.data")

AFFECTNET_EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
)  # codes 0..7
LEFT_OUT = {8: "none", 9: "uncertain", 10: "non-face"}
COLUMNS = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
CSV_FILES = {"train": "training.csv", "test": "validation.csv"}
FOLDER_SPLITS = {"train": "train", "val": "test"}
LAYOUTS = ("auto", "csv", "folders")
_HELP = (
    "training.csv and validation.csv (AffectNet's manual annotations) with Manually_Annotated_Images/, or class "
    "folders train/<0-7 or name>/ and val/<0-7 or name>/"
)


class AffectNetSource(ImageFileSource):
    """AffectNet faces: ``{"train": ..., "test": ...}``; see the module docstring for the layouts.

    ``left_out`` counts, after ``load``, the faces of the classes 8-10 per class name.
    """

    name = "AffectNet"
    class_names = AFFECTNET_EMOTIONS

    def __init__(self, root: str | Path, layout: str = "auto", images_dir: str | Path | None = None, **kwargs) -> None:
        super().__init__(root, **kwargs)
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r} is not one of {', '.join(LAYOUTS)}")
        self.layout = layout
        self.images_dir = Path(images_dir).expanduser().absolute() if images_dir else None
        self.left_out: dict[str, int] = {}

    def _csv_dir(self) -> Path | None:
        for folder in (self.root, self.root / "Manually_Annotated_file_lists"):
            if (folder / CSV_FILES["train"]).is_file():
                return folder
        return None

    @property
    def found_layout(self) -> str:
        if self.layout != "auto":
            return self.layout
        return "csv" if self._csv_dir() is not None else "folders"

    def options(self) -> list:
        layout = self.found_layout
        return [layout, self.cropper.margin] if layout == "csv" else [layout]

    def entries(self) -> list[Entry]:
        self.require_root(_HELP)
        self.left_out = {}
        entries = self._listed() if self.found_layout == "csv" else self._folders()
        if self.left_out:
            log.info("AffectNet: left out %s (not one of the 8 expressions)", self.left_out)
        return entries

    def read_face(self, entry: Entry) -> np.ndarray | None:
        if entry.box is not None:
            return self.cropper.cut(entry.path, entry.box)
        return super().read_face(entry)

    def _image_dir(self) -> Path:
        if self.images_dir is not None:
            return self.images_dir
        default = self.root / "Manually_Annotated_Images"
        return default if default.is_dir() else self.root

    def _listed(self) -> list[Entry]:
        folder = self._csv_dir()
        if folder is None:
            raise FileNotFoundError(f"no {CSV_FILES['train']} in {self.root}: expected {_HELP}")
        images = self._image_dir()
        entries = []
        for split, name in CSV_FILES.items():
            path = folder / name
            if path.is_file():
                entries += self._read_csv(path, split, images)
        return entries

    def _read_csv(self, path: Path, split: str, images: Path) -> list[Entry]:
        entries = []
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            rows = csv.reader(fh)
            header = [c.strip() for c in next(rows, [])]
            if header != list(COLUMNS):
                raise DatasetError(f"{path}: line 1: header {header[:9]} is not {list(COLUMNS)}")
            for line, row in enumerate(rows, 2):
                if not row:
                    continue
                if len(row) != len(COLUMNS):
                    raise DatasetError(f"{path}: line {line}: {len(row)} fields, expected {len(COLUMNS)}")
                code = _integer(row[6], "expression", path, line)
                if code in LEFT_OUT:
                    self.left_out[LEFT_OUT[code]] = self.left_out.get(LEFT_OUT[code], 0) + 1
                    continue
                if not 0 <= code < len(AFFECTNET_EMOTIONS):
                    raise DatasetError(f"{path}: line {line}: expression {code} is not an AffectNet code 0..10")
                box = tuple(_integer(row[i], COLUMNS[i], path, line) for i in range(1, 5))
                if box[2] < 1 or box[3] < 1:
                    raise DatasetError(f"{path}: line {line}: face box {list(box)} has no area")
                file = images / row[0].strip()
                if self.bad_images == "error" and not file.is_file():
                    raise DatasetError(f"{path}: line {line}: image {file} is missing (bad_images=skip leaves it out)")
                entries.append(Entry(file, code, split, box=box))  # type: ignore[arg-type]
        return entries

    def _folders(self) -> list[Entry]:
        if not (self.root / "train").is_dir():
            raise FileNotFoundError(f"no AffectNet data in {self.root}: expected {_HELP}")
        entries = []
        for folder, split in FOLDER_SPLITS.items():
            if (self.root / folder).is_dir():
                found, dropped = class_folder_entries(self.root / folder, _folder_label, split, "0..10 or " + _NAMES)
                entries += found
                for name, count in dropped.items():
                    key = LEFT_OUT.get(int(name), name) if name.isdigit() else name.lower()
                    self.left_out[key] = self.left_out.get(key, 0) + count
        return entries


_NAMES = ", ".join([*AFFECTNET_EMOTIONS, *LEFT_OUT.values()])


def _folder_label(name: str) -> int | None:
    if name.isdigit():
        code = int(name)
        if code in LEFT_OUT:
            return None
        if code < len(AFFECTNET_EMOTIONS):
            return code
        raise KeyError(name)
    if name.lower().replace("_", "-") in (*LEFT_OUT.values(), "noface", "no-face"):
        return None
    return AFFECTNET_EMOTIONS.index(canonical(name))


def _integer(text: str, column: str, path: Path, line: int) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise DatasetError(f"{path}: line {line}: {column} {text.strip()[:40]!r} is not an integer") from None
