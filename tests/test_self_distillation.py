"""Self-distillation (PS-KD): the targets it builds, where it keeps the network's predictions, what it refuses."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fer_lightning.deploy.checkpoint import load_classifier
from fer_lightning.train import build, train
from fer_lightning.training.module import FERClassifier


def distilling_module(make_cfg, faces: int = 4, epoch: int = 5, max_epochs: int = 10) -> FERClassifier:
    """A module as training leaves it after setup: ``faces`` training faces, at ``epoch`` of ``max_epochs``."""
    module = build(make_cfg("model=logreg", "module.self_distillation=0.8"))[1]
    module._trainer = SimpleNamespace(current_epoch=epoch, max_epochs=max_epochs, world_size=1)
    module.past_probs = torch.zeros(faces, len(module.class_names))
    return module


def test_targets_mix_the_label_with_the_previous_epochs_prediction(make_cfg):
    module = distilling_module(make_cfg)
    labels, index = torch.tensor([0, 3]), torch.tensor([2, 0])
    one_hot = F.one_hot(labels, 7).float()
    earlier = torch.randn(2, 7)
    assert torch.equal(module._self_distilled_targets(earlier, labels, index), one_hot), "no prediction yet: labels"
    assert torch.allclose(module.past_probs[index], earlier.softmax(-1))
    assert module.past_probs[[1, 3]].eq(0).all(), "faces not in the batch keep what they had"

    targets = module._self_distilled_targets(torch.randn(2, 7), labels, index)
    weight = 0.8 * 5 / 10
    assert torch.allclose(targets, (1 - weight) * one_hot + weight * earlier.softmax(-1))
    assert torch.allclose(targets.sum(-1), torch.ones(2))


def test_first_epoch_trains_on_the_labels_alone(make_cfg):
    module = distilling_module(make_cfg, epoch=0)
    module.past_probs.fill_(1 / 7)
    labels = torch.tensor([1, 6])
    targets = module._self_distilled_targets(torch.randn(2, 7), labels, torch.tensor([0, 1]))
    assert torch.equal(targets, F.one_hot(labels, 7).float())


def test_training_keeps_every_faces_prediction_in_the_checkpoint_not_the_model(make_cfg, tmp_path):
    train(make_cfg("module.self_distillation=0.8", "trainer.max_epochs=2", "test=false", run="sd"))
    checkpoint = torch.load(tmp_path / "sd" / "checkpoints" / "last.ckpt", weights_only=True)
    probs = checkpoint["self_distillation_probs"]
    assert probs.shape == (448, 7), "one row per training face (448 = 7 full batches of 64: every face seen)"
    assert torch.allclose(probs.sum(-1), torch.ones(448))
    assert not any("past_probs" in key for key in checkpoint["state_dict"])
    deployed = load_classifier(tmp_path / "sd" / "checkpoints" / "last.ckpt")
    assert deployed.past_probs is None, "a deployed model carries no training-run state"


def test_resume_restores_the_predictions_and_refuses_other_data(make_cfg):
    module = distilling_module(make_cfg, faces=3)
    saved = torch.rand(3, 7)
    module.on_load_checkpoint({"self_distillation_probs": saved})
    assert torch.equal(module.past_probs, saved)
    with pytest.raises(ValueError, match=r"predictions for \(5, 7\).*has \(3, 7\)"):
        module.on_load_checkpoint({"self_distillation_probs": torch.rand(5, 7)})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["module.self_distillation=1.5"], r"weight in \[0, 1\], got 1.5"),
        (["module.self_distillation=0.8", "module.mixup_alpha=0.2"], "cannot be combined with mixup"),
    ],
)
def test_refuses_bad_settings(make_cfg, overrides, message):
    cfg = make_cfg(*overrides)
    with pytest.raises(ValueError, match=message):
        FERClassifier(
            net=cfg.model,
            optimizer=cfg.optimizer,
            mixup_alpha=cfg.module.mixup_alpha,
            self_distillation=cfg.module.self_distillation,
        )


@pytest.mark.parametrize(
    ("label_mode", "max_epochs", "message"),
    [("crossentropy", 10, "needs hard labels, but the data gives 'crossentropy'"), ("majority", -1, "max_epochs")],
)
def test_setup_refuses_soft_labels_and_open_ended_training(make_cfg, label_mode, max_epochs, message):
    module = distilling_module(make_cfg)
    datamodule = SimpleNamespace(input_mean_std=(0.0, 255.0), label_mode=label_mode)
    module._trainer = SimpleNamespace(datamodule=datamodule, max_epochs=max_epochs)
    with pytest.raises(ValueError, match=message):
        module.setup("fit")
