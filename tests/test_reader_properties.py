"""Property-based tests of the data readers: whatever the rows, pixel strings, labels, Usage values, image bytes
and sizes, a reader either returns exactly what a correct reader would, or raises the project's own error naming
the file (and line); never a raw exception, never a silently wrong value, never a hang.

The expected outcome of every generated file comes from a separate, deliberately plain oracle below (one row at a
time, Python integers), not from the reader's own vectorised code paths.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from fer_lightning.data.fer2013 import CSV_SPLITS, FER2013DataError, FER2013Source
from fer_lightning.labels import EMOTIONS

PIXELS = 48 * 48
SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
INT = re.compile(r"[+-]?[0-9]+")

# ---- strategies ---------------------------------------------------------------------------------------------------
# Field text: printable, with commas and quotes (csv quotes them), without line breaks (FER files have none).
text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=6)
good_label = st.integers(0, len(EMOTIONS) - 1).map(str)
label = st.one_of(
    good_label,
    good_label.map(lambda s: f" {s} "),  # surrounding spaces are tolerated
    st.sampled_from(["+3", "03", "-0", "7", "-1", "3.0", "", "3a", "٣", "99999999999999999999"]),
    st.integers(-10, 300).map(str),
    text,
)
usage = st.one_of(
    st.sampled_from(CSV_SPLITS),
    st.sampled_from(CSV_SPLITS).map(lambda s: f" {s}"),
    st.sampled_from(["training", "Test", "", "PublicTest ", "Private Test"]),
    text,
)


@st.composite
def values(draw) -> list[int]:
    """2304 pixel values from a drawn seed, a few of them set to the extremes: drawing 2304 integers one by one
    is slow."""
    pixels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, PIXELS)
    for position in draw(st.lists(st.integers(0, PIXELS - 1), max_size=4)):
        pixels[position] = draw(st.sampled_from([0, 255]))
    return pixels.tolist()


# Tokens that break a pixel string: out of range, overflowing 32 and 64 bits, signs, leading zeros, non-ASCII
# digits, letters, fractions.
bad_token = st.one_of(
    st.sampled_from(["256", "-1", "+7", "007", "4294967297", "18446744073709551617", "99999999999999999999"]),
    st.sampled_from(["1e2", "2.0", "x", "", "١٢", "0x1f", "nan"]),
    st.integers(256, 10**30).map(str),
)


@st.composite
def pixel_string(draw) -> str:
    """A valid pixel string, or one mutated: a token replaced or dropped or added, odd whitespace."""
    tokens = [str(v) for v in draw(values())]
    kind = draw(st.sampled_from(["valid", "valid", "replace", "drop", "add", "whitespace", "text"]))
    if kind == "replace":
        tokens[draw(st.integers(0, PIXELS - 1))] = draw(bad_token)
    elif kind == "drop":
        del tokens[draw(st.integers(0, PIXELS - 1))]
    elif kind == "add":
        tokens.insert(draw(st.integers(0, PIXELS)), draw(st.integers(0, 255).map(str)))
    elif kind == "text":
        return draw(text)
    joined = " ".join(tokens)
    if kind == "whitespace":
        position = draw(st.integers(0, len(joined)))
        joined = joined[:position] + draw(st.sampled_from(["  ", "\t", " ", "\u00a0"])) + joined[position:]
    return joined


row = st.tuples(label, pixel_string(), usage)


# ---- the oracle ---------------------------------------------------------------------------------------------------
def row_problem(emotion: str, pixels: str, split: str) -> str | None:
    """Why one row is invalid, or None: the reader's documented rules, written out plainly."""
    emotion, split = emotion.strip(), split.strip()
    if not INT.fullmatch(emotion) or not 0 <= int(emotion) < len(EMOTIONS):
        return "emotion"
    if split not in CSV_SPLITS:
        return "Usage"
    tokens = pixels.split()
    if len(tokens) != PIXELS:
        return "pixel values"
    if any(not INT.fullmatch(t) or not 0 <= int(t) <= 255 for t in tokens):
        return "pixel value"
    return None


def write_rows(path: Path, rows, columns=("emotion", "pixels", "Usage"), header=None, gz: bool = False) -> None:
    order = [("emotion", "pixels", "Usage").index(c) for c in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header or columns)
    for item in rows:
        writer.writerow([item[i] for i in order])
    data = buffer.getvalue().encode()
    path.write_bytes(gzip.compress(data) if gz else data)


def load(root: Path, cache: Path, **options):
    return FER2013Source(str(root), cache_dir=str(cache), **options).load()


# ---- CSV -----------------------------------------------------------------------------------------------------------
PLAIN = " ".join(["7"] * PIXELS)


def with_token(token: str, at: int = 5) -> str:
    tokens = PLAIN.split()
    tokens[at] = token
    return " ".join(tokens)


@SETTINGS
@given(
    rows=st.lists(row, max_size=6),
    columns=st.permutations(["emotion", "pixels", "Usage"]),
    icml=st.booleans(),
    skip=st.booleans(),
    blank_at=st.none() | st.integers(0, 6),
)
# Found by this test: digit-only tokens that overflow the fast path's int32 parse into 0..255 or below 0 were
# silently decoded as other pixel values (4294967297 as 1, 99999999999999999999 as 255).
@example(
    rows=[("3", with_token("4294967297"), "Training")],
    columns=["emotion", "pixels", "Usage"],
    icml=False,
    skip=False,
    blank_at=None,
)
@example(
    rows=[("3", with_token("99999999999999999999"), "Training"), ("1", PLAIN, "PublicTest")],
    columns=["emotion", "pixels", "Usage"],
    icml=False,
    skip=True,
    blank_at=None,
)
@example(
    rows=[("3", with_token("007"), "Training")],
    columns=["pixels", "Usage", "emotion"],
    icml=True,
    skip=False,
    blank_at=0,
)
def test_csv_rows_load_exactly_or_fail_naming_file_and_line(tmp_path_factory, rows, columns, icml, skip, blank_at):
    root = tmp_path_factory.mktemp("csv")
    rows = list(rows)
    if blank_at is not None:
        rows.insert(min(blank_at, len(rows)), ("", "", ""))  # a blank line: skipped, later lines keep their numbers
    name = "icml_face_data.csv" if icml else "fer2013.csv"
    header = [f" {c}" if icml and c != "emotion" else c for c in columns]  # ICML's header has leading spaces
    write_rows(root / name, rows, columns, header)
    problems = [(i + 2, row_problem(*r)) for i, r in enumerate(rows) if r != ("", "", "")]
    bad = [(line, problem) for line, problem in problems if problem]
    good = [r for r in rows if r != ("", "", "") and row_problem(*r) is None]
    try:
        splits = load(root, tmp_path_factory.mktemp("cache"), on_bad_rows="skip" if skip else "error")
    except FER2013DataError as error:
        message = str(error)
        assert message.startswith(f"{root / name}: "), message
        if not skip and bad:
            line, problem = bad[0]
            assert message.startswith(f"{root / name}: line {line}: ") and problem in message, (message, bad[0])
        else:
            assert not good and "no valid rows" in message, message
        return
    assert (skip or not bad) and good, "a file with a bad row (or no row) loaded"
    for split in CSV_SPLITS:
        expected = [r for r in good if r[2].strip() == split]
        if not expected:
            assert split not in splits
            continue
        images = np.array([[int(t) for t in r[1].split()] for r in expected], np.uint8).reshape(-1, 48, 48)
        np.testing.assert_array_equal(splits[split].images.numpy(), images)
        assert splits[split].labels.tolist() == [int(r[0].strip()) for r in expected]


@SETTINGS
@given(data=st.binary(max_size=400), gz=st.booleans(), header=st.booleans())
def test_any_bytes_as_csv_load_or_raise_our_error(tmp_path_factory, data, gz, header):
    root = tmp_path_factory.mktemp("bytes")
    prefix = b"emotion,pixels,Usage\n" if header else b""
    content = prefix + data
    (root / ("fer2013.csv.gz" if gz else "fer2013.csv")).write_bytes(
        gzip.compress(content) if gz and header else content
    )
    try:
        load(root, tmp_path_factory.mktemp("cache"))
    except FER2013DataError as error:
        assert "fer2013.csv" in str(error)


@SETTINGS
@given(columns=st.lists(st.sampled_from(["emotion", "pixels", "Usage", "Usage ", "label", ""]), max_size=4))
def test_a_missing_column_is_named_on_line_1(tmp_path_factory, columns):
    root = tmp_path_factory.mktemp("header")
    (root / "fer2013.csv").write_text(",".join(columns) + "\n")
    present = {c.strip() for c in columns}
    try:
        load(root, tmp_path_factory.mktemp("cache"))
    except FER2013DataError as error:
        message = str(error)
        if not columns or columns == [""]:
            assert "cannot read as CSV" in message
        elif any([c.strip() for c in columns].count(name) > 1 for name in ("emotion", "pixels", "Usage")):
            assert "line 1: column(s)" in message and "more than once" in message  # found by this test
        elif not {"emotion", "pixels", "Usage"} <= present:
            assert "line 1: missing column" in message
        else:
            assert "no valid rows" in message
    else:
        pytest.fail("a file without rows loaded")


# ---- image folders -------------------------------------------------------------------------------------------------
MODES = ["L", "RGB", "RGBA", "P", "1", "LA", "I;16"]  # every mode PNG stores


@st.composite
def image_bytes(draw) -> tuple[bytes, str, tuple[int, int] | None]:
    """(file bytes, suffix, size when it is a readable image else None)."""
    kind = draw(st.sampled_from(["png", "png", "jpeg", "truncated", "random", "huge"]))
    if kind == "random":
        return draw(st.binary(max_size=200)), draw(st.sampled_from([".png", ".jpg"])), None
    if kind == "huge":  # a PNG header claiming 20000x20000 pixels: PIL refuses it as a decompression bomb
        image = Image.new("L", (1, 1))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        data = bytearray(buffer.getvalue())
        data[16:24] = (20000).to_bytes(4, "big") * 2  # IHDR width and height (the CRC no longer matches)
        return bytes(data), ".png", None
    size = (draw(st.integers(1, 96)), draw(st.integers(1, 96)))
    mode = draw(st.sampled_from(MODES if kind != "jpeg" else ["L", "RGB", "CMYK"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0]), np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG" if kind == "jpeg" else "PNG")
    data = buffer.getvalue()
    if kind == "truncated":  # at most half the file: PIL still reads a PNG that lost up to about 22 bytes at its end
        return data[: draw(st.integers(0, len(data) // 2))], ".png", None
    return data, ".jpg" if kind == "jpeg" else ".png", size


@SETTINGS
@given(
    files=st.lists(st.tuples(st.sampled_from(EMOTIONS), image_bytes()), min_size=1, max_size=5),
    policy=st.sampled_from(["resize", "error", "skip"]),
)
def test_image_folders_load_or_raise_naming_the_file(tmp_path_factory, files, policy):
    root = tmp_path_factory.mktemp("folder")
    expected = []
    for i, (emotion, (data, suffix, size)) in enumerate(files):
        path = root / "train" / emotion / f"{i:02d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected.append((EMOTIONS.index(emotion), path, size))
    expected.sort(key=lambda item: (item[0], item[1]))
    try:
        splits = load(root, tmp_path_factory.mktemp("cache"), format="folder", bad_images=policy)
    except FER2013DataError as error:
        message = str(error)
        unreadable = [p for _, p, size in expected if size is None]
        wrong_size = [p for _, p, size in expected if size not in (None, (48, 48))]
        if policy == "skip":
            assert "no usable images" in message and all(s in (None,) or s != (48, 48) for *_, s in expected)
        else:
            first = next(p for _, p, size in expected if p in unreadable or (policy == "error" and p in wrong_size))
            assert message.startswith(f"{first}: "), (message, first)
        return
    kept = [(label, size) for label, _, size in expected if size is not None and (policy != "skip" or size == (48, 48))]
    assert policy != "error" or all(size == (48, 48) for _, size in kept)
    assert all(size is not None for *_, size in expected) or policy == "skip", "an unreadable image loaded"
    train = splits["train"]
    assert train.images.shape == (len(kept), 48, 48) and train.images.dtype.is_floating_point is False
    assert train.labels.tolist() == [label for label, _ in kept]


def test_a_48x48_grey_png_round_trips_exactly(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (48, 48), np.uint8)
    (tmp_path / "train" / "fear").mkdir(parents=True)
    Image.fromarray(pixels).save(tmp_path / "train" / "fear" / "a.png")
    train = load(tmp_path, tmp_path / "cache", format="folder")["train"]
    np.testing.assert_array_equal(train.images[0].numpy(), pixels)
    assert train.labels.tolist() == [EMOTIONS.index("fear")]


# ---- FER+ votes ------------------------------------------------------------------------------------------------------
vote = st.one_of(
    st.integers(0, 10).map(str),
    st.integers(0, 10).map(lambda v: f" {v} "),
    st.sampled_from(["", "-1", "+1", "1.0", "two", "²", "٣", "99999999999999999999", "4294967297"]),
)


ONE_VOTE = ["1"] + ["0"] * 9


@SETTINGS
@given(
    rows=st.lists(st.tuples(st.sampled_from(CSV_SPLITS) | usage, st.lists(vote, min_size=10, max_size=10)), max_size=5)
)
# Found by this test: a Unicode digit ("²") or a count beyond 64 bits raised a raw ValueError / OverflowError.
@example(rows=[("Training", ["²", *ONE_VOTE[1:]])])
@example(rows=[("Training", ONE_VOTE), ("PublicTest", ["99999999999999999999", *ONE_VOTE[1:]])])
def test_ferplus_votes_load_exactly_or_fail_naming_file_and_line(tmp_path_factory, rows):
    from fer_lightning.data.ferplus import VOTES_HEADER, FERPlusDataError, read_votes

    path = tmp_path_factory.mktemp("ferplus") / "fer2013new.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(VOTES_HEADER)
    writer.writerows([split, f"fer{i:07d}.png", *votes] for i, (split, votes) in enumerate(rows))
    path.write_text(buffer.getvalue())

    def problem(split: str, votes: list[str]) -> str | None:
        if split.strip() not in CSV_SPLITS:
            return "Usage"
        cells = [v.strip() for v in votes]
        if any(not re.fullmatch(r"[0-9]{1,9}", v) for v in cells):
            return "vote"
        return None if sum(int(v) for v in cells) > 0 else "sum"

    # The reader checks every row's Usage first, then every row's votes, then the sums.
    order = ("Usage", "vote", "sum")
    bad = sorted((order.index(p), i + 2) for i, r in enumerate(rows) if (p := problem(*r)))
    try:
        usage, votes, lines = read_votes(path)
    except FERPlusDataError as error:
        assert bad and str(error).startswith(f"{path}: line {bad[0][1]}: "), (str(error), bad)
        return
    assert not bad, f"bad rows loaded: {bad}"
    assert usage.tolist() == [split.strip() for split, _ in rows]
    assert votes.tolist() == [[int(v) for v in r] for _, r in rows] and lines.tolist() == list(range(2, len(rows) + 2))
