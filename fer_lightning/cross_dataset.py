"""Score several models on several datasets: ``python -m fer_lightning.cross_dataset models=[fer2013,ferplus,
runs/a/checkpoints/last.ckpt] datasets=[fer2013:val,ckplus,jaffe]``.

Every (model, dataset) pair is one ``fer_lightning.evaluate`` run (the same code, the same report, in
``<run dir>/<model>__<dataset>/``), scored over the classes the model and the data share
(``fer_lightning.evaluation.vocabulary``). The run dir gets ``cross_dataset.md`` (accuracy and macro-F1, a
model x dataset table each) and ``cross_dataset.csv`` (one row per pair, with the faces scored and the classes
each side lacks). A dataset is a data config name, optionally with the split to score: ``fer2013:val``; without
one, ``split`` applies (``auto``: every face of CK+ and JAFFE for a shipped model, else the test split).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import hydra
import pandas as pd
from hydra import compose
from omegaconf import DictConfig, OmegaConf

from fer_lightning import resolvers
from fer_lightning.atomic import atomic_write
from fer_lightning.cli_errors import short_errors
from fer_lightning.conf import CONF_DIR
from fer_lightning.deploy.pretrained import PRETRAINED
from fer_lightning.evaluate import evaluate

log = logging.getLogger("fer_lightning")


def model_override(model: str) -> str:
    return f"pretrained={model}" if model in PRETRAINED else f"ckpt_path='{Path(model).expanduser().absolute()}'"


def model_label(model: str) -> str:
    """A table row's name: the shipped name, else the file's folder and name (``cpu_run/last.ckpt``)."""
    if model in PRETRAINED:
        return model
    path = Path(model)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def dataset_and_split(entry: str, default: str) -> tuple[str, str]:
    name, _, split = entry.partition(":")
    return name, split or default


def score_pairs(cfg: DictConfig) -> pd.DataFrame:
    """One row per (model, dataset): evaluate's figures and where its report is."""
    out = Path(cfg.paths.output_dir)
    shared = [f"{key}={cfg[key]}" for key in ("tta", "tta_crop", "batch_size", "device", "seed")]
    shared += [f"paths.{key}='{cfg.paths[key]}'" for key in ("cache_dir", "log_dir")]
    if cfg.paths.get("data_dir") is not None:
        shared.append(f"paths.data_dir='{cfg.paths.data_dir}'")
    rows = []
    for model in cfg.models:
        for entry in cfg.datasets:
            dataset, split = dataset_and_split(str(entry), cfg.split)
            where = out / re.sub(r"[^\w.+-]+", "_", f"{model_label(str(model))}__{dataset}")
            overrides = [f"data={dataset}", f"split={split}", model_override(str(model)), *shared, *cfg.eval]
            overrides.append(f"paths.output_dir='{where}'")
            log.info("%s on %s (%s)", model, dataset, split)
            metrics = evaluate(compose("eval", overrides=overrides))
            scored = metrics["split"]
            rows.append(
                {
                    "model": model_label(str(model)),
                    "dataset": dataset,
                    "split": scored,
                    "faces": metrics["num_samples"],
                    "acc": metrics[f"{scored}/acc"],
                    "macro_f1": metrics[f"{scored}/f1_macro"],
                    "ece": metrics[f"{scored}/ece"],
                    "classes_the_model_lacks": " ".join(metrics.get("classes_the_model_lacks", [])),
                    "classes_the_data_lacks": " ".join(metrics.get("classes_the_data_lacks", [])),
                    "faces_left_out": sum(metrics.get("faces_left_out", {}).values()),
                    "report": str(where),
                }
            )
    return pd.DataFrame(rows)


def tables_markdown(rows: pd.DataFrame) -> str:
    """Accuracy and macro-F1 as model x dataset tables (rows and columns in the order asked for)."""
    parts = []
    for metric, title in (("acc", "Accuracy"), ("macro_f1", "Macro-F1")):
        table = rows.pivot(index="model", columns="dataset", values=metric)
        table = table.loc[rows["model"].unique(), rows["dataset"].unique()]
        shown = table.map(lambda v: f"{100 * v:.2f}%")
        parts.append(f"### {title}\n\n{shown.to_markdown()}")
    faces = rows.drop_duplicates("dataset").set_index("dataset")
    notes = [f"- {d}: {r['split']} split, {r['faces']} faces scored" for d, r in faces.iterrows()]
    for _, row in rows.iterrows():
        lacks = (
            [f"the model lacks {row['classes_the_model_lacks']} ({row['faces_left_out']} faces left out)"]
            if row["classes_the_model_lacks"]
            else []
        )
        lacks += [f"the data lacks {row['classes_the_data_lacks']}"] if row["classes_the_data_lacks"] else []
        if lacks:
            notes.append(f"- {row['model']} on {row['dataset']}: {'; '.join(lacks)}")
    return "\n\n".join([*parts, "\n".join(notes)]) + "\n"


def cross_dataset(cfg: DictConfig) -> pd.DataFrame:
    if not cfg.models or not cfg.datasets:
        raise ValueError("give models=[...] (shipped names, checkpoints, ONNX files) and datasets=[...] (data configs)")
    rows = score_pairs(cfg)
    out = Path(cfg.paths.output_dir)
    with atomic_write(out / "cross_dataset.csv") as tmp:
        rows.to_csv(tmp, index=False)
    markdown = tables_markdown(rows)
    with atomic_write(out / "cross_dataset.md") as tmp:
        tmp.write_text(markdown)
    log.info("cross-dataset table in %s\n%s", out, markdown)
    return rows


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="cross_dataset")
def _hydra_main(cfg: DictConfig) -> None:
    with short_errors():
        OmegaConf.resolve(cfg)
        cross_dataset(cfg)


def main() -> None:
    resolvers.register()
    _hydra_main()


if __name__ == "__main__":
    main()
