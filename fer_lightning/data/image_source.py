"""What the readers of photo datasets (CK+, JAFFE, RAF-DB, AffectNet) share: list the faces, read them, cache them.

A reader says where each face is (``Entry``: file, label, split, subject, box) and how to read one
(``read_face``); ``ImageFileSource.load`` reads them all into ``SplitArrays`` (subjects become ``groups`` for
subject-independent folds) and caches the arrays keyed by every entry and file (``fer_lightning.data.cache``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fer_lightning.data.cache import cached_splits, default_cache_dir, stat_key
from fer_lightning.data.face_files import NO_FACE_POLICIES, DatasetError, FaceCropper, read_all, whole_face
from fer_lightning.data.splits import SplitArrays
from fer_lightning.labels import canonical

log = logging.getLogger("fer_lightning.data")
CACHE_VERSION = 1  # bump whenever the arrays read from the same files could change
BAD_IMAGE_POLICIES = ("error", "skip")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Entry:
    """One face of a dataset: its image file, label (index into the source's ``class_names``), split, whose face
    it is (``subject``, for folds) and, where the dataset gives one, the face's box in the image."""

    path: Path
    label: int
    split: str
    subject: str | None = None
    box: tuple[int, int, int, int] | None = None


class ImageFileSource:
    """A data source whose faces are image files under ``root``; subclasses list them in ``entries``.

    ``image_size``: the side the faces are resized to (48: as FER-2013 and the shipped models); ``channels``: 1
    (grayscale, as FER-2013 and the shipped models) or 3 (RGB, for a network made with ``in_channels=3``).
    ``bad_images``: ``error`` on a missing or unreadable image file, or ``skip`` it (counted in the log). Faces
    found in full frames use ``detector``/``align``/``margin`` (``FaceCropper``); ``no_face``: ``skip`` (counted)
    or ``error``.
    """

    name = "dataset"  # for messages and the cache file's name
    label_mode = "majority"
    class_names: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        image_size: int = 48,
        channels: int = 1,
        bad_images: str = "error",
        detector: str = "auto",
        align: bool = True,
        margin: float = 0.1,
        no_face: str = "skip",
        cache_dir: str | Path | None = None,
    ) -> None:
        for option, value, choices in (
            ("bad_images", bad_images, BAD_IMAGE_POLICIES),
            ("no_face", no_face, NO_FACE_POLICIES),
        ):
            if value not in choices:
                raise ValueError(f"{option}={value!r} is not one of {', '.join(choices)}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {image_size}")
        self.root = Path(root).expanduser().absolute()
        self.image_size, self.channels, self.bad_images, self.no_face = image_size, channels, bad_images, no_face
        self.cropper = FaceCropper(detector, align, margin, image_size, channels)
        self.cache_dir = default_cache_dir(cache_dir)

    # -- what a reader provides ---------------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        raise NotImplementedError

    def read_face(self, entry: Entry) -> np.ndarray | None:
        """The face of ``entry`` (None: no face found in it); by default the whole image is the face."""
        return whole_face(entry.path, self.image_size, self.channels)

    def options(self) -> list:
        """What else decides the arrays, for the cache key (the layout, the frames taken, the cropper)."""
        return []

    # -- shared ---------------------------------------------------------------------------------------------------
    def require_root(self, layouts: str) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.name} directory {self.root} does not exist; expected {layouts}")

    def load(self) -> dict[str, SplitArrays]:
        entries = self.entries()
        if not entries:
            raise DatasetError(f"{self.root}: no {self.name} faces found")
        missing = [e for e in entries if not e.path.is_file()]
        if missing and self.bad_images == "error":
            raise DatasetError(
                f"{missing[0].path}: image file missing ({len(missing)} missing; bad_images=skip would leave them out)"
            )
        if missing:
            log.warning("%s: %d image file(s) missing, left out; e.g. %s", self.name, len(missing), missing[0].path)
            entries = [e for e in entries if e.path.is_file()]
        key = [
            CACHE_VERSION,
            type(self).__name__,
            self.image_size,
            self.channels,
            self.bad_images,
            self.no_face,
            self.options(),
            [
                [str(e.path.relative_to(self.root)), e.label, e.split, e.subject, e.box, *stat_key(e.path)]
                for e in entries
            ],
        ]
        return cached_splits(self.cache_dir, self.name.lower().replace("+", "plus"), key, lambda: self._read(entries))

    def _read(self, entries: list[Entry]) -> dict[str, SplitArrays]:
        log.info("%s: reading %d faces under %s", self.name, len(entries), self.root)
        subjects = sorted({e.subject for e in entries if e.subject is not None})
        subject_id = {s: i for i, s in enumerate(subjects)}
        out = {}
        for split in sorted({e.split for e in entries}):
            chosen = [e for e in entries if e.split == split]
            faces, kept = read_all(
                [(e.path, e.label) for e in chosen], self._read_or_skip(chosen), f"{self.name} {split}", self.no_face
            )
            chosen = [chosen[i] for i in kept]
            groups = None
            if subjects and all(e.subject is not None for e in chosen):
                groups = torch.tensor([subject_id[e.subject] for e in chosen], dtype=torch.int64)
            images = torch.from_numpy(faces)
            if images.ndim == 4:  # (N, H, W, 3) -> (N, 3, H, W)
                images = images.permute(0, 3, 1, 2).contiguous()
            out[split] = SplitArrays(images, torch.tensor([e.label for e in chosen], dtype=torch.int64), groups=groups)
        return out

    def _read_or_skip(self, chosen: list[Entry]) -> Callable[[Path], np.ndarray | None]:
        by_path = {e.path: e for e in chosen}
        unreadable: list[Path] = []

        def read(path: Path) -> np.ndarray | None:
            try:
                return self.read_face(by_path[path])
            except DatasetError:
                if self.bad_images == "error":
                    raise
                unreadable.append(path)
                return None

        return read


def class_folder_entries(
    split_dir: Path, label_of: Callable[[str], int | None], split: str, expected: str
) -> tuple[list[Entry], dict[str, int]]:
    """The images in ``split_dir/<class>/``: ``label_of(folder name)`` gives the label, or None for a class the
    dataset drops (AffectNet's ``none``); an unknown folder is an error naming it and ``expected``. Returns the
    entries (sorted, deterministic) and the count of dropped images per dropped folder."""
    entries, dropped = [], {}
    for folder in sorted(d for d in split_dir.iterdir() if d.is_dir()):
        try:
            label = label_of(folder.name)
        except (KeyError, ValueError):
            raise DatasetError(f"{folder}: unknown class folder {folder.name!r}; expected {expected}") from None
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if label is None:
            dropped[folder.name] = len(images)
            continue
        entries += [Entry(p, label, split, subject_of(p)) for p in images]
    if not entries:
        raise DatasetError(f"{split_dir}: no images in any class folder (expected {expected})")
    return entries, dropped


def subject_of(path: Path) -> str | None:
    """The subject in a CK+-style file name (``S005_001_00000011.png`` -> ``S005``), else None."""
    match = re.match(r"(S\d+)_", path.name)
    return match.group(1) if match else None


def label_by_name(class_names: Sequence[str]) -> Callable[[str], int]:
    """Folder name -> index in ``class_names``, both read in the shared vocabulary (``happy`` is ``happiness``)."""
    index = {canonical(name): i for i, name in enumerate(class_names)}

    def label(folder: str) -> int:
        return index[canonical(folder)]

    return label
