"""Teacher probabilities for distillation: ``python -m fer_lightning.distill data=fer2013
teachers=[a.ckpt,b.ckpt,fer2013] tta=tencrop``.

Runs the teachers (checkpoints, ONNX files or shipped names; their probabilities averaged, each with ``tta``) over
the training split the data options give, once, and writes ``soft_targets.npz`` into the run dir
(``fer_lightning/training/soft_targets.py``), then scores the same ensemble on the validation split
(``teachers.json``): the figure a distilled student is measured against. Train with it:
``python train.py ... module.distill.targets=<run dir>/soft_targets.npz``. The table is cached in
``paths.cache_dir`` under the teachers' files (path, size, mtime), the TTA and the training faces' fingerprint: a
second student with the same teachers reuses it at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from fer_lightning import resolvers
from fer_lightning.atomic import atomic_write
from fer_lightning.cli_errors import short_errors
from fer_lightning.conf import CONF_DIR
from fer_lightning.deploy.checkpoint import resolve_device
from fer_lightning.deploy.pretrained import PRETRAINED, pretrained_path
from fer_lightning.evaluate import ensemble_logits, input_size_of, load_model
from fer_lightning.evaluation.tta import TTA_MODES, average_views
from fer_lightning.labels import canonical
from fer_lightning.training.soft_targets import SoftTargets, fingerprint

log = logging.getLogger("fer_lightning")


def teacher_paths(teachers: list[str]) -> list[Path]:
    paths = [pretrained_path(t) if t in PRETRAINED else Path(t).expanduser().absolute() for t in teachers]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"teacher file(s) not found: {', '.join(missing)}")
    return paths


def reordered(model_classes: list[str], data_classes: tuple[str, ...], path: Path) -> list[int]:
    """Which of a teacher's outputs is each of the data's classes; a teacher of other classes is refused."""
    mine = [canonical(c) for c in model_classes]
    wanted = [canonical(c) for c in data_classes]
    if sorted(mine) != sorted(wanted):
        raise ValueError(f"teacher {path} predicts {model_classes}, but the data's classes are {list(data_classes)}")
    return [mine.index(c) for c in wanted]


def distill(cfg: DictConfig) -> Path:
    """Write the table (and teachers.json) into the run dir; returns the table's path."""
    teachers = list(cfg.teachers) if isinstance(cfg.teachers, list | ListConfig) else [cfg.teachers]
    if not teachers:
        raise ValueError("teachers=[a.ckpt,b.onnx,fer2013]: give at least one teacher")
    if cfg.tta not in TTA_MODES:
        raise ValueError(f"tta={cfg.tta!r} is not one of {', '.join(TTA_MODES)}")
    paths = teacher_paths([str(t) for t in teachers])
    device = resolve_device(cfg.get("device", "auto"))
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    train = datamodule.splits["train"]
    models = [load_model(p, device) for p in paths]
    orders = [reordered(list(m.class_names), datamodule.class_names, p) for m, p in zip(models, paths)]
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths] + [
        cfg.tta,
        cfg.tta_crop,
        fingerprint(train),
    ]
    cached = Path(cfg.paths.cache_dir) / f"soft_targets-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]}.npz"
    table_path = out / "soft_targets.npz"
    if cached.is_file():
        log.info("teacher table from the cache: %s", cached)
        with atomic_write(table_path) as tmp:
            shutil.copyfile(cached, tmp)
        probs = SoftTargets.load(table_path).probs
    else:
        probs = teacher_probs(models, orders, train.images, cfg, device)
        table = SoftTargets(probs, tuple(datamodule.class_names), fingerprint(train), tuple(map(str, paths)), cfg.tta)
        table.save(table_path)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            table.save(cached)
        except OSError as exc:
            log.warning("cannot cache the teacher table in %s (%s)", cached.parent, exc)
    val = datamodule.splits["val"]
    val_probs = teacher_probs(models, orders, val.images, cfg, device)
    summary = {
        "teachers": [str(p) for p in paths],
        "tta": cfg.tta,
        "train_faces": len(train),
        "train_acc": float((probs.argmax(1) == train.labels).float().mean()),
        "val/acc": float((val_probs.argmax(1) == val.labels).float().mean()),
        "val_faces": len(val),
        "soft_targets": str(table_path),
    }
    with atomic_write(out / "teachers.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("teachers: val/acc %.4f on %d faces; table %s", summary["val/acc"], len(val), table_path)
    return table_path


def teacher_probs(models, orders, images: torch.Tensor, cfg: DictConfig, device: torch.device) -> torch.Tensor:
    """The mean of the teachers' TTA-averaged probabilities, each teacher's columns in the data's class order."""
    total = torch.zeros(len(images), len(orders[0]))
    for model, order in zip(models, orders):
        logits = ensemble_logits([model], [input_size_of(model)], images, cfg.tta, cfg.tta_crop, cfg.batch_size, device)
        total += average_views(logits)[:, order]
    return total / len(models)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="distill")
def _hydra_main(cfg: DictConfig) -> None:
    with short_errors():
        path = distill(cfg)
    print(f"module.distill.targets={path}")


def main() -> None:
    resolvers.register()
    _hydra_main()


if __name__ == "__main__":
    main()
