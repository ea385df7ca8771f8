"""JAFFE (the Japanese Female Facial Expression database, Lyons et al. 1998): 213 photos of 10 posers.

Layout: ``*.tiff`` files (256x256 grayscale) in ``root`` (or ``root/jaffe``), the expression in the name:
``KA.AN1.39.tiff`` is poser ``KA``, expression ``AN`` (NE neutral, HA happy, SA sad, SU surprise, AN anger, DI
disgust, FE fear), take 1, image number 39. Other files (the README) are ignored; a ``.tiff`` with another name
is an error. The faces are found and cropped as ``fer-predict`` does (``FaceCropper``) and the crops cached.
JAFFE has no official split: every face is in ``all`` and names its poser, for subject-independent folds.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fer_lightning.data.face_files import DatasetError
from fer_lightning.data.image_source import Entry, ImageFileSource

CODES = {
    "NE": "neutral",
    "HA": "happiness",
    "SA": "sadness",
    "SU": "surprise",
    "AN": "anger",
    "DI": "disgust",
    "FE": "fear",
}
JAFFE_EMOTIONS: tuple[str, ...] = tuple(CODES.values())
NAME = re.compile(r"(?P<poser>[A-Z]{2})\.(?P<code>[A-Z]{2})\d+\.\d+\.tiff?", re.IGNORECASE)
_HELP = "JAFFE's *.tiff photos named POSER.CODE<take>.<number>.tiff (KA.AN1.39.tiff; codes " + " ".join(CODES) + ")"


class JAFFESource(ImageFileSource):
    """JAFFE faces: ``{"all": SplitArrays}`` with posers as ``groups``."""

    name = "JAFFE"
    class_names = JAFFE_EMOTIONS

    def options(self) -> list:
        return [self.cropper.identity]

    def entries(self) -> list[Entry]:
        self.require_root(_HELP)
        folder = self.root / "jaffe" if not _tiffs(self.root) and (self.root / "jaffe").is_dir() else self.root
        entries = []
        for path in _tiffs(folder):
            match = NAME.fullmatch(path.name)
            if match is None:
                raise DatasetError(f"{path}: not a JAFFE file name; expected {_HELP}")
            code = match["code"].upper()
            if code not in CODES:
                raise DatasetError(f"{path}: unknown expression code {code!r}; expected one of {', '.join(CODES)}")
            entries.append(Entry(path, JAFFE_EMOTIONS.index(CODES[code]), "all", match["poser"].upper()))
        if not entries:
            raise DatasetError(f"{folder}: no .tiff files; expected {_HELP}")
        return entries

    def read_face(self, entry: Entry) -> np.ndarray | None:
        return self.cropper.find(entry.path)


def _tiffs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".tif", ".tiff"))
