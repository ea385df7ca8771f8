"""CK+ (the Extended Cohn-Kanade dataset, Lucey et al. 2010), in either of the two layouts that circulate.

- The original release: ``cohn-kanade-images/S005/001/S005_001_00000001.png`` (640x490 frames of a sequence that
  goes from a neutral face to the peak of one expression) and ``Emotion/S005/001/S005_001_00000011_emotion.txt``
  (one number, e.g. ``   3.0000000e+00``: 0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness,
  7 surprise) for the 327 sequences that have a label. The usual protocol takes the last ``last_frames`` frames of
  each labelled sequence as its expression and, with ``neutral=true``, its first frame as neutral. Faces are found
  and cropped as ``fer-predict`` does (``FaceCropper``) and the crops cached.
- The widely shared ``CK+48/<class>/S010_004_00000017.png`` copy: 48x48 crops in the folders ``anger``,
  ``contempt``, ``disgust``, ``fear``, ``happy``, ``sadness``, ``surprise`` (no neutral).

``layout=auto`` takes the original when ``cohn-kanade-images/`` and ``Emotion/`` are under ``root``, else the
``CK+48`` folders (in ``root`` or ``root/CK+48``). CK+ has no official split: every face is in the split ``all``
and each names its subject (``S005``), for the subject-independent folds of ``data=ckplus``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fer_lightning.data.face_files import DatasetError
from fer_lightning.data.image_source import Entry, ImageFileSource, class_folder_entries, label_by_name

# CK+'s label codes 0..7, in order.
CKPLUS_EMOTIONS: tuple[str, ...] = ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
EXPRESSIONS = CKPLUS_EMOTIONS[1:]  # what CK+48 has, and the original without neutral frames
LAYOUTS = ("auto", "original", "ck48")
_HELP = (
    "the original release (cohn-kanade-images/S005/001/*.png with Emotion/S005/001/*_emotion.txt) or the CK+48 "
    f"copy (<class>/S010_004_00000017.png, classes {', '.join(EXPRESSIONS)})"
)


class CKPlusSource(ImageFileSource):
    """CK+ faces: ``{"all": SplitArrays}`` with subjects as ``groups``; see the module docstring for the layouts.

    ``last_frames``: how many of each labelled sequence's last frames show its expression (original layout);
    ``neutral``: also take each labelled sequence's first frame as a neutral face (adds the class ``neutral``).
    """

    name = "CK+"

    def __init__(self, root: str | Path, layout: str = "auto", last_frames: int = 3, neutral: bool = True, **kwargs):
        super().__init__(root, **kwargs)
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r} is not one of {', '.join(LAYOUTS)}")
        if last_frames < 1:
            raise ValueError(f"last_frames must be at least 1, got {last_frames}")
        self.layout, self.last_frames, self.neutral = layout, last_frames, neutral

    @property
    def found_layout(self) -> str:
        if self.layout != "auto":
            return self.layout
        return (
            "original" if (self.root / "cohn-kanade-images").is_dir() and (self.root / "Emotion").is_dir() else "ck48"
        )

    @property
    def class_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return CKPLUS_EMOTIONS if self.found_layout == "original" and self.neutral else EXPRESSIONS

    def options(self) -> list:
        layout = self.found_layout
        return [layout, self.last_frames, self.neutral, self.cropper.identity] if layout == "original" else [layout]

    def entries(self) -> list[Entry]:
        self.require_root(_HELP)
        return self._original() if self.found_layout == "original" else self._ck48()

    def read_face(self, entry: Entry) -> np.ndarray | None:
        if self.found_layout == "original":
            return self.cropper.find(entry.path)
        return super().read_face(entry)

    def _ck48(self) -> list[Entry]:
        folders = self.root / "CK+48" if (self.root / "CK+48").is_dir() else self.root
        entries, _ = class_folder_entries(folders, label_by_name(EXPRESSIONS), "all", ", ".join(EXPRESSIONS))
        for entry in entries:
            if entry.subject is None:
                raise DatasetError(
                    f"{entry.path}: a CK+48 file name starts with its subject (S010_004_00000017.png); "
                    "the subject-independent folds need it"
                )
        return entries

    def _original(self) -> list[Entry]:
        frames_root, labels_root = self.root / "cohn-kanade-images", self.root / "Emotion"
        label_files = sorted(labels_root.glob("S*/*/*_emotion.txt"))
        if not label_files:
            raise DatasetError(f"{labels_root}: no */*/*_emotion.txt label files; expected {_HELP}")
        names = self.class_names
        entries = []
        for label_file in label_files:
            code = read_emotion_code(label_file)
            subject, sequence = label_file.parent.parent.name, label_file.parent.name
            frames = sorted(p for p in (frames_root / subject / sequence).glob("*.png"))
            if not frames:
                raise DatasetError(f"{label_file}: its sequence has no frames in {frames_root / subject / sequence}")
            expression = frames[-self.last_frames :]
            entries += [Entry(p, names.index(CKPLUS_EMOTIONS[code]), "all", subject) for p in expression]
            if self.neutral and len(frames) > len(expression):
                entries.append(Entry(frames[0], names.index("neutral"), "all", subject))
        return entries


def read_emotion_code(path: Path) -> int:
    """The label code in a CK+ ``*_emotion.txt`` file (one number such as ``   3.0000000e+00``), checked."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the label file: {exc}") from exc
    values = text.split()
    if len(values) != 1:
        raise DatasetError(f"{path}: line 1: expected one label number, found {len(values)} value(s): {text[:60]!r}")
    try:
        value = float(values[0])
    except ValueError:
        raise DatasetError(f"{path}: line 1: label {values[0]!r} is not a number") from None
    if not (math.isfinite(value) and value == int(value) and 1 <= value <= 7):
        raise DatasetError(
            f"{path}: line 1: label {values[0]} is not a CK+ expression code 1..7 "
            f"({', '.join(f'{i} {n}' for i, n in enumerate(CKPLUS_EMOTIONS) if i)})"
        )
    return int(value)
