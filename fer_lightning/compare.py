"""Leaderboard of every run under a directory: ``python -m fer_lightning.compare <sweep or logs dir>``.

A run dir is one holding ``config.yaml`` or ``.hydra/``. Each becomes one row: the overrides that differ
between the runs, the best validation scores (metrics.csv), the test scores (metrics.json), epochs, wall time,
parameter count and status. A crashed or unfinished run is a row with its state and whatever it logged, never
an error: the table is meant to be run while a sweep is still going. Written to ``--out`` (default: the
directory itself) as leaderboard.csv, leaderboard.md and val_acc_curves.png. Runs that differ in ``data.fold``
(a cross-validation, ``'data.fold=range(10)'``) are also summarised over their folds, mean +- standard deviation
per setting, in folds.csv and folds.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pandas as pd
import torch
import yaml
from matplotlib.figure import Figure

from fer_lightning.atomic import atomic_write
from fer_lightning.training.run_status import read_status

VAL_SCORES = ("val/acc", "val/f1_macro")  # best over the epochs
TEST_SCORES = ("test/acc", "test/f1_macro", "test/balanced_acc")
CURVES_LABELLED = 10  # the others are drawn, unlabelled, in grey
# Hydra commands whose run dirs are not training runs (conf/eval.yaml, preview.yaml, cross_dataset.yaml)
OTHER_TASKS = ("eval", "preview", "cross_dataset")
FOLD = "data.fold"


def _natural_key(path: Path) -> list[Any]:
    """multiruns/.../10 after .../9."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def find_runs(root: Path) -> list[Path]:
    """Training run dirs under ``root`` (itself included); a run's own subdirs (wandb/, checkpoints/) are not
    searched, and the run dirs of evaluate and the data preview (``task_name`` eval / preview) are no runs."""
    runs = []
    for dirpath, dirnames, filenames in os.walk(root):
        if "config.yaml" in filenames or ".hydra" in dirnames:
            if _read_config(Path(dirpath)).get("task_name") not in OTHER_TASKS:
                runs.append(Path(dirpath))
            dirnames.clear()
        else:
            dirnames.sort()
    return sorted(runs, key=_natural_key)


def read_overrides(run: Path) -> dict[str, str]:
    """``.hydra/overrides.yaml`` as {key: value}; ``+key=v`` counts as ``key``."""
    try:
        items = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        return {}
    overrides = {}
    for item in items:
        key, _, value = str(item).partition("=")
        overrides[key.lstrip("+")] = value
    return overrides


def read_history(run: Path) -> pd.DataFrame:
    """metrics.csv, or an empty frame while a run has not written one (or is writing it)."""
    try:
        return pd.read_csv(run / "metrics.csv")
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return pd.DataFrame()


def val_curve(history: pd.DataFrame, metric: str = "val/acc") -> pd.Series:
    """One value per epoch (the last one logged), indexed by epoch."""
    if metric not in history or "epoch" not in history:
        return pd.Series(dtype=float)
    rows = history.dropna(subset=[metric])
    return rows.groupby("epoch")[metric].last()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_config(run: Path) -> dict[str, Any]:
    """The resolved config.yaml the pipeline writes, else Hydra's (unresolved) copy."""
    for path in (run / "config.yaml", run / ".hydra" / "config.yaml"):
        try:
            config = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(config, dict):
            return config
    return {}


_param_cache: dict[str, float] = {}


def count_parameters(model_config: dict[str, Any] | None) -> float:
    """Trainable parameters of the configured network, built on the meta device: no memory, no checkpoint read.

    Only the config is needed, so runs that failed before saving a checkpoint are counted too; NaN when the
    config cannot build a model here (an interpolation left unresolved, a class that no longer exists).
    """
    if not isinstance(model_config, dict) or "_target_" not in model_config:
        return math.nan
    key = json.dumps(model_config, sort_keys=True, default=str)
    if key not in _param_cache:
        from hydra.utils import instantiate

        try:
            with torch.device("meta"):
                net = instantiate(model_config)
            _param_cache[key] = float(sum(p.numel() for p in net.parameters() if p.requires_grad))
        except Exception:  # a leaderboard shows what it can
            _param_cache[key] = math.nan
    return _param_cache[key]


def infer_status(run: Path) -> str:
    """status.json's word when there is one (runs started by train.py); else a guess from the files."""
    status = read_status(run)
    if status and status.get("status"):
        return str(status["status"])
    return "completed" if (run / "metrics.json").is_file() else "unknown"


def run_row(run: Path, root: Path) -> tuple[dict[str, Any], pd.Series]:
    """One leaderboard row and the run's val/acc curve."""
    history = read_history(run)
    curve = val_curve(history)
    status = read_status(run) or {}
    row: dict[str, Any] = {"run": run.relative_to(root).as_posix() if run != root else ".", "status": infer_status(run)}
    for metric in VAL_SCORES:
        values = val_curve(history, metric)
        row[metric] = float(values.max()) if len(values) else math.nan
    row["best_epoch"] = int(curve.idxmax()) if len(curve) else math.nan
    report = _read_json(run / "metrics.json")
    for metric in TEST_SCORES:
        row[metric] = report.get(metric, math.nan)
    row["epochs"] = len(curve)
    row["wall_time_s"] = status.get("wall_time_s", math.nan)
    row["params"] = count_parameters(_read_config(run).get("model"))
    row["error"] = status.get("error")
    return row, curve


def differing(overrides: Sequence[dict[str, str]]) -> list[str]:
    """Override keys whose value is not the same in every run (absent counts as a value)."""
    keys = sorted({key for run in overrides for key in run})
    return [key for key in keys if len({run.get(key) for run in overrides}) > 1]


def leaderboard(
    root: str | Path, sort: str = "val/acc", ascending: bool = False
) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """The table (sorted, NaN last) and each run's val/acc curve by run name."""
    root = Path(root)
    runs = find_runs(root)
    rows, curves = [], {}
    overrides = [read_overrides(run) for run in runs]
    varying = differing(overrides)
    for run, run_overrides in zip(runs, overrides):
        row, curve = run_row(run, root)
        row = {"run": row.pop("run"), "status": row.pop("status"), **{k: run_overrides.get(k) for k in varying}, **row}
        rows.append(row)
        curves[row["run"]] = curve
    table = pd.DataFrame(rows)
    if table.empty:
        return table, curves
    if not table["error"].notna().any():
        table = table.drop(columns="error")
    if sort not in table:
        raise SystemExit(f"cannot sort by {sort!r}; columns: {list(table.columns)}")
    table = table.sort_values(sort, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)
    for column in ("best_epoch", "epochs", "params"):
        table[column] = table[column].astype("Int64")
    return table, curves


def fold_summary(table: pd.DataFrame) -> pd.DataFrame | None:
    """Mean and sample standard deviation (n - 1) over the folds of every score, one row per setting of the
    other overrides that vary; None when the runs are no cross-validation (no ``data.fold`` column)."""
    if FOLD not in table or table.empty:
        return None
    columns = list(table.columns)
    settings = [c for c in columns[columns.index("status") + 1 : columns.index(VAL_SCORES[0])] if c != FOLD]
    scores = [c for c in (*VAL_SCORES, *TEST_SCORES) if c in table]
    rows = []
    for key, group in table.groupby(settings, dropna=False, sort=False) if settings else [((), table)]:
        row = dict(zip(settings, key if isinstance(key, tuple) else (key,)))
        row["folds"] = int(group[FOLD].nunique())
        for score in scores:
            values = group[score].dropna()
            row[f"{score} mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{score} std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def plot_curves(table: pd.DataFrame, curves: dict[str, pd.Series], path: Path | IO[bytes]) -> Figure:
    """val/acc per epoch for every run; the best ``CURVES_LABELLED`` (table order) in colour with a legend."""
    runs = list(table["run"]) if "run" in table else []
    labelled = runs[:CURVES_LABELLED]
    # The overrides that differ between runs sit between "status" and the first score (see ``leaderboard``):
    # optimizer=adam and seed=1 as much as optimizer.lr=0.01.
    columns = list(table.columns)
    first_score = min((columns.index(c) for c in VAL_SCORES if c in columns), default=len(columns))
    varying = columns[columns.index("status") + 1 : first_score] if "status" in columns else []
    fig = Figure(figsize=(9, 5.5))
    ax = fig.subplots()
    for run in reversed(runs):  # best drawn last, on top
        curve = curves.get(run)
        if curve is None or curve.empty:
            continue
        if run in labelled:
            row = table.loc[table["run"] == run].iloc[0]
            label = " ".join([run, *(f"{k}={row[k]}" for k in varying if row[k] is not None)])
            ax.plot(curve.index, curve.values, marker="o", markersize=3, label=label)
        else:
            ax.plot(curve.index, curve.values, color="0.75", linewidth=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val/acc")
    ax.set_title(f"val/acc per epoch ({len(table)} runs)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    return fig


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """Scores with 4 decimals, seconds with 1, blanks for missing; override values exactly as typed."""
    shown = table.astype(object).where(table.notna(), "")
    for column in table.select_dtypes("float").columns:
        digits = 1 if column == "wall_time_s" else 4
        shown[column] = [f"{value:.{digits}f}" if pd.notna(value) else "" for value in table[column]]
    return shown


def write_leaderboard(table: pd.DataFrame, curves: dict[str, pd.Series], out: Path) -> str:
    """leaderboard.csv, leaderboard.md and val_acc_curves.png in ``out``; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "leaderboard.csv") as tmp:
        table.to_csv(tmp, index=False)
    markdown = _display(table).to_markdown(index=False, disable_numparse=True) if not table.empty else "(no runs)"
    with atomic_write(out / "leaderboard.md") as tmp:
        tmp.write_text(markdown + "\n")
    with atomic_write(out / "val_acc_curves.png") as tmp:
        plot_curves(table, curves, tmp)
    folds = fold_summary(table)
    if folds is not None:
        with atomic_write(out / "folds.csv") as tmp:
            folds.to_csv(tmp, index=False)
        shown = _fold_display(folds).to_markdown(index=False, disable_numparse=True)
        with atomic_write(out / "folds.md") as tmp:
            tmp.write_text(shown + "\n")
        markdown += "\n\nOver the folds (mean +- std):\n\n" + shown
    return markdown


def _fold_display(folds: pd.DataFrame) -> pd.DataFrame:
    """``0.8123 +- 0.0412`` per score; the settings and fold count as they are."""
    shown = folds[[c for c in folds.columns if not c.endswith((" mean", " std"))]].astype(object)
    for column in [c[: -len(" mean")] for c in folds.columns if c.endswith(" mean")]:
        mean, std = folds[f"{column} mean"], folds[f"{column} std"]
        shown[column] = [
            "" if pd.isna(m) else f"{m:.4f}" + ("" if pd.isna(d) else f" +- {d:.4f}") for m, d in zip(mean, std)
        ]
    return shown


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(prog="fer-compare", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a sweep dir, a logs dir, or a single run dir")
    parser.add_argument("--sort", default="val/acc", help="column to sort by, best first (default: val/acc)")
    parser.add_argument("--ascending", action="store_true", help="smallest first (for a loss)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the files (default: DIRECTORY)")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        parser.error(f"{args.directory} is not a directory")
    table, curves = leaderboard(args.directory, sort=args.sort, ascending=args.ascending)
    out = args.out or args.directory
    try:
        print(write_leaderboard(table, curves, out))
    except OSError as error:  # a full disk, a read-only folder: one line, not pandas' traceback
        parser.exit(
            1,
            f"{parser.prog}: cannot write the leaderboard into {out}: {error.strerror or error}; "
            "choose another folder with --out\n",
        )
    print(f"\n{len(table)} runs; written to {out}/leaderboard.{{csv,md}} and {out}/val_acc_curves.png")
    return table


def cli() -> None:
    """``fer-compare``: a console script's return value becomes its exit status, so the table is not returned."""
    main()


if __name__ == "__main__":
    cli()
