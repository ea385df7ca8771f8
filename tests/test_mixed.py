"""data=mixed: several datasets in one vocabulary, member weights, FER+ soft targets inside a mix, and the
scores per member in training, testing and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from fer_lightning.data.batching import ShardedBatchSampler
from fer_lightning.evaluate import evaluate
from fer_lightning.labels import CANONICAL, EMOTIONS, canonical
from fer_lightning.train import train
from tests.conftest import compose_config
from tests.helpers.datasets import write_ck48, write_rafdb_list
from tests.test_ferplus import write_pixels, write_votes


def tiny_fer2013(root: Path) -> Path:
    usages = ["Training"] * 42 + ["PublicTest"] * 14 + ["PrivateTest"] * 14
    write_pixels(root / "fer2013.csv", usages)
    return root


@pytest.fixture
def copies(tmp_path) -> dict[str, Path]:
    write_ck48(tmp_path / "ck", subjects=6, per_class=1)
    write_rafdb_list(tmp_path / "raf", train=70, test=7)
    return {"fer2013": tiny_fer2013(tmp_path / "fer"), "rafdb": tmp_path / "raf", "ckplus": tmp_path / "ck"}


def mixed(copies: dict[str, Path], *extra: str) -> list[str]:
    overrides = ["data=mixed", "~data.source.members.affectnet", "+data@data.source.members.ckplus=ckplus"]
    overrides += [f"data.source.members.{name}.source.root={root}" for name, root in copies.items()]
    return [*overrides, "data.source.members.ckplus.folds=3", *extra]


def test_members_share_one_vocabulary_and_keep_their_splits(make_cfg, copies):
    datamodule = instantiate(make_cfg(*mixed(copies), tiny=False).data)
    datamodule.setup("fit")
    assert datamodule.class_names == CANONICAL  # FER-2013 and RAF-DB's 7 plus CK+'s contempt, in shared order
    assert datamodule.source_names == ("fer2013", "rafdb", "ckplus")
    members = datamodule.source.members
    for role in ("train", "val", "test"):
        split = datamodule.splits[role]
        counts = torch.bincount(split.origins, minlength=3).tolist()
        assert counts == [len(m.splits[role]) for m in members.values()]
        for origin, member in enumerate(members.values()):
            mine = split.subset(torch.nonzero(split.origins == origin).flatten())
            assert mine.images.equal(member.splits[role].images)
            names = [CANONICAL[i] for i in mine.labels.tolist()]
            assert names == [canonical(member.class_names[i]) for i in member.splits[role].labels.tolist()]
    assert len(datamodule.splits["val"]) == 14 + 7 + 7 * 2  # PublicTest, 10% of RAF-DB train, one CK+ fold


def test_classes_restrict_the_mix(make_cfg, copies):
    cfg = make_cfg(*mixed(copies, "data.source.classes=[happy,sad]"), tiny=False)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert datamodule.class_names == ("happiness", "sadness")
    fer = datamodule.splits["test"].origins == 0
    assert int(fer.sum()) == sum(1 for k in range(56, 70) if EMOTIONS[k % 7] in ("happy", "sad"))


def test_member_weights_scale_how_often_they_are_drawn(make_cfg, copies):
    cfg = make_cfg(*mixed(copies, "+data.source.weights.rafdb=4"), tiny=False)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    weights = datamodule._draw_weights()
    origins = datamodule.splits["train"].origins
    assert weights.tolist() == [4.0 if o == 1 else 1.0 for o in origins.tolist()]
    sampler = ShardedBatchSampler(len(origins), 8, shuffle=True, drop_last=False, weights=weights)
    drawn = []
    for epoch in range(200):
        sampler.set_epoch(epoch)
        drawn += torch.cat(list(sampler)).tolist()
    share = (origins[torch.tensor(drawn)] == 1).float().mean().item()
    n = torch.bincount(origins).tolist()
    assert share == pytest.approx(4 * n[1] / (n[0] + 4 * n[1] + n[2]), abs=0.01)
    sampler.set_epoch(3)
    again = torch.cat(list(sampler))
    sampler.set_epoch(3)
    assert again.equal(torch.cat(list(sampler)))  # a function of (seed, epoch): exact resume
    assert instantiate(make_cfg(*mixed(copies), tiny=False).data).setup("fit") is None


def test_unknown_weight_and_different_sizes_are_errors(make_cfg, copies):
    with pytest.raises(InstantiationException, match=r"weights names \['jaffe'\], which are not members"):
        instantiate(make_cfg(*mixed(copies, "+data.source.weights.jaffe=2"), tiny=False).data)
    datamodule = instantiate(
        make_cfg(*mixed(copies, "data.source.members.rafdb.source.image_size=64"), tiny=False).data
    )
    with pytest.raises(ValueError, match=r"one size .*'rafdb': \(64, 64\)"):
        datamodule.setup("fit")


def test_ferplus_soft_targets_inside_a_mix(make_cfg, tmp_path, copies):
    usages = ["Training"] * 30 + ["PublicTest"] * 10
    write_pixels(tmp_path / "fp" / "fer2013.csv", usages)
    write_votes(tmp_path / "fp" / "fer2013new.csv", usages)
    overrides = [
        "data=mixed",
        "~data.source.members.affectnet",
        "~data.source.members.fer2013",
        "+data@data.source.members.ferplus=ferplus",
        f"data.source.members.ferplus.source.root={tmp_path / 'fp'}",
        "data.source.members.ferplus.source.mode=crossentropy",
        f"data.source.members.rafdb.source.root={copies['rafdb']}",
    ]
    datamodule = instantiate(make_cfg(*overrides, tiny=False).data)
    datamodule.setup("fit")
    assert datamodule.label_mode == "crossentropy" and datamodule.class_names == CANONICAL
    train_split = datamodule.splits["train"]
    assert train_split.targets.shape == (len(train_split), 8)
    assert torch.allclose(train_split.targets.sum(1), torch.ones(len(train_split)))
    assert datamodule.source_names == ("rafdb", "ferplus")
    raf = train_split.origins == 0
    assert torch.equal(train_split.targets[raf].argmax(1), train_split.labels[raf])
    assert torch.equal(train_split.targets[raf].max(1).values, torch.ones(int(raf.sum())))
    member = datamodule.source.members["ferplus"].splits["train"]
    order = [CANONICAL.index(canonical(c)) for c in datamodule.source.members["ferplus"].class_names]
    assert torch.allclose(train_split.targets[~raf][:, order], member.targets / member.targets.sum(1, keepdim=True))


def test_training_and_evaluate_report_every_member(make_cfg, tmp_path, copies):
    cfg = make_cfg(*mixed(copies, "trainer.max_epochs=1", "model=cnn3", "data.batch_size=16"), tiny=False)
    metrics = train(cfg)
    assert {"val/acc/fer2013", "val/acc/rafdb", "val/acc/ckplus"} <= set(metrics)
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    faces = {m: report[f"test/faces/{m}"] for m in ("fer2013", "rafdb", "ckplus")}
    assert faces == {"fer2013": 14, "rafdb": 7, "ckplus": 14}
    overall = sum(report[f"test/acc/{m}"] * n for m, n in faces.items()) / sum(faces.values())
    assert report["test/acc"] == pytest.approx(overall, abs=1e-6)
    eval_cfg = compose_config(
        [*mixed(copies), f"ckpt_path={report['ckpt_path']}", "split=test"], tmp_path / "eval", config_name="eval"
    )
    scored = evaluate(eval_cfg)
    for member in faces:
        assert scored[f"test/acc/{member}"] == pytest.approx(report[f"test/acc/{member}"], abs=1e-6)
