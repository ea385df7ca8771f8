"""See what the model sees: a grid of augmented training samples per class, as a PNG.

``python -m fer_lightning.data.preview [data=fer2013] [data.augment.rotation=20 ...]`` writes
``augmented_samples.png`` into its run dir, ``logs/preview/runs/<timestamp>/`` (conf/preview.yaml); it takes the
same data options as ``train.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from matplotlib.figure import Figure
from omegaconf import DictConfig

from fer_lightning import resolvers
from fer_lightning.cli_errors import short_errors
from fer_lightning.conf import CONF_DIR
from fer_lightning.data.datamodule import FERDataModule
from fer_lightning.data.splits import as_batch

log = logging.getLogger("fer_lightning.data")


def save_augmented_grid(datamodule: FERDataModule, path: str | Path, per_class: int = 8, seed: int = 0) -> Path:
    """One row per class: ``per_class`` training images, each through the training augmentation."""
    datamodule.setup("fit")
    train = datamodule.splits["train"]
    generator = torch.Generator().manual_seed(seed)
    names = datamodule.class_names
    fig = Figure(figsize=(per_class * 0.9, len(names) * 1.0))
    axes = fig.subplots(len(names), per_class, squeeze=False)
    for row, name in enumerate(names):
        members = torch.nonzero(train.labels == row).flatten()
        chosen = members[torch.randperm(len(members), generator=generator)[:per_class]]
        images = datamodule.augment(as_batch(train.images[chosen]), generator)
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(images):
                face = images[col].clamp(0, 255).permute(1, 2, 0).numpy() / 255
                ax.imshow(face[..., 0] if face.shape[2] == 1 else face, cmap="gray", vmin=0, vmax=1)
        axes[row][0].set_title(f"{name} ({len(members)})", fontsize=7, loc="left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="preview")
def _hydra_main(cfg: DictConfig) -> None:
    with short_errors():
        path = save_augmented_grid(instantiate(cfg.data), Path(cfg.paths.output_dir) / "augmented_samples.png")
    log.info("augmented samples written to %s", path.resolve())


def main() -> None:
    resolvers.register()
    _hydra_main()


if __name__ == "__main__":
    main()
