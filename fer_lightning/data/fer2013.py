"""Read FER-2013 from any of its common distributions into memory, with a parse cache.

Three layouts circulate: Kaggle's ``fer2013.csv`` (sometimes gzipped), the ICML 2013 workshop's
``icml_face_data.csv`` (same data, header ``emotion, Usage, pixels`` with leading spaces) and the
``msambare/fer2013`` image folders ``train/<class>/*.png|jpg`` and ``test/<class>/...``. Parsing the
300 MB CSV or decoding 36k images takes seconds, so the decoded arrays are cached in one ``.npz`` file
keyed by the source's identity (path, size, mtime); a warm load is a single uncompressed read.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fer_lightning.data.cache import cached_splits, default_cache_dir, stat_key
from fer_lightning.data.splits import SplitArrays
from fer_lightning.labels import EMOTIONS, IMAGE_SIZE

CHUNK_ROWS = 4096
log = logging.getLogger("fer_lightning.data")

FORMATS = ("auto", "csv", "icml", "folder")
BAD_ROW_POLICIES = ("error", "skip")
BAD_IMAGE_POLICIES = ("resize", "error", "skip")
CSV_SPLITS = ("Training", "PublicTest", "PrivateTest")
FOLDER_SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CSV_NAMES = {"csv": ("fer2013.csv", "fer2013.csv.gz"), "icml": ("icml_face_data.csv",)}
REQUIRED_COLUMNS = ("emotion", "pixels", "Usage")
CACHE_VERSION = 2  # bump whenever the decoded output for the same input could change (2: int32 overflow)
PIXELS = IMAGE_SIZE * IMAGE_SIZE
_INT = re.compile(r"[+-]?\d+", re.ASCII)
_HELP = (
    "looked for fer2013.csv, fer2013.csv.gz, icml_face_data.csv, or image folders train/<class>/*.png|jpg and "
    "test/<class>/... . FER-2013 can be downloaded from Kaggle's \"Challenges in Representation Learning: Facial "
    'Expression Recognition Challenge" (or the msambare/fer2013 image-folder copy); data=synthetic needs no download.'
)


class FER2013DataError(ValueError):
    """The FER-2013 source exists but its content is malformed; the message names file, line and problem."""


class FER2013Source:
    """Locate, parse (or load from cache) and return every split of a FER-2013 copy under ``root``.

    ``format``: ``auto`` | ``csv`` | ``icml`` | ``folder``. ``on_bad_rows`` (CSV): ``error`` | ``skip``.
    ``bad_images`` (folders): ``resize`` non-48x48 images, ``error`` on them, or ``skip`` them (and unreadable
    files). ``cache_dir`` defaults to ``$FER_LIGHTNING_CACHE`` or ``~/.cache/fer_lightning``.
    """

    class_names = EMOTIONS
    label_mode = "majority"

    def __init__(
        self,
        root: str,
        format: str = "auto",
        on_bad_rows: str = "error",
        bad_images: str = "resize",
        cache_dir: str | None = None,
    ) -> None:
        for name, value, choices in (
            ("format", format, FORMATS),
            ("on_bad_rows", on_bad_rows, BAD_ROW_POLICIES),
            ("bad_images", bad_images, BAD_IMAGE_POLICIES),
        ):
            if value not in choices:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(choices)}")
        self.root = Path(root).expanduser().absolute()
        self.format, self.on_bad_rows, self.bad_images = format, on_bad_rows, bad_images
        self.cache_dir = default_cache_dir(cache_dir)

    def load(self) -> dict[str, SplitArrays]:
        """Return ``{split: SplitArrays}`` for every split present, from the cache when the source is unchanged."""
        fmt, source = self._locate()
        log.info("FER-2013: using %s (format %s)", source, fmt)
        if fmt == "folder":
            files = self._scan_folders(source)
            identity: list = sorted([str(p.relative_to(source)), *stat_key(p)] for fs in files.values() for _, p in fs)
        else:
            identity = [str(source), *stat_key(source)]
        key = [CACHE_VERSION, fmt, self.on_bad_rows, self.bad_images, identity]

        def parse() -> dict[str, SplitArrays]:
            log.info("FER-2013: cache miss, parsing %s", source)
            return self._read_folders(files) if fmt == "folder" else self._read_csv(source)

        return cached_splits(self.cache_dir, "fer2013", key, parse)

    # -- locating -------------------------------------------------------------------------------------------
    def _locate(self) -> tuple[str, Path]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"FER-2013 directory {self.root} does not exist; {_HELP}")
        for fmt in ("csv", "icml", "folder") if self.format == "auto" else (self.format,):
            if fmt == "folder":
                if any((self.root / s).is_dir() for s in FOLDER_SPLITS):
                    return fmt, self.root
                continue
            for name in CSV_NAMES[fmt]:
                if (self.root / name).is_file():
                    return fmt, self.root / name
        raise FileNotFoundError(f"no FER-2013 data (format={self.format}) in {self.root}: {_HELP}")

    # -- CSV ------------------------------------------------------------------------------------------------
    def _read_csv(self, path: Path) -> dict[str, SplitArrays]:
        """Validate and decode all rows vectorised; only rows that fail a fast check get a per-row diagnosis."""
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
        except (ValueError, OSError, EOFError) as exc:  # ParserError, EmptyDataError, UnicodeError, BadGzipFile
            raise FER2013DataError(f"{path}: cannot read as CSV: {str(exc).strip()}") from exc
        df.columns = [str(c).strip() for c in df.columns]  # icml_face_data.csv has " Usage", " pixels"
        named = [re.sub(r"\.\d+$", "", c).strip() for c in df.columns]  # pandas reads a second "Usage" as "Usage.1"
        twice = sorted({c for c in named if c in REQUIRED_COLUMNS and named.count(c) > 1})
        if twice:
            raise FER2013DataError(f"{path}: line 1: column(s) {twice} appear more than once; found {list(df.columns)}")
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise FER2013DataError(
                f"{path}: line 1: missing column(s) {missing}; found {list(df.columns)}, "
                f"expected {list(REQUIRED_COLUMNS)}"
            )
        df = df[list(REQUIRED_COLUMNS)].fillna("")
        df = df[~(df == "").all(axis=1)]  # blank lines; the index keeps the original line numbers
        emotion, usage = df["emotion"].str.strip().to_numpy(), df["Usage"].str.strip().to_numpy()
        pixels, lines = df["pixels"].tolist(), df.index.to_numpy() + 2  # header is line 1
        n = len(pixels)

        ok = np.isin(emotion, [str(i) for i in range(len(EMOTIONS))]) & np.isin(usage, CSV_SPLITS)
        ok &= np.fromiter((p.count(" ") == PIXELS - 1 for p in pixels), bool, n)
        images = np.empty((n, PIXELS), np.uint8)
        # Decoded a chunk of rows at a time: the whole CSV as one string plus its int32 values would add
        # about 600 MB to the peak memory of a training run. np.fromstring (text mode) measured fastest:
        # ~3 s for the full CSV vs ~15 s for pandas sep=" ".
        for start in range(0, n, CHUNK_ROWS):
            rows = np.arange(start, min(n, start + CHUNK_ROWS))
            rows = rows[ok[rows]]
            text = " ".join(pixels[i] for i in rows)
            if rows.size and _dirty(text):  # stray characters or whitespace: find the rows (slow path)
                clean = np.fromiter((not _dirty(pixels[i]) for i in rows), bool, len(rows))
                ok[rows[~clean]] = False
                rows = rows[clean]
                text = " ".join(pixels[i] for i in rows)
            if rows.size:
                values = np.fromstring(text, dtype=np.int32, sep=" ").reshape(-1, PIXELS)
                images[rows] = values  # values > 255 wrap here, but their rows are rejected on the next lines
                # A token of 10+ digits overflows int32, possibly into 0..255 ("4294967297" reads as 1): a row
                # must be exactly as long as its values printed plainly, else (that, or leading zeros) it is
                # diagnosed one token at a time.
                printed = (1 + (values >= 10) + (values >= 100)).sum(axis=1) + PIXELS - 1
                lengths = np.fromiter((len(pixels[i]) for i in rows), np.int64, len(rows))
                ok[rows[(values.max(axis=1) > 255) | (values.min(axis=1) < 0) | (printed != lengths)]] = False

        problems: list[tuple[int, str]] = []
        for i in np.flatnonzero(~ok):
            problem, row = _diagnose(emotion[i], usage[i], pixels[i])
            if problem is None:  # e.g. tabs or double spaces: tolerated, decoded by the slow path
                images[i], ok[i] = row, True
                continue
            if self.on_bad_rows == "error":
                raise FER2013DataError(f"{path}: line {lines[i]}: {problem}")
            problems.append((int(lines[i]), problem))
        if problems:
            first = ", ".join(str(line) for line, _ in problems[:5])
            log.warning(
                "%s: skipped %d bad row(s) (on_bad_rows=skip), first at line(s) %s; line %d: %s",
                path,
                len(problems),
                first,
                *problems[0],
            )
        if not ok.any():
            raise FER2013DataError(f"{path}: no valid rows")
        images, labels, usage = images[ok].reshape(-1, IMAGE_SIZE, IMAGE_SIZE), emotion[ok].astype(np.int64), usage[ok]
        return {
            s: SplitArrays(torch.from_numpy(images[usage == s]), torch.from_numpy(labels[usage == s]))
            for s in CSV_SPLITS
            if (usage == s).any()
        }

    # -- image folders ----------------------------------------------------------------------------------------
    def _scan_folders(self, root: Path) -> dict[str, list[tuple[int, Path]]]:
        """List ``{split: [(label, path)]}`` sorted by label then path, so order is deterministic."""
        out: dict[str, list[tuple[int, Path]]] = {}
        for split in FOLDER_SPLITS:
            split_dir = root / split
            if not split_dir.is_dir():
                continue
            files = []
            for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
                if class_dir.name.lower() not in EMOTIONS:
                    raise FER2013DataError(
                        f"{class_dir}: unknown class folder {class_dir.name!r}; "
                        f"expected one of {', '.join(EMOTIONS)} (case-insensitive)"
                    )
                label = EMOTIONS.index(class_dir.name.lower())
                files += [(label, p) for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise FER2013DataError(f"{split_dir}: no .jpg/.jpeg/.png images in any class folder")
            out[split] = sorted(files)
        return out

    def _read_folders(self, files: dict[str, list[tuple[int, Path]]]) -> dict[str, SplitArrays]:
        resized: list[Path] = []
        skipped: list[Path] = []
        out = {}
        for split, entries in files.items():
            images, labels = [], []
            for label, path in entries:
                try:
                    with Image.open(path) as im:
                        im = im.convert("L")  # forces the decode, so corrupt files fail here
                except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                    if self.bad_images != "skip":
                        raise FER2013DataError(f"{path}: unreadable image: {exc}") from exc
                    skipped.append(path)
                    continue
                if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                    if self.bad_images == "error":
                        raise FER2013DataError(
                            f"{path}: image is {im.size[0]}x{im.size[1]}, expected "
                            f"{IMAGE_SIZE}x{IMAGE_SIZE} (bad_images=resize would resize it)"
                        )
                    if self.bad_images == "skip":
                        skipped.append(path)
                        continue
                    im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)  # antialiased on shrink
                    resized.append(path)
                images.append(np.asarray(im, dtype=np.uint8))
                labels.append(label)
            if not images:
                raise FER2013DataError(f"{self.root / split}: no usable images (all {len(entries)} skipped)")
            out[split] = SplitArrays(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64))
        if resized:
            log.warning(
                "FER-2013: resized %d image(s) to %dx%d, e.g. %s", len(resized), IMAGE_SIZE, IMAGE_SIZE, resized[0]
            )
        if skipped:
            log.warning(
                "FER-2013: skipped %d unreadable or wrongly sized image(s) (bad_images=skip), e.g. %s",
                len(skipped),
                skipped[0],
            )
        return out


def _dirty(text: str) -> bool:
    """True if ``text`` is not purely digits separated by single spaces (what ``np.fromstring`` can trust)."""
    return (
        bool(text.encode("ascii", "replace").translate(None, b"0123456789 "))
        or "  " in text
        or text[:1] == " "
        or text[-1:] == " "
    )


def _diagnose(emotion: str, usage: str, pixels: str) -> tuple[str | None, np.ndarray | None]:
    """Explain what is wrong with one row, or decode it if it is only unusually formatted."""
    if not _INT.fullmatch(emotion):
        return f"emotion label {emotion!r} is not an integer", None
    if not 0 <= int(emotion) < len(EMOTIONS):
        return f"emotion label {emotion} is outside 0..{len(EMOTIONS) - 1}", None
    if usage not in CSV_SPLITS:
        return f"unknown Usage {usage!r}, expected one of {', '.join(CSV_SPLITS)}", None
    tokens = pixels.split()
    if len(tokens) != PIXELS:
        return f"{len(tokens)} pixel values, expected {PIXELS}", None
    for token in tokens:
        if not _INT.fullmatch(token):
            return f"non-numeric pixel value {token!r}", None
        if not 0 <= int(token) <= 255:
            return f"pixel value {token} is outside 0..255", None
    return None, np.array([int(t) for t in tokens], dtype=np.uint8)
