"""The readers of CK+, JAFFE, RAF-DB and AffectNet on tiny copies of every layout (tests/helpers/datasets.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from fer_lightning.data.affectnet import AFFECTNET_EMOTIONS, AffectNetSource
from fer_lightning.data.ckplus import CKPLUS_EMOTIONS, EXPRESSIONS, CKPlusSource
from fer_lightning.data.face_files import DatasetError, FaceCropper
from fer_lightning.data.jaffe import JAFFE_EMOTIONS, JAFFESource
from fer_lightning.data.rafdb import RAFDB_EMOTIONS, RAFDBSource
from tests.helpers.datasets import (
    AFFECTNET_HEADER,
    write_affectnet_csv,
    write_ck48,
    write_ckplus_original,
    write_class_folders,
    write_jaffe,
    write_rafdb_list,
)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


# ---- CK+ ------------------------------------------------------------------------------------------------------
def test_ck48_folders_read_pixel_exact_with_subjects(tmp_path, cache):
    written = write_ck48(tmp_path / "ck")
    source = CKPlusSource(tmp_path / "ck", cache_dir=cache)
    assert source.found_layout == "ck48" and source.class_names == EXPRESSIONS
    data = source.load()["all"]
    assert len(data) == len(written) == 7 * 4 * 2
    files = sorted(written)  # the reader's order: class folder, then file name
    files.sort(key=lambda p: EXPRESSIONS.index(p.parent.name))
    for i, path in enumerate(files):
        assert data.labels[i] == written[path]
        assert np.array_equal(data.images[i].numpy(), np.asarray(Image.open(path)))
    assert data.groups.unique().tolist() == [0, 1, 2, 3]  # S010..S013
    assert source.load()["all"].images.equal(data.images)  # from the cache


def test_ck48_unknown_folder_and_file_without_subject_are_errors(tmp_path, cache):
    write_ck48(tmp_path / "ck", subjects=1, per_class=1)
    (tmp_path / "ck" / "CK+48" / "boredom").mkdir()
    with pytest.raises(DatasetError, match=r"boredom.*unknown class folder.*expected anger, contempt"):
        CKPlusSource(tmp_path / "ck", cache_dir=cache).load()
    (tmp_path / "ck" / "CK+48" / "boredom").rmdir()
    Image.new("L", (48, 48)).save(tmp_path / "ck" / "CK+48" / "happy" / "face.png")
    with pytest.raises(DatasetError, match=r"face\.png: a CK\+48 file name starts with its subject"):
        CKPlusSource(tmp_path / "ck", cache_dir=cache).load()


def test_ckplus_original_takes_last_frames_and_first_as_neutral(tmp_path, cache):
    root = tmp_path / "ckplus"
    write_ckplus_original(root, {"S010": {"001": 3, "002": 5}, "S011": {"001": 7, "002": None}})
    source = CKPlusSource(root, last_frames=3, cache_dir=cache)
    assert source.found_layout == "original" and source.class_names == CKPLUS_EMOTIONS
    data = source.load()["all"]
    # 3 labelled sequences x (3 last frames + 1 neutral); the unlabelled sequence is not read
    assert len(data) == 12
    names = [CKPLUS_EMOTIONS[i] for i in data.labels.tolist()]
    assert (
        names.count("neutral") == 3 and names.count("disgust") == names.count("happy") == names.count("surprise") == 3
    )
    assert data.images.shape[1:] == (48, 48) and data.images.float().std() > 10  # real crops, not blank
    assert sorted(set(data.groups.tolist())) == [0, 1]
    without = CKPlusSource(root, last_frames=1, neutral=False, cache_dir=cache).load()["all"]
    assert len(without) == 3 and [EXPRESSIONS[i] for i in without.labels.tolist()] == ["disgust", "happy", "surprise"]


def test_ckplus_original_crops_are_cached_and_a_changed_label_misses(tmp_path, cache, monkeypatch):
    root = tmp_path / "ckplus"
    write_ckplus_original(root, {"S010": {"001": 3}, "S011": {"001": 4}}, frames=4)
    first = CKPlusSource(root, cache_dir=cache).load()["all"]
    monkeypatch.setattr(FaceCropper, "find", lambda self, path: pytest.fail("read again despite the cache"))
    assert CKPlusSource(root, cache_dir=cache).load()["all"].images.equal(first.images)
    label = next((root / "Emotion").rglob("*_emotion.txt"))
    label.write_text("   6.0000000e+00\n")
    with pytest.raises(pytest.fail.Exception, match="read again"):
        CKPlusSource(root, cache_dir=cache).load()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "expected one label number, found 0"),
        ("3 4", "found 2 value"),
        ("happy", "'happy' is not a number"),
        ("   9.0000000e+00", "not a CK\\+ expression code 1..7"),
        ("2.5", "not a CK\\+ expression code"),
    ],
)
def test_ckplus_bad_label_file_names_file_and_line(tmp_path, cache, text, problem):
    root = tmp_path / "ckplus"
    write_ckplus_original(root, {"S010": {"001": 3}}, frames=2)
    label = next((root / "Emotion").rglob("*_emotion.txt"))
    label.write_text(text)
    with pytest.raises(DatasetError, match=rf"{label.name}: line 1: .*{problem}"):
        CKPlusSource(root, cache_dir=cache).load()


def test_ckplus_label_without_frames_is_an_error(tmp_path, cache):
    root = tmp_path / "ckplus"
    write_ckplus_original(root, {"S010": {"001": 3}}, frames=2)
    (root / "Emotion" / "S010" / "009").mkdir()
    (root / "Emotion" / "S010" / "009" / "S010_009_00000003_emotion.txt").write_text("1\n")
    with pytest.raises(DatasetError, match=r"S010_009_00000003_emotion.txt: its sequence has no frames"):
        CKPlusSource(root, cache_dir=cache).load()


def test_missing_root_names_the_layouts(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match=r"CK\+ directory .* does not exist; expected the original release"):
        CKPlusSource(tmp_path / "nowhere", cache_dir=cache).load()


# ---- JAFFE ------------------------------------------------------------------------------------------------------
def test_jaffe_codes_posers_and_face_crops(tmp_path, cache):
    written = write_jaffe(tmp_path / "jaffe")
    data = JAFFESource(tmp_path / "jaffe", cache_dir=cache).load()["all"]
    assert len(data) == len(written) == 21
    codes = {"NE": "neutral", "HA": "happiness", "SA": "sadness", "SU": "surprise", "AN": "anger", "DI": "disgust"}
    codes["FE"] = "fear"
    expected = [JAFFE_EMOTIONS.index(codes[written[p]]) for p in sorted(written)]
    assert data.labels.tolist() == expected
    assert data.groups.tolist() == [0] * 7 + [1] * 7 + [2] * 7  # KA, KL, KM
    assert data.images.float().std() > 10


def test_jaffe_bad_names_are_errors(tmp_path, cache):
    write_jaffe(tmp_path / "jaffe", posers=("KA",), codes="NE")
    Image.new("L", (256, 256)).save(tmp_path / "jaffe" / "KA.XX1.9.tiff")
    with pytest.raises(DatasetError, match=r"KA.XX1.9.tiff: unknown expression code 'XX'"):
        JAFFESource(tmp_path / "jaffe", cache_dir=cache).load()
    (tmp_path / "jaffe" / "KA.XX1.9.tiff").rename(tmp_path / "jaffe" / "photo.tiff")
    with pytest.raises(DatasetError, match=r"photo.tiff: not a JAFFE file name"):
        JAFFESource(tmp_path / "jaffe", cache_dir=cache).load()


# ---- RAF-DB -----------------------------------------------------------------------------------------------------
def test_rafdb_list_layout_aligned(tmp_path, cache):
    lines = write_rafdb_list(tmp_path / "raf")
    source = RAFDBSource(tmp_path / "raf", cache_dir=cache)
    splits = source.load()
    assert source.found_layout == "list" and sorted(splits) == ["test", "train"]
    assert len(splits["train"]) == 14 and len(splits["test"]) == 7
    assert splits["train"].labels.tolist() == [code - 1 for _, code in lines[:14]]
    assert RAFDB_EMOTIONS[lines[0][1] - 1] == "surprise"  # code 1
    assert splits["train"].groups is None


def test_rafdb_original_images_find_the_face(tmp_path, cache):
    write_rafdb_list(tmp_path / "raf", train=3, test=2, aligned=False)
    splits = RAFDBSource(tmp_path / "raf", images="original", cache_dir=cache).load()
    assert len(splits["train"]) == 3 and splits["train"].images.float().std() > 10


@pytest.mark.parametrize(
    ("line", "problem"),
    [("train_00003.jpg", "is not 'train_00001.jpg <label>'"), ("train_00003.jpg 8", "label '8' is not a RAF-DB")],
)
def test_rafdb_bad_label_line(tmp_path, cache, line, problem):
    write_rafdb_list(tmp_path / "raf", train=2, test=1)
    label_file = tmp_path / "raf" / "EmoLabel" / "list_patition_label.txt"
    label_file.write_text(label_file.read_text() + line + "\n")
    with pytest.raises(DatasetError, match=rf"list_patition_label.txt: line 4: .*{problem}"):
        RAFDBSource(tmp_path / "raf", cache_dir=cache).load()


def test_rafdb_missing_image_error_or_skip(tmp_path, cache):
    write_rafdb_list(tmp_path / "raf", train=3, test=2)
    (tmp_path / "raf" / "Image" / "aligned" / "train_00002_aligned.jpg").unlink()
    with pytest.raises(DatasetError, match=r"line 2: image .*train_00002_aligned.jpg is missing"):
        RAFDBSource(tmp_path / "raf", cache_dir=cache).load()
    assert len(RAFDBSource(tmp_path / "raf", bad_images="skip", cache_dir=cache).load()["train"]) == 2


def test_rafdb_class_folders(tmp_path, cache):
    write_class_folders(tmp_path / "raf" / "DATASET", {"train": {"1": 2, "7": 3}, "test": {"4": 1}}, ".jpg", 100)
    splits = RAFDBSource(tmp_path / "raf", cache_dir=cache).load()
    assert splits["train"].labels.tolist() == [0, 0, 6, 6, 6] and splits["test"].labels.tolist() == [3]
    (tmp_path / "raf" / "DATASET" / "train" / "8").mkdir()
    with pytest.raises(DatasetError, match=r"train/8: unknown class folder '8'; expected 1..7"):
        RAFDBSource(tmp_path / "raf", cache_dir=cache).load()


# ---- AffectNet --------------------------------------------------------------------------------------------------
def test_affectnet_csv_cuts_the_box_and_leaves_out_8_to_10(tmp_path, cache):
    from fer_lightning.deploy.faces import Box, crop_face

    written = write_affectnet_csv(tmp_path / "an", {"training.csv": [0, 1, 7, 8, 9, 10, 6], "validation.csv": [2, 3]})
    source = AffectNetSource(tmp_path / "an", cache_dir=cache)
    splits = source.load()
    assert source.left_out == {"none": 1, "uncertain": 1, "non-face": 1}
    assert splits["train"].labels.tolist() == [0, 1, 7, 6] and splits["test"].labels.tolist() == [2, 3]
    assert AFFECTNET_EMOTIONS[7] == "contempt"
    first = np.asarray(
        Image.open(tmp_path / "an" / "Manually_Annotated_Images" / written["training.csv"][0][0]).convert("L")
    )
    assert np.array_equal(splits["train"].images[0].numpy(), crop_face(first, Box(80, 70, 140, 140), 0.1))


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("1/a.jpg,1,2,3,4,0;0,11,0,0", "line 2: expression 11 is not an AffectNet code"),
        ("1/a.jpg,1,2,3,4,0;0,happy,0,0", "line 2: expression 'happy' is not an integer"),
        ("1/a.jpg,1,2,3,4,0;0,1", "line 2: 7 fields, expected 9"),
        ("1/a.jpg,1,2,0,4,0;0,1,0,0", "line 2: face box \\[1, 2, 0, 4\\] has no area"),
        ("1/a.jpg,1,2,3,4,0;0,1,0,0", "line 2: image .*a.jpg is missing"),
    ],
)
def test_affectnet_bad_rows(tmp_path, cache, row, problem):
    (tmp_path / "an").mkdir()
    (tmp_path / "an" / "training.csv").write_text(AFFECTNET_HEADER + row + "\n")
    with pytest.raises(DatasetError, match=rf"training.csv: {problem}"):
        AffectNetSource(tmp_path / "an", cache_dir=cache).load()


def test_affectnet_bad_header(tmp_path, cache):
    (tmp_path / "an").mkdir()
    (tmp_path / "an" / "training.csv").write_text("file,label\n1/a.jpg,1\n")
    with pytest.raises(DatasetError, match=r"training.csv: line 1: header \['file', 'label'\] is not"):
        AffectNetSource(tmp_path / "an", cache_dir=cache).load()


def test_affectnet_class_folders_by_code_or_name(tmp_path, cache):
    layout = {"train": {"0": 2, "Happy": 1, "contempt": 1, "9": 2}, "val": {"anger": 1, "non-face": 1}}
    write_class_folders(tmp_path / "an", layout)
    source = AffectNetSource(tmp_path / "an", cache_dir=cache)
    splits = source.load()
    assert splits["train"].labels.tolist() == [0, 0, 1, 7] and splits["test"].labels.tolist() == [6]
    assert source.left_out == {"uncertain": 2, "non-face": 1}


# ---- the data configs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ckplus", "jaffe", "rafdb", "affectnet"])
def test_data_configs_take_paths_data_dir(make_cfg, tmp_path, name):
    cfg = make_cfg(f"data={name}", f"paths.data_dir={tmp_path / 'x'}")
    datamodule = instantiate(cfg.data)
    assert datamodule.source.root == tmp_path / "x"


def test_data_config_takes_its_environment_variable(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("CKPLUS_DIR", str(tmp_path / "ck"))
    write_ck48(tmp_path / "ck", subjects=10, per_class=1)
    datamodule = instantiate(make_cfg("data=ckplus").data)
    datamodule.setup("fit")
    test_subjects = set(datamodule.splits["test"].groups.tolist())
    assert test_subjects and not test_subjects & set(datamodule.splits["train"].groups.tolist())
    assert sum(len(s) for s in datamodule.splits.values()) == 70
    assert torch.equal(
        torch.sort(torch.cat([s.groups for s in datamodule.splits.values()])).values.unique(), torch.arange(10)
    )
