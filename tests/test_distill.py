"""Distillation from a teacher table: the table (fer_lightning.distill), its cache and checks, the mixed targets,
and a student that trains and resumes exactly with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException

import fer_lightning.distill as distill_module
from fer_lightning.deploy.pretrained import pretrained_path
from fer_lightning.distill import distill
from fer_lightning.evaluate import OnnxModel, ensemble_logits, load_model
from fer_lightning.evaluation.tta import average_views
from fer_lightning.labels import FERPLUS_EMOTIONS
from fer_lightning.train import train
from fer_lightning.training.soft_targets import SoftTargets, distilled_targets
from tests.conftest import TINY_DATA, compose_config
from tests.helpers.deploy import perturbed_checkpoint, tiny_checkpoint
from tests.test_ferplus import write_pixels, write_votes


def make_table(tmp_path: Path, *overrides: str, run: str = "distill") -> Path:
    cfg = compose_config(["data=synthetic", *TINY_DATA, *overrides], tmp_path / run, config_name="distill")
    return distill(cfg)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> list[Path]:
    return [tiny_checkpoint(tmp_path_factory), perturbed_checkpoint(tmp_path_factory)]


def test_table_is_the_teachers_mean_over_the_training_faces(tmp_path, teachers):
    path = make_table(tmp_path, f"teachers=[{teachers[0]},{teachers[1]}]", "tta=flip")
    table = SoftTargets.load(path)
    cfg = compose_config(["data=synthetic", *TINY_DATA], tmp_path / "x")
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    models = [load_model(p, torch.device("cpu")) for p in teachers]
    images = datamodule.splits["train"].images
    expected = average_views(ensemble_logits(models, [48, 48], images, "flip", 40, 512, torch.device("cpu")))
    assert table.probs.shape == (448, 7) and torch.allclose(table.probs, expected, atol=1e-6)
    assert table.teachers == tuple(map(str, teachers)) and table.tta == "flip"
    summary = json.loads((tmp_path / "distill" / "teachers.json").read_text())
    val = datamodule.splits["val"]
    val_expected = average_views(ensemble_logits(models, [48, 48], val.images, "flip", 40, 512, torch.device("cpu")))
    assert summary["val/acc"] == pytest.approx(float((val_expected.argmax(1) == val.labels).float().mean()))


def test_table_is_cached_by_teachers_tta_and_faces(tmp_path, teachers, monkeypatch):
    calls = []
    real = distill_module.teacher_probs
    monkeypatch.setattr(distill_module, "teacher_probs", lambda *a: calls.append(len(a[2])) or real(*a))
    first = make_table(tmp_path, f"teachers=[{teachers[0]}]", "tta=none", run="a")
    assert calls == [448, 112]  # the training faces, then the validation faces
    second = make_table(tmp_path, f"teachers=[{teachers[0]}]", "tta=none", run="b")
    assert calls == [448, 112, 112]  # the table came from the cache
    assert torch.equal(SoftTargets.load(first).probs, SoftTargets.load(second).probs)
    make_table(tmp_path, f"teachers=[{teachers[0]}]", "tta=flip", run="c")
    make_table(tmp_path, f"teachers=[{teachers[0]}]", "tta=none", "data.source.seed=5", run="d")
    assert calls[3::2] == [448, 448]  # another TTA, other faces: made again


def test_teacher_of_other_classes_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"teacher .*ferplus.onnx predicts \['neutral', 'happiness'.*data's classes"):
        make_table(tmp_path, "teachers=[ferplus]", "tta=none")


def test_ferplus_teacher_on_ferplus_data(tmp_path):
    usages = ["Training"] * 30 + ["PublicTest"] * 10
    write_pixels(tmp_path / "fp" / "fer2013.csv", usages)
    write_votes(tmp_path / "fp" / "fer2013new.csv", usages)
    cfg = compose_config(
        ["data=ferplus", f"paths.data_dir={tmp_path / 'fp'}", "teachers=[ferplus]", "tta=none"],
        tmp_path / "distill",
        config_name="distill",
    )
    table = SoftTargets.load(distill(cfg))
    assert table.class_names == FERPLUS_EMOTIONS and table.probs.shape[1] == 8
    assert torch.allclose(table.probs.sum(1), torch.ones(len(table.probs)), atol=1e-5)
    onnx = OnnxModel(pretrained_path("ferplus"))
    assert onnx.class_names == FERPLUS_EMOTIONS  # the same order: the columns were not moved


def test_distilled_targets_mix():
    hard = torch.tensor([[0.0, 1.0, 0.0]])
    teacher = torch.tensor([[0.6, 0.3, 0.1]])
    assert torch.allclose(distilled_targets(hard, teacher, 1.0, 1.0), teacher)
    assert torch.allclose(distilled_targets(hard, teacher, 0.0, 1.0), hard)
    soft = teacher.sqrt() / teacher.sqrt().sum()
    assert torch.allclose(distilled_targets(hard, teacher, 0.5, 2.0), 0.5 * soft + 0.5 * hard)


def student(tmp_path: Path, table: Path, *extra: str, run: str) -> dict:
    cfg = compose_config(
        [
            *TINY_DATA,
            "callbacks.progress_bar=null",
            "++trainer.enable_progress_bar=false",
            "model=cnn3",
            f"module.distill.targets={table}",
            "module.distill.alpha=0.7",
            "module.distill.temperature=2",
            *extra,
        ],
        tmp_path / run,
    )
    return train(cfg)


def test_student_trains_on_the_table_and_resumes_exactly(tmp_path, teachers):
    table = make_table(tmp_path, f"teachers=[{teachers[0]}]", "tta=none")
    full = student(tmp_path, table, "trainer.max_epochs=2", "module.mixup_alpha=0.2", run="full")
    student(tmp_path, table, "trainer.max_epochs=1", "module.mixup_alpha=0.2", "test=false", run="half")
    last = tmp_path / "half" / "checkpoints" / "last.ckpt"
    resumed = student(tmp_path, table, "trainer.max_epochs=2", "module.mixup_alpha=0.2", f"ckpt_path={last}", run="res")
    assert resumed["train/loss"] == full["train/loss"]
    weights = [torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=False) for r in ("full", "res")]
    assert all(torch.equal(v, weights[1]["state_dict"][k]) for k, v in weights[0]["state_dict"].items())
    hparams = weights[0]["hyper_parameters"]
    assert hparams["distill"]["teachers"] == [str(teachers[0])] and hparams["distill"]["alpha"] == 0.7
    plain = train(
        compose_config(
            [
                *TINY_DATA,
                "callbacks.progress_bar=null",
                "++trainer.enable_progress_bar=false",
                "model=cnn3",
                "trainer.max_epochs=2",
                "module.mixup_alpha=0.2",
            ],
            tmp_path / "plain",
        )
    )
    assert plain["train/loss"] != pytest.approx(full["train/loss"], rel=1e-3)  # the table changed the targets


def test_table_of_other_faces_is_refused(tmp_path, teachers):
    table = make_table(tmp_path, f"teachers=[{teachers[0]}]", "tta=none")
    with pytest.raises(ValueError, match=r"made for another training split \(448 faces"):
        student(tmp_path, table, "trainer.max_epochs=1", "data.source.seed=3", run="other")
    with pytest.raises(InstantiationException, match="two teachers: choose one"):
        student(tmp_path, table, "trainer.max_epochs=1", "module.self_distillation=0.5", run="both")


def test_student_recipe_is_cpu_speedrun_without_label_smoothing_and_needs_a_table(tmp_path):
    """experiment=distill_fer2013: the cpu_speedrun recipe, label smoothing off, and no default table."""
    from omegaconf.errors import InterpolationResolutionError

    student = compose_config(["experiment=distill_fer2013", "module.distill.targets=t.npz"], tmp_path / "s")
    speedrun = compose_config(["experiment=cpu_speedrun"], tmp_path / "r")
    assert (student.module.label_smoothing, speedrun.module.label_smoothing) == (0.0, 0.3)
    assert (student.module.distill.alpha, student.model, student.data) == (0.7, speedrun.model, speedrun.data)
    with pytest.raises(InterpolationResolutionError, match="give module.distill.targets="):
        _ = compose_config(["experiment=distill_fer2013"], tmp_path / "m").module.distill.targets


def test_capture_student_is_the_student_with_framing_and_lighting_drawn_per_face(tmp_path):
    """experiment=distill_fer2013_capture: distill_fer2013 but for the augmentations that imitate other datasets."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    overrides = ["module.distill.targets=t.npz"]
    capture = compose_config(["experiment=distill_fer2013_capture", *overrides], tmp_path)
    student = compose_config(["experiment=distill_fer2013", *overrides], tmp_path)
    assert (capture.module, capture.model, capture.trainer) == (student.module, student.model, student.trainer)
    changed = OmegaConf.to_container(capture.data.augment)
    plain = OmegaConf.to_container(student.data.augment)
    assert {k for k in changed if changed[k] != plain[k]} == {"zoom", "aspect", "appearance"}
    assert (changed["zoom"], changed["aspect"], plain["appearance"]) == (0.15, 0.1, None)
    appearance = instantiate(capture.data.augment.appearance)
    assert appearance.active and (appearance.contrast, appearance.blur, appearance.jpeg) == (0.3, 0.2, 0.3)


def test_ferplus_student_is_ferplus_speedrun_on_the_votes_with_a_table(tmp_path):
    """experiment=distill_ferplus: today's speedrun on the vote distribution, 8 classes, and no default table."""
    from omegaconf.errors import InterpolationResolutionError

    student = compose_config(["experiment=distill_ferplus", "module.distill.targets=t.npz"], tmp_path / "s")
    speedrun = compose_config(["experiment=cpu_speedrun"], tmp_path / "r")
    assert (student.data.source.mode, student.model.num_classes, student.module.label_smoothing) == (
        "crossentropy",
        8,
        0.0,
    )
    assert student.model.stem == speedrun.model.stem and student.callbacks.progressive_resizing is not None
    assert student.module.distill.alpha == 0.7
    with pytest.raises(InterpolationResolutionError, match="give module.distill.targets="):
        _ = compose_config(["experiment=distill_ferplus"], tmp_path / "m").module.distill.targets


def test_export_names_the_teachers_and_their_teachers(tmp_path, teachers):
    import onnx

    from fer_lightning.export import export
    from fer_lightning.training.lineage import sha256_prefix

    first_table = make_table(tmp_path, f"teachers=[{teachers[0]}]", "tta=none", run="table1")
    student(tmp_path, first_table, "trainer.max_epochs=1", "test=false", run="student1")
    first = tmp_path / "student1" / "checkpoints" / "last.ckpt"
    second_table = make_table(tmp_path, f"teachers=[{first},{teachers[1]}]", "tta=flip", run="table2")
    student(tmp_path, second_table, "trainer.max_epochs=1", "test=false", run="student2")
    second = tmp_path / "student2" / "checkpoints" / "last.ckpt"

    meta = {p.key: p.value for p in onnx.load(str(export(second, "onnx", tmp_path / "s2.onnx"))).metadata_props}
    tree = json.loads(meta["distilled_from"])
    assert tree["table"] == "table2/soft_targets.npz" and tree["tta"] == "flip"
    assert [t["model"] for t in tree["teachers"]] == ["student1/last.ckpt", f"{teachers[1].parent.name}/perturbed.ckpt"]
    assert tree["teachers"][0]["sha256"] == sha256_prefix(first) != tree["teachers"][1]["sha256"]
    grand = tree["teachers"][0]["distilled_from"]
    assert grand["table"] == "table1/soft_targets.npz" and grand["tta"] == "none"
    assert grand["teachers"] == [{"model": "run/last.ckpt", "sha256": sha256_prefix(teachers[0])}]
    assert "distilled_from" not in tree["teachers"][1]  # a plainly trained teacher

    first.rename(first.with_suffix(".moved"))  # a teacher gone from disk is named, not guessed
    meta = {p.key: p.value for p in onnx.load(str(export(second, "onnx", tmp_path / "s2b.onnx"))).metadata_props}
    assert json.loads(meta["distilled_from"])["teachers"][0] == {"model": "student1/last.ckpt", "found": False}
    plain = {p.key for p in onnx.load(str(export(teachers[0], "onnx", tmp_path / "t.onnx"))).metadata_props}
    assert "distilled_from" not in plain
