"""Evaluate models on a split: ``python -m fer_lightning.evaluate ckpt_path=PATH|pretrained=NAME [split=val]``.

Writes the same report as training (``write_report``) plus calibration (ECE and a reliability diagram) into its
own run directory, ``logs/eval/runs/<timestamp>``. A model is a checkpoint, an ONNX file or a shipped model
(``pretrained=fer2013``); ``ckpt_path=[a.ckpt,b.ckpt]`` evaluates the ensemble that
averages the members' probabilities. The split's tensors are run through the models directly, in batches: no
Trainer, so nothing but the data config and the checkpoints decides the result.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from fer_lightning import resolvers
from fer_lightning.atomic import atomic_write
from fer_lightning.cli_errors import short_errors
from fer_lightning.conf import CONF_DIR
from fer_lightning.data.augment import BatchAugment
from fer_lightning.data.datamodule import FERDataModule
from fer_lightning.data.splits import as_batch
from fer_lightning.deploy.checkpoint import load_classifier, model_input_size, resolve_device
from fer_lightning.deploy.pretrained import pretrained_path
from fer_lightning.deploy.recognizer import OnnxBackend
from fer_lightning.evaluation.calibration import expected_calibration_error, fit_temperature, plot_reliability
from fer_lightning.evaluation.metrics import per_source_scores
from fer_lightning.evaluation.report import table_markdown, write_report
from fer_lightning.evaluation.tta import TTA_MODES, average_views, tta_views, view_logits
from fer_lightning.evaluation.vocabulary import restrict, shared_classes
from fer_lightning.labels import IMAGE_SIZE

log = logging.getLogger("fer_lightning")
SPLITS = ("test", "val", "all")  # all: every face of the data (a model trained elsewhere, scored on a whole dataset)


class OnnxModel(torch.nn.Module):
    """An ONNX model (shipped, or written by fer-export) behind the interface of a checkpoint here: float pixels
    (N, 1, 48, 48) in, log-probabilities out, so TTA and ensembles treat both alike. It crops and normalises
    inside its own graph, hence always 48 px in."""

    input_size = IMAGE_SIZE

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.backend = OnnxBackend(path)
        self.class_names = tuple(self.backend.class_names)
        self.tta = self.backend.tta  # what the graph averages over by itself, before the tta asked for here

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probs = self.backend(images[:, 0].cpu().numpy())
        return torch.from_numpy(probs).to(images.device).clamp_min(1e-12).log()


def load_model(path: Path, device: torch.device) -> torch.nn.Module:
    return OnnxModel(path) if path.suffix == ".onnx" else load_classifier(path, device)


def input_size_of(model: torch.nn.Module) -> int:
    return model.input_size if isinstance(model, OnnxModel) else model_input_size(model)


def model_paths(ckpt_path: str | Sequence[str] | None, pretrained: str | None = None) -> list[Path]:
    """Checkpoints / ONNX files (one or a list), or a shipped model, each checked to exist before any data is
    loaded."""
    if pretrained:
        if ckpt_path:
            raise ValueError("give ckpt_path or pretrained, not both")
        return [pretrained_path(pretrained)]
    if ckpt_path is None or ckpt_path == "":
        raise ValueError(
            "ckpt_path or pretrained is required: ckpt_path=PATH, ckpt_path=[a.ckpt,b.ckpt] or pretrained=fer2013"
        )
    raw = list(ckpt_path) if isinstance(ckpt_path, list | tuple | ListConfig) else [ckpt_path]
    paths = [Path(str(p)).expanduser().absolute() for p in raw]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint file(s) not found: {', '.join(missing)}")
    return paths


def ensemble_logits(
    models: Sequence[torch.nn.Module],
    input_sizes: Sequence[int],
    images: torch.Tensor,
    tta: str,
    tta_crop: int,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Every model's logits on every TTA view of uint8 images (N, H, W): (models x views, N, classes)."""
    views = len(tta_views(as_batch(images[:1]), tta, input_sizes[0], tta_crop))
    step = max(1, batch_size // views)
    per_model = []
    for model, size in zip(models, input_sizes):
        batches = [
            view_logits(model, as_batch(images[start : start + step].to(device)), tta, size, tta_crop).cpu()
            for start in range(0, len(images), step)
        ]
        per_model.append(torch.cat(batches, dim=1))
    return torch.cat(per_model)


def shifted(images: torch.Tensor, change: BatchAugment, seed: int, chunk: int = 1024) -> torch.Tensor:
    """uint8 faces (N, H, W) changed once by ``change`` (the same faces for the same seed), as uint8 again."""
    if change.crop_size:
        raise ValueError("shift: crop_size changes the faces' size; use zoom to frame them tighter")
    generator = torch.Generator().manual_seed(seed)
    out = [change(as_batch(images[i : i + chunk]), generator) for i in range(0, len(images), chunk)]
    return torch.cat(out).round().clamp(0, 255).to(torch.uint8).reshape(images.shape)


def evaluate(cfg: DictConfig) -> dict:
    """Run the evaluation ``cfg`` describes (see conf/eval.yaml); returns what metrics.json holds."""
    paths = model_paths(cfg.get("ckpt_path"), cfg.get("pretrained"))
    if cfg.tta not in TTA_MODES:
        raise ValueError(f"tta={cfg.tta!r} is not one of {', '.join(TTA_MODES)}")
    if cfg.split not in (*SPLITS, "auto"):
        raise ValueError(f"split={cfg.split!r} is not one of auto, {', '.join(SPLITS)}")
    out = Path(cfg.paths.output_dir)
    device = resolve_device(cfg.get("device", "auto"))
    models = [load_model(path, device) for path in paths]
    sizes = [int(cfg.input_size) if cfg.get("input_size") else input_size_of(m) for m in models]
    class_names = list(models[0].class_names)
    for model, path in zip(models[1:], paths[1:]):
        if list(model.class_names) != class_names:
            raise ValueError(f"{path} predicts {list(model.class_names)}, but {paths[0]} predicts {class_names}")

    datamodule: FERDataModule = instantiate(cfg.data)
    datamodule.load()
    cfg = _with_split(cfg, datamodule)
    if cfg.split != "all":
        datamodule.setup("test")
    if cfg.split != "all" and not datamodule.has_split(cfg.split):
        raise ValueError(
            f"the data has no {cfg.split} split (it has {sorted(datamodule.splits)}); split=all takes every face"
        )
    shared = shared_classes(class_names, datamodule.class_names)
    if cfg.get("fit_temperature") and not shared.identical:
        raise ValueError(f"fit_temperature=true needs a model of the data's classes {list(datamodule.class_names)}")
    if cfg.get("explain") and not shared.identical:
        raise ValueError(f"explain=true needs a model of the data's classes {list(datamodule.class_names)}")
    split = datamodule.all_faces() if cfg.split == "all" else datamodule.splits[cfg.split]
    log.info(
        "evaluating %d checkpoint(s) on %d %s images, tta=%s, on %s", len(paths), len(split), cfg.split, cfg.tta, device
    )
    shift = OmegaConf.to_container(cfg.shift) if cfg.get("shift") else None
    images = shifted(split.images, instantiate(cfg.shift), cfg.seed) if shift else split.images
    logits = ensemble_logits(models, sizes, images, cfg.tta, cfg.tta_crop, cfg.batch_size, device)
    temperature, calibration = _temperature(cfg, logits, split.labels)
    probs = average_views(logits, temperature)
    index, labels, names, vocabulary = torch.arange(len(split)), split.labels, class_names, {}
    if not shared.identical:  # another vocabulary: scored over the classes both have (evaluation/vocabulary.py)
        keep, labels, probs = restrict(shared, split.labels, probs)
        index, names = index[keep], list(shared.names)
        left_out = torch.bincount(split.labels[~keep], minlength=len(datamodule.class_names))
        vocabulary = {
            "scored_classes": names,
            "classes_the_model_lacks": list(shared.model_lacks),
            "classes_the_data_lacks": list(shared.data_lacks),
            "faces_left_out": {c: int(n) for c, n in zip(datamodule.class_names, left_out.tolist()) if n},
        }
        log.info("scored over the classes both have: %s", vocabulary)

    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "config.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    ece = plot_reliability(probs, labels, out / "reliability_diagram.png", cfg.ece_bins, title=cfg.split)
    extra = {
        f"{cfg.split}/ece": ece,
        "ece_bins": cfg.ece_bins,
        "split": cfg.split,
        "ckpt_paths": [str(p) for p in paths],
        "ensemble_size": len(paths),
        "tta": cfg.tta,
        "tta_crop": cfg.tta_crop if cfg.tta == "tencrop" else None,
        "tta_views": len(tta_views(as_batch(split.images[:1]), cfg.tta, sizes[0], cfg.tta_crop)),
        "input_sizes": sizes,
        # An ONNX file exported with --tta flip averages over the mirror image itself, whatever tta says.
        "model_tta": [getattr(model, "tta", "none") for model in models],
        "device": str(device),
        "shift": shift,
        **calibration,
        **vocabulary,
    }
    if split.origins is not None and datamodule.source_names:  # data=mixed: each member's own figures too
        extra.update(per_source_scores(labels, probs, split.origins[index], datamodule.source_names, cfg.split))
    table = write_report(out, labels, probs, index, names, prefix=cfg.split, extra=extra)
    log.info("evaluation report in %s\n%s", out.resolve(), table_markdown(table))
    if cfg.get("explain"):
        from fer_lightning.evaluation.explain import write_explanations

        grid = out / "explanations.png"
        write_explanations(models, sizes, split.images, split.labels, probs, class_names, grid, cfg.explain_per_class)
        log.info("heat maps of right and wrong %s faces per class in %s", cfg.split, grid)
    return json.loads((out / "metrics.json").read_text())


def _temperature(cfg: DictConfig, logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict]:
    """The temperature the probabilities are computed at, and what metrics.json says of it. ``fit_temperature``
    fits it on this split (so the split's ECE is then tuned on it: fit on validation, ship with
    ``fer-export --temperature``), reporting the ECE at ``temperature`` beside it."""
    temperature = float(cfg.get("temperature", 1.0))
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    if not cfg.get("fit_temperature"):
        return temperature, {f"{cfg.split}/temperature": temperature}
    fitted = fit_temperature(logits, labels)
    before = expected_calibration_error(average_views(logits, temperature), labels, cfg.ece_bins)
    log.info("temperature fitted on %s: %.3f (ECE %.4f at temperature %g)", cfg.split, fitted, before, temperature)
    return fitted, {
        f"{cfg.split}/temperature": fitted,
        "temperature_fitted_on": cfg.split,
        f"{cfg.split}/ece_at_temperature_{temperature:g}": before,
    }


def _with_split(cfg: DictConfig, datamodule: FERDataModule) -> DictConfig:
    """``split=auto``: ``all`` for a shipped model (trained on FER-2013 / FER+) on a dataset without official
    splits (CK+, JAFFE: its folds are for training there), else ``test``."""
    if cfg.split != "auto":
        return cfg
    chosen = "all" if cfg.get("pretrained") and list(datamodule.loaded) == ["all"] else "test"
    log.info("split=auto: %s", chosen)
    cfg = cfg.copy()
    cfg.split = chosen
    return cfg


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    with short_errors():  # a bad checkpoint, a missing split: one line, not a traceback
        metrics = evaluate(cfg)
    split = metrics["split"]
    print(f"{split}/acc={metrics[f'{split}/acc']:.4f} {split}/ece={metrics[f'{split}/ece']:.4f}")


def main() -> None:
    resolvers.register()
    _hydra_main()


if __name__ == "__main__":
    main()
