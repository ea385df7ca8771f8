"""Subject-independent folds, training and evaluating on the other datasets, the cross-dataset table, and the
fold multirun's mean +- std (tiny copies from tests/helpers/datasets.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from fer_lightning.compare import leaderboard
from fer_lightning.compare import main as compare_main
from fer_lightning.data.folds import assign_folds, fold_splits
from fer_lightning.data.splits import SplitArrays
from fer_lightning.evaluate import evaluate
from fer_lightning.train import train
from tests.conftest import ROOT, compose_config
from tests.helpers.datasets import write_ck48, write_ckplus_original, write_jaffe


def lab_faces(subjects: list[int]) -> SplitArrays:
    groups = torch.tensor(subjects)
    return SplitArrays(torch.zeros(len(groups), 4, 4, dtype=torch.uint8), torch.arange(len(groups)) % 7, groups=groups)


def test_folds_are_subject_disjoint_cover_every_face_once_and_are_deterministic():
    generator = torch.Generator().manual_seed(1)
    subjects = torch.randint(0, 40, (600,), generator=generator).tolist()  # 40 subjects, uneven sizes
    data = lab_faces(subjects)
    tested = []
    for fold in range(10):
        parts = fold_splits(data, 10, fold, seed=0)
        owners = {role: set(part.groups.tolist()) for role, part in parts.items()}
        assert not owners["train"] & owners["test"] and not owners["train"] & owners["val"]
        assert not owners["val"] & owners["test"]
        assert sum(len(p) for p in parts.values()) == len(data)
        tested += parts["test"].labels.tolist()
        assert parts["val"].groups.equal(fold_splits(data, 10, (fold + 1) % 10)["test"].groups)
    assert len(tested) == len(data)  # every face is tested exactly once over the 10 folds
    folds = assign_folds(data.groups, 10, seed=0)
    assert folds.equal(assign_folds(data.groups, 10, seed=0))
    assert not folds.equal(assign_folds(data.groups, 10, seed=1))
    sizes = torch.bincount(folds, minlength=10)
    assert sizes.max() - sizes.min() <= torch.bincount(data.groups).max()  # dealt largest subject first


def test_fold_errors():
    with pytest.raises(ValueError, match="data.fold must be in 0..4"):
        fold_splits(lab_faces(list(range(10))), 5, 5)
    with pytest.raises(ValueError, match="needs at least 5 subjects; the data has 3"):
        fold_splits(lab_faces([0, 1, 2]), 5, 0)
    with pytest.raises(ValueError, match="at least 3"):
        fold_splits(lab_faces([0, 1, 2]), 2, 0)
    with pytest.raises(ValueError, match="data.folds needs a source that says whose face"):
        fold_splits(SplitArrays(torch.zeros(3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.long)), 3, 0)


def test_train_on_jaffe_fold_zero(make_cfg, tmp_path):
    write_jaffe(tmp_path / "jaffe", posers=("KA", "KL", "KM", "KR", "MK"))
    cfg = make_cfg(
        "data=jaffe",
        f"paths.data_dir={tmp_path / 'jaffe'}",
        "data.folds=5",
        "data.fold=0",
        "trainer.max_epochs=2",
        "model=cnn3",
        "data.batch_size=8",
    )
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_samples"] == 7  # one poser's 7 photos
    assert 0.0 <= metrics["test/acc"] <= 1.0


def run_eval(tmp_path, *overrides, run: str = "eval"):
    cfg = compose_config(list(overrides), tmp_path / run, config_name="eval")
    return evaluate(cfg)


def test_evaluate_shipped_model_on_ck48_over_shared_classes(tmp_path):
    write_ck48(tmp_path / "ck", subjects=3, per_class=1)
    metrics = run_eval(tmp_path, "data=ckplus", "pretrained=fer2013", f"paths.data_dir={tmp_path / 'ck'}")
    assert metrics["split"] == "all" and metrics["num_samples"] == 6 * 3  # contempt left out
    assert metrics["classes_the_model_lacks"] == ["contempt"] and metrics["classes_the_data_lacks"] == ["neutral"]
    assert metrics["faces_left_out"] == {"contempt": 3}
    ferplus = run_eval(tmp_path, "data=ckplus", "pretrained=ferplus", f"paths.data_dir={tmp_path / 'ck'}")
    assert ferplus["num_samples"] == 21 and ferplus["classes_the_data_lacks"] == ["neutral"]


def test_evaluate_shipped_model_on_ckplus_original_frames(tmp_path):
    root = tmp_path / "ckplus"
    write_ckplus_original(root, {"S010": {"001": 5}, "S011": {"001": 1}}, frames=4)
    metrics = run_eval(tmp_path, "data=ckplus", "pretrained=fer2013", f"paths.data_dir={root}")
    assert metrics["num_samples"] == 8 and metrics["classes_the_model_lacks"] == ["contempt"]
    assert metrics["classes_the_data_lacks"] == [] and metrics["faces_left_out"] == {}


def cli(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "FER_LOG_DIR": str(cwd / "logs"), **(env or {})},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_cross_dataset_table(tmp_path):
    write_ck48(tmp_path / "ck", subjects=3, per_class=1)
    write_jaffe(tmp_path / "jaffe", posers=("KA", "KL"))
    out = tmp_path / "table"
    cli(
        "-m",
        "fer_lightning.cross_dataset",
        "models=[fer2013,ferplus]",
        "datasets=[ckplus,jaffe:all]",
        f"hydra.run.dir={out}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
        env={"CKPLUS_DIR": str(tmp_path / "ck"), "JAFFE_DIR": str(tmp_path / "jaffe")},
    )
    rows = pd.read_csv(out / "cross_dataset.csv")
    assert list(zip(rows["model"], rows["dataset"])) == [
        ("fer2013", "ckplus"),
        ("fer2013", "jaffe"),
        ("ferplus", "ckplus"),
        ("ferplus", "jaffe"),
    ]
    for _, row in rows.iterrows():  # each cell is the evaluate report beside it
        report = json.loads((out / f"{row['model']}__{row['dataset']}" / "metrics.json").read_text())
        assert row["acc"] == pytest.approx(report["all/acc"]) and row["faces"] == report["num_samples"]
    assert rows.set_index(["model", "dataset"]).loc[("fer2013", "jaffe"), "faces"] == 14
    markdown = (out / "cross_dataset.md").read_text()
    assert "### Accuracy" in markdown and "| fer2013 |" in markdown and "the model lacks contempt" in markdown


@pytest.mark.slow
def test_fold_multirun_and_its_mean_and_std(tmp_path):
    write_ck48(tmp_path / "ck", subjects=6, per_class=1)
    sweep = tmp_path / "sweep"
    cli(
        str(ROOT / "train.py"),
        "--multirun",
        "data=ckplus",
        f"paths.data_dir={tmp_path / 'ck'}",
        "data.folds=3",
        "data.fold=range(3)",
        "trainer.max_epochs=1",
        "data.batch_size=8",
        "callbacks.progress_bar=null",
        "++trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
    )
    table, _ = leaderboard(sweep)
    assert sorted(table["data.fold"]) == ["0", "1", "2"]
    compare_main([str(sweep)])
    folds = pd.read_csv(sweep / "folds.csv")
    assert len(folds) == 1 and folds.loc[0, "folds"] == 3
    assert folds.loc[0, "test/acc mean"] == pytest.approx(table["test/acc"].mean())
    assert folds.loc[0, "test/acc std"] == pytest.approx(table["test/acc"].std(ddof=1))
    assert "+-" in (sweep / "folds.md").read_text()


def test_larger_faces_train_and_evaluate_at_their_side(make_cfg, tmp_path):
    from tests.helpers.datasets import write_rafdb_list

    write_rafdb_list(tmp_path / "raf", train=70, test=14)
    data = ["data=rafdb", f"paths.data_dir={tmp_path / 'raf'}", "data.source.image_size=64"]
    train(make_cfg(*data, "model=compact", "trainer.max_epochs=1", "data.batch_size=16"))
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    checkpoint = torch.load(report["ckpt_path"], weights_only=False)
    assert checkpoint["hyper_parameters"]["input_size"] == 64
    scored = run_eval(tmp_path, *data, f"ckpt_path={report['ckpt_path']}", "split=test")
    assert scored["input_sizes"] == [64] and scored["test/acc"] == pytest.approx(report["test/acc"], abs=1e-6)


def test_colour_faces_train_evaluate_and_are_refused_by_export(make_cfg, tmp_path):
    from fer_lightning.data.rafdb import RAFDBSource
    from fer_lightning.export import export
    from tests.helpers.datasets import write_rafdb_list

    write_rafdb_list(tmp_path / "raf", train=70, test=14)
    colour = RAFDBSource(tmp_path / "raf", channels=3, cache_dir=tmp_path / "c").load()["train"]
    gray = RAFDBSource(tmp_path / "raf", cache_dir=tmp_path / "c").load()["train"]
    assert colour.images.shape == (70, 3, 48, 48) and colour.channels == 3 and gray.images.shape == (70, 48, 48)
    luma = (colour.images.float() * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1)
    assert (luma - gray.images.float()).abs().max() <= 2  # the same faces (JPEG-decoded grey copies of one face)
    data = ["data=rafdb", f"paths.data_dir={tmp_path / 'raf'}", "data.source.channels=3"]
    train(make_cfg(*data, "model=compact", "model.in_channels=3", "trainer.max_epochs=1", "data.batch_size=16"))
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    scored = run_eval(tmp_path, *data, f"ckpt_path={report['ckpt_path']}", "split=test", "tta=flip")
    assert 0 <= scored["test/acc"] <= 1
    assert run_eval(tmp_path, *data, f"ckpt_path={report['ckpt_path']}", "split=test", run="e2")["test/acc"] == (
        pytest.approx(report["test/acc"], abs=1e-6)
    )
    with pytest.raises(ValueError, match="3-channel faces; the exported models"):
        export(report["ckpt_path"], "onnx", tmp_path / "m.onnx")
