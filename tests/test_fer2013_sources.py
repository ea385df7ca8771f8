"""FER2013Source on small synthetic copies of every FER-2013 layout, plus an opt-in check of a real copy."""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_lightning.data.fer2013 import FER2013DataError, FER2013Source
from fer_lightning.labels import EMOTIONS

USAGES = ["Training", "PublicTest", "Training", "PrivateTest", "Training", "PublicTest", "Training", "PrivateTest"]


def make_rows(n: int = 8, seed: int = 0) -> list[tuple[int, str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (int(rng.integers(0, 7)), USAGES[i % len(USAGES)], rng.integers(0, 256, (48, 48), dtype=np.uint8))
        for i in range(n)
    ]


def pix(img: np.ndarray) -> str:
    return " ".join(map(str, img.ravel().tolist()))


def write_csv(path: Path, rows, lines: list[str] | None = None) -> Path:
    """fer2013.csv layout; ``lines`` (already formatted) replace the generated rows when given."""
    body = lines if lines is not None else [f"{e},{pix(img)},{u}" for e, u, img in rows]
    text = "\n".join(["emotion,pixels,Usage", *body]) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def write_icml(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["emotion, Usage, pixels", *[f"{e},{u},{pix(img)}" for e, u, img in rows]]) + "\n")
    return path


def write_folder(root: Path, split: str, items, ext: str = ".png") -> list[Path]:
    """items: (class folder name, image array); returns the written paths."""
    paths = []
    for i, (cls, img) in enumerate(items):
        path = root / split / cls / f"img{i:03d}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def expected(rows, usage: str):
    sel = [(e, img) for e, u, img in rows if u == usage]
    return torch.tensor([e for e, _ in sel]), torch.from_numpy(np.stack([img for _, img in sel]))


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


def src(root: Path, cache: str, **kw) -> FER2013Source:
    return FER2013Source(str(root), cache_dir=cache, **kw)


def check_rows(out, rows) -> None:
    assert list(out) == ["Training", "PublicTest", "PrivateTest"]
    for usage, arrays in out.items():
        labels, images = expected(rows, usage)
        assert arrays.images.dtype == torch.uint8 and arrays.labels.dtype == torch.int64
        assert torch.equal(arrays.labels, labels) and torch.equal(arrays.images, images)


# -- formats ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fer2013.csv", "fer2013.csv.gz"])
def test_csv_roundtrip(tmp_path, cache, name):
    rows = make_rows()
    write_csv(tmp_path / "d" / name, rows)
    check_rows(src(tmp_path / "d", cache).load(), rows)
    check_rows(src(tmp_path / "d", cache, format="csv").load(), rows)


def test_icml_roundtrip_with_leading_space_header(tmp_path, cache):
    rows = make_rows(seed=1)
    write_icml(tmp_path / "d" / "icml_face_data.csv", rows)
    check_rows(src(tmp_path / "d", cache).load(), rows)
    check_rows(src(tmp_path / "d", cache, format="icml").load(), rows)


def test_only_present_splits(tmp_path, cache):
    rows = [r for r in make_rows() if r[1] == "Training"]
    write_csv(tmp_path / "d" / "fer2013.csv", rows)
    assert list(src(tmp_path / "d", cache).load()) == ["Training"]


def test_folder_png_exact_and_mixed_case(tmp_path, cache):
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(4)]
    write_folder(tmp_path / "d", "train", [("Happy", imgs[0]), ("angry", imgs[1]), ("NEUTRAL", imgs[2])])
    write_folder(tmp_path / "d", "test", [("Sad", imgs[3])])
    out = src(tmp_path / "d", cache).load()
    assert list(out) == ["train", "test"]
    order = sorted([(EMOTIONS.index("happy"), 0), (EMOTIONS.index("angry"), 1), (EMOTIONS.index("neutral"), 2)])
    assert out["train"].labels.tolist() == [label for label, _ in order]
    assert torch.equal(out["train"].images, torch.from_numpy(np.stack([imgs[i] for _, i in order])))
    assert out["test"].labels.tolist() == [EMOTIONS.index("sad")]
    assert torch.equal(out["test"].images[0], torch.from_numpy(imgs[3]))


def test_folder_jpg_and_png_mixed_rgb(tmp_path, cache):
    rgb = np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    write_folder(tmp_path / "d", "train", [("fear", rgb), ("surprise", rgb)], ext=".jpg")
    write_folder(tmp_path / "d", "train", [("disgust", rgb[..., 0])], ext=".png")
    (tmp_path / "d" / "train" / "fear" / "notes.txt").write_text("ignored")
    out = src(tmp_path / "d", cache, format="folder").load()
    assert list(out) == ["train"]
    assert out["train"].images.shape == (3, 48, 48)
    assert out["train"].labels.tolist() == [EMOTIONS.index(c) for c in ("disgust", "fear", "surprise")]


def test_auto_preference_and_forced_format(tmp_path, cache, caplog):
    root = tmp_path / "d"
    a, b, c = make_rows(4, seed=10), make_rows(5, seed=11), make_rows(6, seed=12)
    write_csv(root / "fer2013.csv", a)
    write_csv(root / "fer2013.csv.gz", b)
    write_icml(root / "icml_face_data.csv", c)
    write_folder(root, "train", [("happy", a[0][2])])

    def total(**kw) -> int:
        return sum(len(v) for v in src(root, cache, **kw).load().values())

    with caplog.at_level(logging.INFO, logger="fer_lightning.data"):
        assert total() == 4
    assert "fer2013.csv (format csv)" in caplog.text
    assert total(format="icml") == 6 and total(format="folder") == 1 and total(format="csv") == 4
    (root / "fer2013.csv").unlink()
    assert total() == 5
    (root / "fer2013.csv.gz").unlink()
    assert total() == 6
    (root / "icml_face_data.csv").unlink()
    assert total() == 1
    with pytest.raises(FileNotFoundError, match="format=csv"):
        total(format="csv")


@pytest.mark.parametrize(
    "kw, names",
    [
        ({"format": "xml"}, "auto, csv, icml, folder"),
        ({"on_bad_rows": "drop"}, "error, skip"),
        ({"bad_images": "crop"}, "resize, error, skip"),
    ],
)
def test_bad_options(tmp_path, kw, names):
    with pytest.raises(ValueError, match=names):
        FER2013Source(str(tmp_path), **kw)


@pytest.mark.parametrize("make_dir", [False, True])
def test_missing_data_message(tmp_path, cache, make_dir):
    root = tmp_path / "nothing"
    if make_dir:
        root.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        src(root, cache).load()
    msg = str(err.value)
    for part in (
        str(root),
        "fer2013.csv",
        "fer2013.csv.gz",
        "icml_face_data.csv",
        "train/",
        "Kaggle",
        "Challenges in Representation Learning",
        "msambare/fer2013",
        "data=synthetic",
    ):
        assert part in msg


# -- bad CSV input -------------------------------------------------------------------------------------------
GOOD = pix(np.zeros((48, 48), np.uint8))


@pytest.mark.parametrize(
    "line, problem",
    [
        (f"3,{' '.join(['1'] * 2303)},Training", "2303 pixel values, expected 2304"),
        (f"3,{' '.join(['1'] * 2305)},Training", "2305 pixel values"),
        (f"3,{GOOD[:-1]}x,Training", "non-numeric pixel value 'x'"),
        (f"3,{GOOD[:-1]}1.5,Training", "non-numeric pixel value '1.5'"),
        (f"3,256 {GOOD[2:]},Training", "pixel value 256 is outside 0..255"),
        (f"3,-1 {GOOD[2:]},Training", "pixel value -1 is outside 0..255"),
        (f"7,{GOOD},Training", "emotion label 7 is outside 0..6"),
        (f"-1,{GOOD},Training", "emotion label -1 is outside 0..6"),
        (f"happy,{GOOD},Training", "emotion label 'happy' is not an integer"),
        (f"2.5,{GOOD},Training", "emotion label '2.5' is not an integer"),
        (f"3,{GOOD},Validation", "unknown Usage 'Validation'"),
        ("3,,Training", "0 pixel values"),
    ],
)
def test_bad_row_message(tmp_path, cache, line, problem):
    good = f"0,{GOOD},Training"
    path = write_csv(tmp_path / "d" / "fer2013.csv", None, [good, good, line, good])
    with pytest.raises(FER2013DataError) as err:
        src(tmp_path / "d", cache).load()
    assert str(path) in str(err.value) and "line 4:" in str(err.value) and problem in str(err.value)


def test_tolerated_whitespace(tmp_path, cache):
    img = np.arange(2304, dtype=np.int64).reshape(48, 48) % 256
    text = "  ".join(map(str, img.ravel())).replace("  ", "\t", 5)
    write_csv(tmp_path / "d" / "fer2013.csv", None, [f" 4 ,{pix(img)},Training", f"5, {text} , PublicTest "])
    out = src(tmp_path / "d", cache).load()
    assert out["Training"].labels.tolist() == [4] and out["PublicTest"].labels.tolist() == [5]
    assert torch.equal(out["PublicTest"].images[0], torch.from_numpy(img.astype(np.uint8)))


def test_missing_columns(tmp_path, cache):
    path = tmp_path / "d" / "fer2013.csv"
    path.parent.mkdir()
    path.write_text(f"label,pixels\n0,{GOOD}\n")
    with pytest.raises(FER2013DataError) as err:
        src(tmp_path / "d", cache).load()
    msg = str(err.value)
    assert str(path) in msg and "['emotion', 'Usage']" in msg and "found ['label', 'pixels']" in msg


def test_malformed_csv_structure(tmp_path, cache):
    path = write_csv(tmp_path / "d" / "fer2013.csv", None, [f"0,{GOOD},Training", f"0,{GOOD},Training,extra"])
    with pytest.raises(FER2013DataError, match="line 3") as err:
        src(tmp_path / "d", cache).load()
    assert str(path) in str(err.value)


def test_skip_bad_rows(tmp_path, cache, caplog):
    rows = make_rows(6)
    lines = [f"{e},{pix(img)},{u}" for e, u, img in rows]
    lines[1] = "9" + lines[1][1:]
    lines[4] = lines[4].replace(",", ",300 ", 1)
    write_csv(tmp_path / "d" / "fer2013.csv", None, lines)
    with caplog.at_level(logging.WARNING, logger="fer_lightning.data"):
        out = src(tmp_path / "d", cache, on_bad_rows="skip").load()
    assert "skipped 2 bad row(s)" in caplog.text and "line(s) 3, 6" in caplog.text
    check_rows(out, [r for i, r in enumerate(rows) if i not in (1, 4)])


def test_no_valid_rows(tmp_path, cache):
    path = write_csv(tmp_path / "d" / "fer2013.csv", None, [f"9,{GOOD},Training"])
    with pytest.raises(FER2013DataError, match="no valid rows") as err:
        src(tmp_path / "d", cache, on_bad_rows="skip").load()
    assert str(path) in str(err.value)
    write_csv(path, None, [])
    with pytest.raises(FER2013DataError, match="no valid rows"):
        src(tmp_path / "d", cache).load()


# -- bad image folders ---------------------------------------------------------------------------------------
def test_unknown_class_folder(tmp_path, cache):
    zeros = np.zeros((48, 48), np.uint8)
    write_folder(tmp_path / "d", "train", [("happy", zeros), ("bored", zeros)])
    with pytest.raises(FER2013DataError, match="unknown class folder 'bored'"):
        src(tmp_path / "d", cache).load()


def test_empty_split_folder(tmp_path, cache):
    (tmp_path / "d" / "test" / "happy").mkdir(parents=True)
    with pytest.raises(FER2013DataError, match="no .jpg/.jpeg/.png images") as err:
        src(tmp_path / "d", cache).load()
    assert str(tmp_path / "d" / "test") in str(err.value)


def test_wrong_size_images(tmp_path, cache, caplog):
    big = np.full((96, 64), 200, np.uint8)
    small = np.zeros((48, 48), np.uint8)
    paths = write_folder(tmp_path / "d", "train", [("happy", big), ("sad", big), ("fear", small)])
    with caplog.at_level(logging.WARNING, logger="fer_lightning.data"):
        out = src(tmp_path / "d", cache).load()
    assert out["train"].images.shape == (3, 48, 48) and int(out["train"].images[1].min()) == 200
    resize_warnings = [r for r in caplog.records if "resized" in r.getMessage()]
    assert len(resize_warnings) == 1 and "resized 2 image(s)" in resize_warnings[0].getMessage()
    with pytest.raises(FER2013DataError, match="64x96, expected 48x48") as err:
        src(tmp_path / "d", cache, bad_images="error").load()
    assert str(paths[0]) in str(err.value)
    assert len(src(tmp_path / "d", cache, bad_images="skip").load()["train"]) == 1


def test_corrupt_image(tmp_path, cache, caplog):
    write_folder(tmp_path / "d", "train", [("happy", np.zeros((48, 48), np.uint8))])
    bad = tmp_path / "d" / "train" / "sad" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image")
    with pytest.raises(FER2013DataError, match="unreadable image") as err:
        src(tmp_path / "d", cache).load()
    assert str(bad) in str(err.value)
    with caplog.at_level(logging.WARNING, logger="fer_lightning.data"):
        out = src(tmp_path / "d", cache, bad_images="skip").load()
    assert len(out["train"]) == 1 and "skipped 1 unreadable" in caplog.text


# -- cache ---------------------------------------------------------------------------------------------------
def boom(*args, **kwargs):
    raise AssertionError("parser called although the cache should have been hit")


def test_cache_hit_and_invalidation(tmp_path, cache, caplog, monkeypatch):
    rows = make_rows()
    path = write_csv(tmp_path / "d" / "fer2013.csv", rows)
    first = src(tmp_path / "d", cache).load()
    with monkeypatch.context() as m, caplog.at_level(logging.INFO, logger="fer_lightning.data"):
        m.setattr(FER2013Source, "_read_csv", boom)
        second = src(tmp_path / "d", cache).load()
    assert "cache hit" in caplog.text
    for k in first:
        assert torch.equal(first[k].images, second[k].images) and torch.equal(first[k].labels, second[k].labels)

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same content: must re-parse
    with monkeypatch.context() as m:
        m.setattr(FER2013Source, "_read_csv", boom)
        with pytest.raises(AssertionError, match="parser called"):
            src(tmp_path / "d", cache).load()

    new_rows = make_rows(seed=5)
    write_csv(path, new_rows)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    check_rows(src(tmp_path / "d", cache).load(), new_rows)


def test_folder_cache_invalidated_by_touch(tmp_path, cache, monkeypatch):
    paths = write_folder(tmp_path / "d", "train", [("happy", np.zeros((48, 48), np.uint8))])
    src(tmp_path / "d", cache).load()
    monkeypatch.setattr(FER2013Source, "_read_folders", boom)
    src(tmp_path / "d", cache).load()
    st = paths[0].stat()
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="parser called"):
        src(tmp_path / "d", cache).load()


def test_corrupt_cache_is_rebuilt(tmp_path, cache, caplog):
    rows = make_rows()
    write_csv(tmp_path / "d" / "fer2013.csv", rows)
    src(tmp_path / "d", cache).load()
    (cache_file,) = Path(cache).glob("*.npz")
    cache_file.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="fer_lightning.data"):
        check_rows(src(tmp_path / "d", cache).load(), rows)
    assert "ignoring unreadable cache" in caplog.text
    check_rows(src(tmp_path / "d", cache).load(), rows)
    assert cache_file.stat().st_size > 1000 and not list(Path(cache).glob("*.tmp"))


def test_unwritable_cache_dir(tmp_path, caplog):
    rows = make_rows()
    write_csv(tmp_path / "d" / "fer2013.csv", rows)
    (tmp_path / "blocker").write_text("a file, so nothing can be created below it")
    with caplog.at_level(logging.WARNING, logger="fer_lightning.data"):
        check_rows(src(tmp_path / "d", str(tmp_path / "blocker" / "cache")).load(), rows)
    assert "cannot write cache" in caplog.text


def test_cache_dir_from_env(tmp_path, monkeypatch):
    write_csv(tmp_path / "d" / "fer2013.csv", make_rows())
    monkeypatch.setenv("FER_LIGHTNING_CACHE", str(tmp_path / "envcache"))
    FER2013Source(str(tmp_path / "d")).load()
    assert len(list((tmp_path / "envcache").glob("*.npz"))) == 1


def test_source_dir_untouched(tmp_path, cache):
    root = tmp_path / "d"
    write_csv(root / "fer2013.csv", make_rows())
    write_folder(root, "train", [("happy", np.zeros((60, 60), np.uint8))])

    def snapshot():
        return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))

    before = snapshot()
    for fmt in ("csv", "folder", "auto"):
        src(root, cache, format=fmt).load()
    assert snapshot() == before


# -- real data (opt-in) --------------------------------------------------------------------------------------
@pytest.mark.skipif(not os.environ.get("FER2013_DIR"), reason="set FER2013_DIR to a real FER-2013 copy")
def test_real_copy(tmp_path):
    out = FER2013Source(os.environ["FER2013_DIR"], cache_dir=str(tmp_path / "cache")).load()
    assert len(out["Training"]) == 28709 and len(out["PublicTest"]) == 3589
    counts = dict(zip(EMOTIONS, torch.bincount(out["Training"].labels, minlength=7).tolist()))
    assert sum(counts.values()) == 28709
    assert counts == {
        "angry": 3995,
        "disgust": 436,
        "fear": 4097,
        "happy": 7215,
        "sad": 4830,
        "surprise": 3171,
        "neutral": 4965,
    }
    for arrays in out.values():
        assert arrays.images.shape[1:] == (48, 48) and arrays.images.dtype == torch.uint8
