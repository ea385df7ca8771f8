"""FER+ (Barsoum et al., ICMI 2016): the FER-2013 images relabelled by 10 crowd votes each, 8 emotions.

Two layouts circulate: the votes file ``fer2013new.csv`` (one row per row of ``fer2013.csv``, in the same
order), read here together with the user's FER-2013 pixel copy, and the image folders Microsoft's
``generate_training_data.py`` writes (``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/``, each with PNGs
and a headerless ``label.csv``: ``fer0000000.png,"(0, 0, 48, 48)",<10 votes>``). Votes become labels as in
Microsoft's reference reader (``_process_data`` in microsoft/FERPlus ``src/ferplus.py``); the evaluation
splits always get majority labels, as published.
"""

from __future__ import annotations

import csv
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fer_lightning.data.fer2013 import CSV_SPLITS, FER2013DataError, FER2013Source
from fer_lightning.data.splits import SplitArrays
from fer_lightning.labels import FERPLUS_EMOTIONS, IMAGE_SIZE

log = logging.getLogger("fer_lightning.data")

VOTE_COLUMNS = (*FERPLUS_EMOTIONS, "unknown", "NF")
VOTES_HEADER = ("Usage", "Image name", *VOTE_COLUMNS)
VOTES_NAME = "fer2013new.csv"
LABEL_MODES = ("majority", "probability", "crossentropy", "multi_target")
FORMATS = ("auto", "csv", "icml", "folder")
# Microsoft's generator writes these; reported under the FER-2013 split names so the usual split options apply.
FOLDER_SPLITS = {"FER2013Train": "Training", "FER2013Valid": "PublicTest", "FER2013Test": "PrivateTest"}
TRAIN_SPLIT = "Training"
MULTI_TARGET_EPSILON = 0.001  # the reference adds it so no target is exactly 0 (ill-conditioned log)


class FERPlusDataError(FER2013DataError):
    """The FER+ votes (or folders) exist but are malformed or do not match the pixels; the message says where."""


def process_votes(votes: Sequence[float], mode: str) -> list[float]:
    """One row of 10 votes to a distribution over the 10 columns, as Microsoft's ``_process_data`` does.

    Single votes are outliers and removed first. A row the mode cannot use comes back as all mass on
    ``unknown`` (so it is dropped with the rows whose top vote is unknown or NF).
    """
    raw = [float(v) for v in votes]
    size = len(raw)
    unknown = [0.0] * size
    unknown[-2] = 1.0
    raw = [0.0 if v < 1.0 + sys.float_info.epsilon else v for v in raw]
    total = sum(raw)
    emotion = [0.0] * size
    if mode == "majority":
        top = max(raw)
        if top > 0.5 * total:
            emotion[int(np.argmax(raw))] = top
        else:
            emotion = unknown
    elif mode in ("probability", "crossentropy"):
        # Take the largest vote counts until they hold 75% of the votes, at most 3 emotions, stopping at unknown/NF.
        part, count, valid = 0.0, 0, True
        while part < 0.75 * total and count < 3 and valid:
            top = max(raw)
            for i in range(size):
                if raw[i] == top:
                    emotion[i] = top
                    raw[i] = 0.0
                    part += emotion[i]
                    count += 1
                    if i >= len(FERPLUS_EMOTIONS):  # unknown or NF ties with the top emotions
                        valid = False
                        if sum(emotion) > top:  # other emotions came first: keep them, not unknown/NF
                            emotion[i] = 0.0
                            count -= 1
                        break
        if sum(emotion) <= 0.5 * total or count > 3:  # too little agreement, or too many emotions
            emotion = unknown
    elif mode == "multi_target":
        emotion = [v if v >= 0.3 * total else 0.0 for v in raw]
        if sum(emotion) <= 0.5 * total:
            emotion = unknown
    else:
        raise ValueError(f"label mode {mode!r} is not one of {', '.join(LABEL_MODES)}")
    return [v / sum(emotion) for v in emotion]


def votes_to_labels(votes: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Counter]:
    """Rows (N, 10) of votes to ``(keep mask, hard labels, soft targets or None, drop reasons)``.

    Hard labels are the argmax of the processed distribution (the majority label in ``majority`` mode).
    Soft targets (N_kept, 8) are the distribution over the 8 emotions (``probability``, ``crossentropy``)
    or, for ``multi_target``, 1 on every emotion the mode keeps, blended with epsilon as the reference does.
    """
    processed = np.array([process_votes(row, mode) for row in votes], dtype=np.float64).reshape(-1, len(VOTE_COLUMNS))
    top = processed.argmax(axis=1)
    keep = top < len(FERPLUS_EMOTIONS)
    raw_top = votes.argmax(axis=1)
    reasons = Counter(
        "NF"
        if raw_top[i] == len(VOTE_COLUMNS) - 1
        else "unknown"
        if raw_top[i] == len(FERPLUS_EMOTIONS)
        else "no_agreement"
        for i in np.flatnonzero(~keep)
    )
    emotions = processed[keep, : len(FERPLUS_EMOTIONS)]
    emotions /= emotions.sum(axis=1, keepdims=True)
    targets = None
    if mode in ("probability", "crossentropy"):
        targets = emotions
    elif mode == "multi_target":
        targets = (1 - MULTI_TARGET_EPSILON) * (emotions > 0) + MULTI_TARGET_EPSILON
    return keep, top[keep], targets, reasons


class FERPlusSource:
    """FER+ labels on FER-2013 pixels: ``{split: SplitArrays}`` with 8 classes in ``FERPLUS_EMOTIONS`` order.

    ``root``: a FER-2013 copy whose rows are in the original order (``fer2013.csv[.gz]``, ``icml_face_data.csv``)
    or the root of Microsoft's FER+ image folders. ``votes``: ``fer2013new.csv`` (file or directory); when
    unset it is looked for beside the pixel file, then in ``votes_dir`` (``$FERPLUS_DIR`` in the config).
    ``mode`` labels the training split: ``majority`` | ``probability`` | ``crossentropy`` | ``multi_target``;
    the other splits always get majority labels.
    """

    class_names: tuple[str, ...] = FERPLUS_EMOTIONS

    def __init__(
        self,
        root: str,
        votes: str | None = None,
        votes_dir: str | None = None,
        mode: str = "majority",
        format: str = "auto",
        cache_dir: str | None = None,
    ) -> None:
        if mode not in LABEL_MODES:
            raise ValueError(f"data.source.mode={mode!r} is not one of {', '.join(LABEL_MODES)}")
        if format not in FORMATS:
            raise ValueError(f"data.source.format={format!r} is not one of {', '.join(FORMATS)}")
        self.root = Path(root).expanduser().absolute()
        self.votes = Path(votes).expanduser().absolute() if votes else None
        self.votes_dir = Path(votes_dir).expanduser().absolute() if votes_dir else None
        self.label_mode, self.format, self.cache_dir = mode, format, cache_dir

    def load(self) -> dict[str, SplitArrays]:
        if self.format == "folder" or (self.format == "auto" and self._has_folders()):
            images, votes = self._read_folders()
        else:
            images, votes = self._read_pixels_and_votes()
        out = {}
        for split, split_votes in votes.items():
            mode = self.label_mode if split == TRAIN_SPLIT else "majority"
            keep, labels, targets, reasons = votes_to_labels(split_votes, mode)
            log.info(
                "FER+ %s (%s labels): %d of %d images kept; dropped %d (%s)",
                split,
                mode,
                int(keep.sum()),
                len(keep),
                int((~keep).sum()),
                ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) or "none",
            )
            if not keep.any():
                continue
            index = torch.from_numpy(np.flatnonzero(keep))
            out[split] = SplitArrays(
                images[split].index_select(0, index),
                torch.from_numpy(labels.astype(np.int64)),
                None if targets is None else torch.from_numpy(targets.astype(np.float32)),
            )
        if not out:
            raise FERPlusDataError(f"FER+ in {self.root}: no image has a usable label")
        return out

    # -- votes file + FER-2013 pixels ---------------------------------------------------------------------
    def _find_votes(self, pixel_file: Path) -> Path:
        if self.votes is not None:
            path = self.votes / VOTES_NAME if self.votes.is_dir() else self.votes
            if not path.is_file():
                raise FileNotFoundError(f"FER+ votes file {path} (data.source.votes) does not exist")
            return path
        candidates = [pixel_file.parent / VOTES_NAME] + ([self.votes_dir / VOTES_NAME] if self.votes_dir else [])
        for path in candidates:
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"no FER+ votes file: looked for {' and '.join(map(str, candidates))}. Download fer2013new.csv from "
            "https://github.com/microsoft/FERPlus and put it beside the FER-2013 file, set FERPLUS_DIR, "
            "or pass data.source.votes=PATH"
        )

    def _read_pixels_and_votes(self) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
        # on_bad_rows=error: a skipped pixel row would shift every later row against its votes.
        pixels = FER2013Source(str(self.root), format=self.format, on_bad_rows="error", cache_dir=self.cache_dir)
        fmt, pixel_file = pixels._locate()
        if fmt == "folder":
            raise FERPlusDataError(
                f"{self.root}: FER+ votes follow the row order of fer2013.csv / icml_face_data.csv, which class "
                "folders do not keep; use a CSV copy of FER-2013 or Microsoft's FER2013Train/Valid/Test folders"
            )
        votes_file = self._find_votes(pixel_file)
        usage, votes, lines = read_votes(votes_file)
        splits = pixels.load()
        pixel_usage, pixel_lines = _read_usage(pixel_file)
        # Align split by split: a copy may lack a split (many lack PrivateTest), but rows of a present split pair up.
        present = np.isin(usage, list(splits))
        mismatch = _first_difference(pixel_usage, usage[present])
        if mismatch is not None:
            v_line = lines[present][mismatch] if mismatch < present.sum() else lines[-1] + 1
            p_line = pixel_lines[mismatch] if mismatch < len(pixel_lines) else pixel_lines[-1] + 1
            p_has = pixel_usage[mismatch] if mismatch < len(pixel_usage) else "end of file"
            v_has = usage[present][mismatch] if mismatch < present.sum() else "end of file"
            counts = {s: (int((pixel_usage == s).sum()), int((usage == s).sum())) for s in CSV_SPLITS}
            raise FERPlusDataError(
                f"{votes_file}: line {v_line}: votes row is {v_has}, but the matching pixel row "
                f"({pixel_file} line {p_line}) is {p_has}: the votes do not follow the pixel file's rows "
                f"(rows per split, pixels vs votes: {counts})"
            )
        images = {s: a.images for s, a in splits.items()}
        return images, {s: votes[usage == s] for s in splits}

    # -- Microsoft's image folders --------------------------------------------------------------------------
    def _has_folders(self) -> bool:
        return self.root.is_dir() and any((self.root / name / "label.csv").is_file() for name in FOLDER_SPLITS)

    def _read_folders(self) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
        if not self._has_folders():
            raise FileNotFoundError(f"no FER+ folders in {self.root}: expected {', '.join(FOLDER_SPLITS)}/label.csv")
        images, votes = {}, {}
        for folder, split in FOLDER_SPLITS.items():
            label_file = self.root / folder / "label.csv"
            if not label_file.is_file():
                continue
            pixels, rows = [], []
            with open(label_file, newline="") as fh:
                for line, row in enumerate(csv.reader(fh), start=1):
                    if not row or not any(cell.strip() for cell in row):
                        continue
                    if len(row) < 1 + len(VOTE_COLUMNS):
                        raise FERPlusDataError(
                            f"{label_file}: line {line}: {len(row)} fields, expected an image name, (optionally) "
                            f"a face box and {len(VOTE_COLUMNS)} votes ({', '.join(VOTE_COLUMNS)})"
                        )
                    rows.append(_parse_votes(row[-len(VOTE_COLUMNS) :], label_file, line))
                    pixels.append(_read_png(label_file.parent / row[0].strip(), label_file, line))
            if rows:
                images[split] = torch.from_numpy(np.stack(pixels))
                votes[split] = np.array(rows, dtype=np.int64)
        log.info("FER+: read image folders in %s: %s", self.root, {s: len(v) for s, v in votes.items()})
        return images, votes


def read_votes(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``fer2013new.csv`` to ``(usage (N,), votes (N, 10) int, line numbers (N,))``, validated row by row."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FERPlusDataError(f"{path}: cannot read as CSV: {str(exc).strip()}") from exc
    header = tuple(str(c).strip() for c in df.columns)
    if header != VOTES_HEADER:
        raise FERPlusDataError(f"{path}: line 1: header is {list(header)}, expected {list(VOTES_HEADER)}")
    df.columns = list(VOTES_HEADER)
    df = df[~(df == "").all(axis=1)]  # blank lines; the index keeps the original line numbers
    lines = df.index.to_numpy() + 2
    usage = df["Usage"].str.strip().to_numpy()
    bad = np.flatnonzero(~np.isin(usage, CSV_SPLITS))
    if bad.size:
        raise FERPlusDataError(
            f"{path}: line {lines[bad[0]]}: unknown Usage {usage[bad[0]]!r}, expected one of {', '.join(CSV_SPLITS)}"
        )
    cells = df[list(VOTE_COLUMNS)].apply(lambda c: c.str.strip()).to_numpy()
    digits = np.vectorize(_is_count, otypes=[bool])(cells) if cells.size else np.ones((0, 10), bool)
    if not digits.all():
        row, col = np.argwhere(~digits)[0]
        raise FERPlusDataError(
            f"{path}: line {lines[row]}: {VOTE_COLUMNS[col]} vote {cells[row, col]!r} is not a non-negative integer "
            "(at most 9 digits)"
        )
    votes = cells.astype(np.int64)
    empty = np.flatnonzero(votes.sum(axis=1) <= 0)
    if empty.size:
        raise FERPlusDataError(f"{path}: line {lines[empty[0]]}: the votes do not sum to a positive count")
    return usage, votes, lines


def _is_count(value: str) -> bool:
    """ASCII digits that fit any integer type: ``str.isdigit`` alone also takes "²" and other Unicode digits."""
    return value.isascii() and value.isdigit() and len(value) <= 9


def _parse_votes(cells: Sequence[str], path: Path, line: int) -> list[int]:
    values = [c.strip() for c in cells]
    for name, value in zip(VOTE_COLUMNS, values, strict=True):
        if not _is_count(value):
            raise FERPlusDataError(
                f"{path}: line {line}: {name} vote {value!r} is not a non-negative integer (at most 9 digits)"
            )
    votes = [int(v) for v in values]
    if sum(votes) <= 0:
        raise FERPlusDataError(f"{path}: line {line}: the votes do not sum to a positive count")
    return votes


def _read_png(path: Path, label_file: Path, line: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("L")
    except (OSError, SyntaxError, ValueError) as exc:
        raise FERPlusDataError(f"{label_file}: line {line}: cannot read image {path}: {exc}") from exc
    if im.size != (IMAGE_SIZE, IMAGE_SIZE):
        im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def _read_usage(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The Usage column of a FER-2013 CSV and its line numbers, skipping blank lines as FER2013Source does."""
    # Only the Usage column is parsed (2 s for the full file); FER2013Source has already validated every row.
    df = pd.read_csv(
        path, dtype=str, keep_default_na=False, skip_blank_lines=False, usecols=lambda c: c.strip() == "Usage"
    )
    usage = df.iloc[:, 0].str.strip()
    usage = usage[usage != ""]
    return usage.to_numpy(), usage.index.to_numpy() + 2


def _first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    if diff.size:
        return int(diff[0])
    return None if len(a) == len(b) else n
