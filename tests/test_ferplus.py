"""FER+ labels: the vote processing of Microsoft's reference reader, both layouts, the errors, and 8-class training."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_lightning.data.datamodule import FERDataModule
from fer_lightning.data.ferplus import (
    MULTI_TARGET_EPSILON,
    VOTES_HEADER,
    FERPlusDataError,
    FERPlusSource,
    process_votes,
    votes_to_labels,
)
from fer_lightning.labels import FERPLUS_EMOTIONS
from fer_lightning.train import train
from fer_lightning.training.module import FERClassifier

EPS = MULTI_TARGET_EPSILON
# Vote rows (neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF) and what each mode
# makes of them: a class index, a distribution over the 8 emotions, or None (dropped).
CLEAR = [0, 9, 0, 1, 0, 0, 0, 0, 0, 0]  # happiness everywhere; the single sadness vote is an outlier
SPLIT = [5, 5, 0, 0, 0, 0, 0, 0, 0, 0]  # no majority (5 is not > 5), half/half for the soft modes
SPREAD = [4, 0, 0, 1, 3, 2, 0, 0, 0, 0]  # majority: 4 of 9 -> dropped; soft: neutral 4/7 anger 3/7
THIRDS = [6, 0, 0, 3, 0, 0, 0, 0, 1, 0]  # majority neutral; multi_target: neutral and sadness
FLAT = [2, 2, 2, 2, 2, 0, 0, 0, 0, 0]  # 5 tied emotions: dropped by every mode
NOT_FACE = [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]
UNKNOWN = [3, 0, 0, 0, 0, 0, 0, 0, 5, 2]
CONTEMPT = [0, 0, 0, 0, 0, 0, 0, 8, 2, 0]
VOTES = [CLEAR, SPLIT, SPREAD, THIRDS, FLAT, NOT_FACE, UNKNOWN, CONTEMPT]
# The row pattern of the synthetic files: every vote pattern in every split.
USAGES = ["Training"] * 16 + ["PublicTest"] * 8 + ["PrivateTest"] * 8


def expected(votes: list[int], mode: str) -> int | list[float] | None:
    table = {
        "majority": {0: 1, 3: 0, 7: 7},
        "crossentropy": {0: 1, 1: [0.5, 0.5], 2: [4 / 7, 0, 0, 0, 3 / 7], 3: [2 / 3, 0, 0, 1 / 3], 7: 7},
        "multi_target": {0: 1, 1: [1, 1], 2: [1, 0, 0, 0, 1], 3: [1, 0, 0, 1], 7: 7},
    }
    table["probability"] = table["crossentropy"]
    return table[mode].get(VOTES.index(votes))


def dist(value: int | list[float], mode: str) -> list[float]:
    out = [0.0] * 8
    if isinstance(value, int):
        out[value] = 1.0
    else:
        out[: len(value)] = value
    if mode == "multi_target":
        out = [(1 - EPS) * (v > 0) + EPS for v in out]
    return out


# ---- writing synthetic FER+ copies --------------------------------------------------------------------------
def pixel_rows(usages: list[str]) -> list[np.ndarray]:
    """Row k's image is filled with k (so alignment is checkable) plus noise in one corner."""
    rng = np.random.default_rng(0)
    images = []
    for k in range(len(usages)):
        img = np.full((48, 48), k % 256, dtype=np.uint8)
        img[:4, :4] = rng.integers(0, 256, (4, 4), dtype=np.uint8)
        images.append(img)
    return images


def write_pixels(path: Path, usages: list[str], icml: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        (k % 7, u, " ".join(map(str, img.ravel().tolist())))
        for k, (u, img) in enumerate(zip(usages, pixel_rows(usages)))
    ]
    if icml:
        lines = ["emotion, Usage, pixels", *[f"{e},{u},{p}" for e, u, p in rows]]
    else:
        lines = ["emotion,pixels,Usage", *[f"{e},{p},{u}" for e, u, p in rows]]
    path.write_text("\n".join(lines) + "\n")
    return path


def vote_lines(usages: list[str]) -> list[str]:
    """fer2013new.csv rows; like the real file, a row that is not a face has no image name."""
    rows = [(u, VOTES[k % len(VOTES)], f"fer{k:07d}.png") for k, u in enumerate(usages)]
    return [f"{u},{'' if v is NOT_FACE else name},{','.join(map(str, v))}" for u, v, name in rows]


def write_votes(
    path: Path, usages: list[str] = USAGES, lines: list[str] | None = None, header: str | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = vote_lines(usages) if lines is None else lines
    path.write_text("\n".join([header or ",".join(VOTES_HEADER), *body]) + "\n")
    return path


@pytest.fixture
def ferplus_dir(tmp_path: Path) -> Path:
    """fer2013.csv without PrivateTest (like many copies) and the full fer2013new.csv beside it."""
    root = tmp_path / "fer2013"
    write_pixels(root / "fer2013.csv", [u for u in USAGES if u != "PrivateTest"])
    write_votes(root / "fer2013new.csv")
    return root


def load(root: Path, mode: str = "majority", tmp: Path | None = None, **kwargs) -> dict:
    cache = str((tmp or root.parent) / "cache")
    return FERPlusSource(str(root), mode=mode, cache_dir=cache, **kwargs).load()


# ---- label modes ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["majority", "probability", "crossentropy", "multi_target"])
@pytest.mark.parametrize(
    "votes", VOTES, ids=["clear", "split", "spread", "thirds", "flat", "nf", "unknown", "contempt"]
)
def test_votes_to_labels_follows_the_reference(votes, mode):
    keep, labels, targets, _ = votes_to_labels(np.array([votes]), mode)
    want = expected(votes, mode)
    if want is None:
        assert not keep.any()
        return
    assert keep.all()
    if mode == "majority":
        assert targets is None and labels.tolist() == [want]
        return
    assert targets.shape == (1, 8)
    np.testing.assert_allclose(targets[0], dist(want, mode), atol=1e-9)
    assert labels[0] == int(np.argmax(dist(want, mode)))


def test_process_votes_unknown_tie_keeps_the_emotions_before_it():
    # neutral, happiness and unknown tie: the reference keeps the emotions (they came first) and stops at unknown.
    assert process_votes([3, 3, 0, 0, 0, 0, 0, 0, 3, 1], "crossentropy") == [0.5, 0.5] + [0.0] * 8
    # unknown alone on top: all mass on unknown, so the row is dropped
    assert np.argmax(process_votes([2, 0, 0, 0, 0, 0, 0, 0, 6, 2], "crossentropy")) == 8


def test_drop_reasons_are_counted():
    _, _, _, reasons = votes_to_labels(np.array(VOTES), "majority")
    assert reasons == {"NF": 1, "unknown": 1, "no_agreement": 3}


@pytest.mark.parametrize("mode", ["majority", "probability", "crossentropy", "multi_target"])
def test_source_aligns_votes_without_private_test(ferplus_dir, mode, caplog):
    with caplog.at_level(logging.INFO, logger="fer_lightning.data"):
        splits = load(ferplus_dir, mode)
    assert set(splits) == {"Training", "PublicTest"}  # the pixel copy has no PrivateTest
    train, val = splits["Training"], splits["PublicTest"]
    kept = [k for k in range(16) if expected(VOTES[k % 8], mode) is not None]
    # Each kept image is the pixel row of its votes row (image k is filled with k).
    assert train.images[:, 10, 10].tolist() == kept
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [
        int(np.argmax(dist(expected(VOTES[k % 8], mode), mode))) for k in kept
    ]
    assert (train.targets is None) == (mode == "majority")
    # Validation always scores majority labels, whatever the training mode.
    assert val.targets is None
    assert val.images[:, 10, 10].tolist() == [16, 19, 23]  # clear, thirds, contempt
    assert val.labels.tolist() == [1, 0, 7]
    log = caplog.text
    assert f"FER+ Training ({mode} labels): {len(kept)} of 16 images kept; dropped {16 - len(kept)}" in log
    assert (
        "FER+ PublicTest (majority labels): 3 of 8 images kept; dropped 5 (NF: 1, no_agreement: 3, unknown: 1)" in log
    )


def test_votes_from_votes_dir_and_explicit_path(tmp_path):
    root = tmp_path / "fer"
    write_pixels(root / "fer2013.csv", USAGES)
    votes = write_votes(tmp_path / "elsewhere" / "fer2013new.csv")
    assert set(load(root, votes_dir=str(votes.parent))) == {"Training", "PublicTest", "PrivateTest"}
    assert len(load(root, votes=str(votes))["PrivateTest"]) == 3
    with pytest.raises(FileNotFoundError, match="FERPLUS_DIR"):
        load(root)
    with pytest.raises(FileNotFoundError, match="data.source.votes"):
        load(root, votes=str(tmp_path / "missing.csv"))


def test_icml_pixels(tmp_path):
    root = tmp_path / "fer"
    write_pixels(root / "icml_face_data.csv", USAGES, icml=True)
    write_votes(root / "fer2013new.csv")
    assert load(root)["PrivateTest"].labels.tolist() == [1, 0, 7]


def test_microsoft_image_folders(tmp_path, ferplus_dir):
    """The layout generate_training_data.py writes: PNGs plus label.csv rows name,"(box)",votes; no NF rows."""
    root = tmp_path / "FERPlus" / "data"
    images = pixel_rows(USAGES)
    folders = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
    labels: dict[str, list[str]] = {}
    for k, usage in enumerate(USAGES):
        votes = VOTES[k % 8]
        if votes is NOT_FACE:
            continue  # the generator skips rows without an image name
        folder = root / folders[usage]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[k]).save(folder / f"fer{k:07d}.png", compress_level=0)
        labels.setdefault(usage, []).append(f'fer{k:07d}.png,"(0, 0, 48, 48)",{",".join(map(str, votes))}')
    for usage, rows in labels.items():
        (root / folders[usage] / "label.csv").write_text("\n".join(rows) + "\n")
    from_folders = load(root, "crossentropy", tmp=tmp_path)
    from_csv = load(ferplus_dir, "crossentropy")
    assert set(from_folders) == {"Training", "PublicTest", "PrivateTest"}
    for split in from_csv:
        assert torch.equal(from_folders[split].images, from_csv[split].images)
        assert torch.equal(from_folders[split].labels, from_csv[split].labels)
    assert torch.allclose(from_folders["Training"].targets, from_csv["Training"].targets)
    (root / "FER2013Valid" / "label.csv").write_text('fer0000016.png,"(0, 0, 48, 48)",0,9,x,1,0,0,0,0,0,0\n')
    with pytest.raises(FERPlusDataError, match=r"FER2013Valid/label.csv: line 1: surprise vote 'x'"):
        load(root, tmp=tmp_path)


# ---- errors -----------------------------------------------------------------------------------------------------
def test_votes_row_count_mismatch(ferplus_dir):
    write_votes(ferplus_dir / "fer2013new.csv", USAGES[:15] + USAGES[16:])  # one Training row short
    with pytest.raises(FERPlusDataError, match=r"fer2013new.csv: line 17: .*PublicTest.*line 17\) is Training"):
        load(ferplus_dir)


def test_votes_usage_disagrees(ferplus_dir):
    swapped = list(USAGES)
    swapped[3], swapped[20] = "PublicTest", "Training"
    write_votes(ferplus_dir / "fer2013new.csv", swapped)
    with pytest.raises(FERPlusDataError, match=r"line 5: votes row is PublicTest, but .* line 5\) is Training"):
        load(ferplus_dir)


def test_votes_wrong_header(ferplus_dir):
    write_votes(ferplus_dir / "fer2013new.csv", header="Usage,Image name,happy,sad")
    with pytest.raises(FERPlusDataError, match=r"fer2013new.csv: line 1: header is"):
        load(ferplus_dir)


def test_votes_not_integers(ferplus_dir):
    lines = vote_lines(USAGES)
    lines[4] = lines[4].replace(",2,2,2,2,2,", ",2,2,two,2,2,")
    write_votes(ferplus_dir / "fer2013new.csv", lines=lines)
    with pytest.raises(FERPlusDataError, match=r"fer2013new.csv: line 6: surprise vote 'two' is not a non-negative"):
        load(ferplus_dir)


def test_votes_do_not_sum_to_a_positive_count(ferplus_dir):
    lines = vote_lines(USAGES)
    lines[2] = "Training,fer0000002.png,0,0,0,0,0,0,0,0,0,0"
    write_votes(ferplus_dir / "fer2013new.csv", lines=lines)
    with pytest.raises(FERPlusDataError, match=r"line 4: the votes do not sum to a positive count"):
        load(ferplus_dir)


def test_bad_mode_and_class_folders(tmp_path):
    with pytest.raises(ValueError, match="mode='soft'"):
        FERPlusSource(str(tmp_path), mode="soft")
    (tmp_path / "train" / "happy").mkdir(parents=True)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "train" / "happy" / "a.png")
    with pytest.raises(FERPlusDataError, match="row order"):
        FERPlusSource(str(tmp_path), cache_dir=str(tmp_path / "c")).load()


# ---- datamodule and training ---------------------------------------------------------------------------------------
def test_datamodule_class_names_and_probability_sampling(ferplus_dir):
    dm = FERDataModule(FERPlusSource(str(ferplus_dir), mode="probability", cache_dir=str(ferplus_dir.parent / "c")))
    assert dm.class_names == FERPLUS_EMOTIONS and dm.label_mode == "probability"
    dm.setup("fit")
    assert dm.class_counts.shape == (8,)
    images, labels, index, targets = next(iter(dm.train_dataloader()))

    class Training:  # just enough of a trainer for on_after_batch_transfer
        training, global_step, global_rank = True, 0, 0

    dm.trainer = Training()
    _, _, _, drawn = dm.on_after_batch_transfer((images, labels, index, targets), 0)
    assert torch.equal(drawn.sum(1), torch.ones(len(labels)))  # one-hot
    assert (targets[drawn.bool()] > 0).all()  # drawn from the vote distribution
    dm.trainer = None
    assert len(next(iter(dm.val_dataloader()))) == 3  # evaluation batches stay (images, labels, index)


@pytest.mark.parametrize(
    "mode,extra",
    [
        ("majority", []),
        ("crossentropy", ["module.label_smoothing=0.1", "module.mixup_alpha=0.2", "module.cutmix_alpha=1.0"]),
        ("probability", ["module.class_weights=balanced"]),
        ("multi_target", ["module.class_weights=balanced", "module.mixup_alpha=0.2"]),
    ],
)
def test_every_mode_trains_8_classes(make_cfg, ferplus_dir, tmp_path, mode, extra):
    cfg = make_cfg(
        "data=ferplus",
        f"paths.data_dir={ferplus_dir}",
        "data.source.votes_dir=null",
        f"data.source.mode={mode}",
        "debug=limit",
        "trainer.max_epochs=1",
        *extra,
    )
    metrics = train(cfg)
    assert np.isfinite(metrics["train/loss"])
    assert "val/f1/contempt" in metrics and "val/f1/happiness" in metrics
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["hyper_parameters"]["class_names"] == list(FERPLUS_EMOTIONS)
    assert state["hyper_parameters"]["net"]["num_classes"] == 8  # the 7-class model config follows the data


@pytest.mark.parametrize("experiment", ["ferplus_cpu", "ferplus_speedrun", "ferplus"])
def test_experiments_fast_dev_run(make_cfg, ferplus_dir, experiment):
    cfg = make_cfg(
        f"experiment={experiment}",
        f"paths.data_dir={ferplus_dir}",
        "data.source.votes_dir=null",
        "debug=fdr",
        tiny=False,
    )
    assert cfg.data.source.mode == "crossentropy" and cfg.model.num_classes == 8
    metrics = train(cfg)
    assert "val/acc" in metrics and "val/f1/contempt" in metrics


def test_multi_target_loss_is_the_reference_one():
    module = FERClassifier(
        net={"_target_": "fer_lightning.models.linear.LogisticRegression", "num_classes": 7},
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
        class_names=FERPLUS_EMOTIONS,
    )
    assert module.hparams.net["num_classes"] == 8
    logits = torch.randn(4, 8)
    targets = torch.tensor(votes_to_labels(np.array([CLEAR, SPLIT, SPREAD, THIRDS]), "multi_target")[2])
    want = -torch.log((targets * logits.softmax(-1)).amax(-1)).mean()  # Microsoft's train.py cost_func
    got = module._multi_target_loss(logits, targets.float(), torch.zeros(4, dtype=torch.long))
    assert torch.allclose(got, want.float(), atol=1e-5)


# ---- the real data (opt-in) -----------------------------------------------------------------------------------------
@pytest.mark.skipif(
    not (os.environ.get("FER2013_DIR") and os.environ.get("FERPLUS_DIR")), reason="set FER2013_DIR and FERPLUS_DIR"
)
def test_real_ferplus():
    splits = FERPlusSource(os.environ["FER2013_DIR"], votes_dir=os.environ["FERPLUS_DIR"], mode="majority").load()
    assert {"Training", "PublicTest"} <= set(splits)
    assert 24000 < len(splits["Training"]) < 28709
    assert 3000 < len(splits["PublicTest"]) < 3589
    assert torch.bincount(splits["PublicTest"].labels, minlength=8).min() > 0
