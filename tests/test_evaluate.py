"""fer_lightning.evaluate on the real eval config: reports, calibration, TTA and ensembles of tiny checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from fer_lightning.deploy.checkpoint import load_classifier, model_input_size
from fer_lightning.evaluate import evaluate
from fer_lightning.evaluation.calibration import expected_calibration_error, fit_temperature
from fer_lightning.evaluation.tta import average_views, five_crops, tta_views, view_logits
from fer_lightning.labels import EMOTIONS
from tests.conftest import TINY_DATA, compose_config
from tests.helpers.deploy import perturbed_checkpoint, tiny_checkpoint

REPORT_FILES = (
    "metrics.json",
    "classification_report.md",
    "classification_report.csv",
    "confusion_matrix.png",
    "predictions.csv",
    "reliability_diagram.png",
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


# Small splits: every TTA view of every image goes through the model on the CPU, and evaluation needs no
# training images (each split is drawn from its own seed, so the others do not change with train_size).
SMALL_EVAL = [*TINY_DATA, "data.source.train_size=7", "data.source.val_size=35", "data.source.test_size=35"]


@pytest.fixture
def no_plots(monkeypatch):
    """Skip drawing the two PNGs (seconds each on a busy CPU) where a test is about something else; the first
    test checks they are written. The ECE is still computed."""
    monkeypatch.setattr("fer_lightning.evaluation.report.plot_confusion", lambda *args, **kwargs: None)
    monkeypatch.setattr(
        "fer_lightning.evaluate.plot_reliability",
        lambda probs, labels, path, n_bins, title="": expected_calibration_error(probs, labels, n_bins),
    )


def run_eval(out: Path, *overrides: str) -> dict:
    return evaluate(compose_config([*SMALL_EVAL, *overrides], out, config_name="eval"))


def probs_of(out: Path) -> torch.Tensor:
    predictions = pd.read_csv(out / "predictions.csv")
    return torch.tensor(predictions[[f"p_{name}" for name in EMOTIONS]].to_numpy(), dtype=torch.float32)


def test_writes_the_training_report_plus_calibration(ckpt, tmp_path):
    metrics = run_eval(tmp_path, f"ckpt_path='{ckpt}'")
    for name in REPORT_FILES:
        assert (tmp_path / name).is_file(), name
    assert metrics == json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["tta"] == "none" and metrics["tta_views"] == 1
    assert metrics["ckpt_paths"] == [str(ckpt)] and metrics["ensemble_size"] == 1
    assert metrics["input_sizes"] == [48] and metrics["ece_bins"] == 15
    assert metrics["num_samples"] == 35 and 0.0 <= metrics["test/acc"] <= 1.0
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    expected_ece = MulticlassCalibrationError(num_classes=7, n_bins=15)(
        probs_of(tmp_path), torch.tensor(predictions["true"])
    )
    assert metrics["test/ece"] == pytest.approx(float(expected_ece), abs=1e-5)


def test_tencrop_on_the_validation_split_is_recorded(ckpt, tmp_path, no_plots):
    metrics = run_eval(tmp_path, f"ckpt_path='{ckpt}'", "tta=tencrop", "split=val")
    assert metrics["tta"] == "tencrop" and metrics["tta_views"] == 10 and metrics["tta_crop"] == 40
    assert metrics["split"] == "val" and "val/acc" in metrics and 0.0 <= metrics["val/ece"] <= 1.0
    probs = probs_of(tmp_path)
    assert probs.sum(1) == pytest.approx(torch.ones(len(probs)), abs=1e-4)


def test_ensemble_averages_its_members(ckpt, tmp_path, tmp_path_factory, no_plots):
    other = perturbed_checkpoint(tmp_path_factory)
    metrics = run_eval(tmp_path, f"ckpt_path=['{ckpt}','{other}']", "tta=flip")
    assert metrics["ensemble_size"] == 2 and metrics["ckpt_paths"] == [str(ckpt), str(other)]
    assert metrics["tta"] == "flip" and metrics["tta_views"] == 2 and metrics["tta_crop"] is None
    from fer_lightning.data.synthetic import SyntheticSource

    images = SyntheticSource(train_size=7, val_size=7, test_size=35, seed=0).load()["PrivateTest"].images
    members = [
        average_views(view_logits(load_classifier(p), images.unsqueeze(1).float(), "flip", 48)) for p in (ckpt, other)
    ]
    assert not torch.allclose(members[0], members[1], atol=1e-4), "the members must differ for the test to mean much"
    assert probs_of(tmp_path) == pytest.approx((members[0] + members[1]) / 2, abs=1e-5)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        run_eval(tmp_path, f"ckpt_path='{tmp_path / 'nowhere.ckpt'}'")


def test_bad_tta_and_split_are_refused(ckpt, tmp_path):
    with pytest.raises(ValueError, match="tta='twelve'"):
        run_eval(tmp_path, f"ckpt_path='{ckpt}'", "tta=twelve")
    with pytest.raises(ValueError, match="split='train'"):
        run_eval(tmp_path, f"ckpt_path='{ckpt}'", "split=train")


def test_tencrop_views_for_48_and_40_pixel_models():
    images = torch.arange(2 * 48 * 48, dtype=torch.float32).view(2, 1, 48, 48)
    crops = five_crops(images, 40)
    assert torch.equal(crops[0], images[..., :40, :40]) and torch.equal(crops[3], images[..., 8:, 8:])
    assert torch.equal(crops[4], images[..., 4:44, 4:44])
    as_trained = tta_views(images, "tencrop", input_size=40, crop=40)
    assert len(as_trained) == 10 and torch.equal(as_trained[4], crops[4])
    assert torch.equal(as_trained[9], crops[4].flip(-1))
    resized = tta_views(images, "tencrop", input_size=48, crop=40)
    assert all(view.shape == (2, 1, 48, 48) for view in resized)
    flip = tta_views(images, "flip", input_size=48)
    assert torch.equal(flip[0], images) and torch.equal(flip[1], images.flip(-1))
    assert torch.equal(tta_views(images, "none", input_size=40)[0], crops[4]), "a 40 px model sees the centre crop"


def test_every_checkpoint_saves_its_input_size(ckpt):
    model = load_classifier(ckpt)
    assert model.hparams["input_size"] == 48 and model_input_size(model) == 48
    model.hparams.pop("input_size")  # a checkpoint from before input_size was saved
    model.hparams["net"]["image_size"] = 40
    assert model_input_size(model) == 40


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    """Labels drawn from softmax(z / 2) are best explained at T = 2, within the grid's 1 % spacing; a view with
    T far off has a worse likelihood (the search minimises what it says)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 20000, 7, generator=generator) * 4
    labels = torch.multinomial((logits[0] / 2).softmax(-1), 1, generator=generator)[:, 0]
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.04)
    # Two views (a face and its mirror image) are fitted through their average, not view by view.
    views = torch.stack([logits[0], logits[0] + torch.randn(20000, 7, generator=generator)])
    fitted = fit_temperature(views, labels)
    nll = [float(-average_views(views, t).log()[torch.arange(20000), labels].mean()) for t in (fitted, 2 * fitted)]
    assert nll[0] < nll[1]


def test_fit_temperature_reports_both_eces_and_keeps_the_predictions(ckpt, tmp_path, no_plots):
    plain = run_eval(tmp_path / "plain", f"ckpt_path={ckpt}", "split=val", "tta=flip")
    fitted = run_eval(tmp_path / "fitted", f"ckpt_path={ckpt}", "split=val", "tta=flip", "fit_temperature=true")
    temperature = fitted["val/temperature"]
    assert temperature != 1.0 and fitted["temperature_fitted_on"] == "val"
    assert fitted["val/ece_at_temperature_1"] == pytest.approx(plain["val/ece"], abs=1e-6)
    assert fitted["val/ece"] < plain["val/ece"]
    assert fitted["val/acc"] == plain["val/acc"]  # one scalar for all logits: the same class wins each view
    again = run_eval(tmp_path / "again", f"ckpt_path={ckpt}", "split=val", "tta=flip", f"temperature={temperature}")
    assert again["val/ece"] == pytest.approx(fitted["val/ece"], abs=1e-6)
    with pytest.raises(ValueError, match="temperature=0.0 must be > 0"):
        run_eval(tmp_path / "zero", f"ckpt_path={ckpt}", "split=val", "temperature=0")
