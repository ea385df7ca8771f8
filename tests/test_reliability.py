"""Issue 12: no silent wrong result, no lost file, a short clear message for every expected error.

Each test is named after the numbered item it covers. Hydra's commands run in-process here (their refusals come
before any training), so no test pays for a second Python start with torch and Lightning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from fer_lightning import compare
from fer_lightning.cli_errors import describe, short_errors
from fer_lightning.data.fer2013 import FER2013DataError, FER2013Source
from fer_lightning.deploy.checkpoint import load_classifier
from fer_lightning.deploy.recognizer import EmotionRecognizer, OnnxBackend
from fer_lightning.deploy.records import RecordWriter
from fer_lightning.export import export
from fer_lightning.export import main as export_main
from fer_lightning.predict import main as predict_main
from fer_lightning.predict import parse_args
from fer_lightning.train import build, train
from fer_lightning.training import run_status
from fer_lightning.training.callbacks import TrainingDiverged
from tests.conftest import CONF, compose_config
from tests.helpers.deploy import GRACE_HOPPER, tiny_checkpoint

PIXEL_ROW = " ".join(["7"] * 2304)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def nan_ckpt(ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint with one weight set to NaN: what a diverged run saves."""
    checkpoint = torch.load(ckpt, weights_only=True, map_location="cpu")
    name = next(k for k, v in checkpoint["state_dict"].items() if k.startswith("net.") and v.is_floating_point())
    checkpoint["state_dict"][name].view(-1)[0] = float("nan")
    path = tmp_path_factory.mktemp("nan") / "nan.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.jpg"
    with Image.open(GRACE_HOPPER) as image:
        image.resize((128, 150)).save(path)
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def hydra_command(monkeypatch, main, *argv: str) -> SystemExit:
    """A Hydra command in-process, as ``python train.py *argv``; returns how it exited."""
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    GlobalHydra.instance().clear()
    return exit_info.value


def strict_json(line: str) -> dict:
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    return json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in JSON output: {line}"))


# ---- 1. lost or corrupted user files: fer-predict --output, fer-export --output --------------------------------
def test_1_predict_never_writes_onto_an_input_and_refuses_an_existing_output(ckpt, photo, tmp_path, capsys):
    before = photo.read_bytes()
    for force in ([], ["--force"]):
        assert predict_main([str(photo), "--ckpt", str(ckpt), "--output", str(photo), *force]) == 2
        assert "one of the inputs" in capsys.readouterr().err and photo.read_bytes() == before
    folder_input = tmp_path / "photos"
    folder_input.mkdir()
    (folder_input / "b.png").write_bytes(before)
    assert (
        predict_main([str(folder_input), "--ckpt", str(ckpt), "--output", str(folder_input / "b.png"), "--force"]) == 2
    )
    assert (folder_input / "b.png").read_bytes() == before, "a file found inside an input folder is an input too"

    existing = tmp_path / "records.jsonl"
    existing.write_text("precious\n")
    assert predict_main([str(photo), "--ckpt", str(ckpt), "--output", str(existing)]) == 2
    err = capsys.readouterr().err
    assert str(existing) in err and "--force" in err and existing.read_text() == "precious\n"
    assert predict_main([str(photo), "--ckpt", str(ckpt), "--output", str(existing), "--force", "--device", "cpu"]) == 0
    assert strict_json(existing.read_text().splitlines()[0])["source"] == str(photo)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temporary file left behind"


def test_1_export_never_writes_onto_its_checkpoint(ckpt, tmp_path, capsys):
    copy = tmp_path / "model.ckpt"
    copy.write_bytes(ckpt.read_bytes())
    assert export_main(["--ckpt", str(copy), "--format", "onnx", "--output", str(copy), "--force"]) == 1
    assert "one of the inputs" in capsys.readouterr().err and copy.read_bytes() == ckpt.read_bytes()


# ---- 2. / 3. a run or a sweep into an existing directory changes nothing there -------------------------------
def earlier_run(run: Path) -> Path:
    for name, text in {
        ".hydra/config.yaml": "seed: 0\n",
        ".hydra/hydra.yaml": "hydra: {}\n",
        ".hydra/overrides.yaml": "- seed=0\n",
        "train.log": "earlier log\n",
        "status.json": '{"status": "completed"}\n',
        "metrics.csv": "epoch,val/acc\n0,0.5\n",
        "checkpoints/last.ckpt": "weights",
    }.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    return run


def test_2_single_run_into_an_existing_run_dir_changes_nothing(monkeypatch, tmp_path, capsys):
    from fer_lightning.train import main

    run = earlier_run(tmp_path / "old")
    before = snapshot(run)
    exit_info = hydra_command(monkeypatch, main, "debug=fdr", f"hydra.run.dir={run}")
    assert exit_info.code not in (0, None) and "already holds files" in str(exit_info.code)
    assert str(run) in str(exit_info.code)
    assert snapshot(run) == before


def test_3_multirun_into_an_existing_sweep_dir_changes_nothing(monkeypatch, tmp_path):
    from fer_lightning.train import main

    sweep = tmp_path / "sweep"
    earlier_run(sweep / "0")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    before = snapshot(sweep)
    exit_info = hydra_command(monkeypatch, main, "-m", "seed=0,1", "debug=fdr", f"hydra.sweep.dir={sweep}")
    assert exit_info.code not in (0, None) and "hydra.sweep.dir" in str(exit_info.code)
    assert snapshot(sweep) == before
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "multirun.yaml"]


def test_2_an_empty_or_new_run_dir_is_fine(monkeypatch, tmp_path):
    from omegaconf import OmegaConf

    from fer_lightning.run_dirs import KeepEarlierRuns

    def config(directory: Path):
        return OmegaConf.create({"hydra": {"run": {"dir": str(directory)}, "sweep": {"dir": str(directory)}}})

    (tmp_path / "empty").mkdir()
    for directory in (tmp_path / "empty", tmp_path / "new"):
        KeepEarlierRuns().on_run_start(config(directory))
        KeepEarlierRuns().on_multirun_start(config(directory))
    (tmp_path / "empty" / "x").write_text("")
    with pytest.raises(SystemExit):
        KeepEarlierRuns().on_run_start(config(tmp_path / "empty"))
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP worker that Lightning starts into its rank 0's run dir
    KeepEarlierRuns().on_run_start(config(tmp_path / "empty"))


# ---- 4. divergence ---------------------------------------------------------------------------------------------
def test_4_divergence_stops_at_the_first_nan_loss_and_fails_the_run(make_cfg, tmp_path, capsys):
    cfg = make_cfg("optimizer.lr=1e6", "trainer.max_epochs=2", run="single")
    with pytest.raises(SystemExit) as exit_info, short_errors():
        run_status.run_recorded(cfg, train)
    assert exit_info.value.code == 1
    assert "training diverged: train/loss was nan" in capsys.readouterr().err
    status = json.loads((tmp_path / "single" / "status.json").read_text())
    assert status["status"] == "failed" and "TrainingDiverged" in status["error"]
    history = tmp_path / "single" / "metrics.csv"
    assert not history.exists() or "val/acc" not in pd.read_csv(history), "no epoch was validated"
    assert not list((tmp_path / "single").glob("checkpoints/*.ckpt")), "no checkpoint of NaN weights"

    table, _ = compare.leaderboard(tmp_path)
    assert list(table["status"]) == ["failed"] and "diverged" in table["error"][0]


def test_4_a_diverged_sweep_job_returns_nan(make_cfg, monkeypatch):
    monkeypatch.setattr(run_status, "is_multirun", lambda: True)
    value = run_status.run_recorded(make_cfg("optimizer.lr=1e6", "trainer.max_epochs=2", "test=false"), train)
    assert math.isnan(value)


def test_4_max_bad_steps_is_configurable(make_cfg):
    cfg = make_cfg("optimizer.lr=1e6", "trainer.max_epochs=1", "callbacks.nonfinite_loss.max_bad_steps=3")
    with pytest.raises(TrainingDiverged, match="3 non-finite losses|weights are no longer finite"):
        train(cfg)


# ---- 5. non-finite weights and outputs -------------------------------------------------------------------------
def test_5_nan_weights_are_refused_at_load_and_export(nan_ckpt, tmp_path, capsys):
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_classifier(nan_ckpt)
    for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.pt")):
        assert export_main(["--ckpt", str(nan_ckpt), "--format", fmt, "--output", str(tmp_path / name)]) == 1
        assert "NaN" in capsys.readouterr().err and not (tmp_path / name).exists()
    assert predict_main([str(GRACE_HOPPER), "--ckpt", str(nan_ckpt), "--output", str(tmp_path / "r.jsonl")]) == 2
    assert "NaN" in capsys.readouterr().err and not (tmp_path / "r.jsonl").exists()


def log_onnx(path: Path, weight: float = 1.0) -> Path:
    """A 7-class ONNX model of softmax(log(pixels) @ W): finite for a grey face, NaN for a black one (log 0)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((2304, 7), weight, np.float32) * np.arange(1, 8, dtype=np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 2304], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["pixels", "shape"], ["flat"]),
        helper.make_node("Log", ["flat"], ["logs"]),
        helper.make_node("MatMul", ["logs", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "log",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)],
        [w, shape],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_5_an_onnx_model_with_nan_weights_or_outputs_is_refused_and_json_stays_json(tmp_path, capsys):
    with pytest.raises(ValueError, match="NaN or infinite"):
        OnnxBackend(log_onnx(tmp_path / "nan.onnx", weight=float("nan")))
    model = log_onnx(tmp_path / "log.onnx")
    recognizer = EmotionRecognizer.from_onnx(model, detector="none")
    assert np.isfinite(recognizer.classify(np.full((2, 48, 48), 128, np.uint8))).all()
    with pytest.raises(ValueError, match="NaN or infinite"):
        recognizer.classify(np.zeros((1, 48, 48), np.uint8))
    black = tmp_path / "black.png"
    Image.new("L", (48, 48), 0).save(black)
    assert predict_main([str(black), "--model", str(model), "--detector", "none"]) == 2
    captured = capsys.readouterr()
    for line in captured.out.splitlines():
        strict_json(line)
    assert "NaN" in captured.err
    writer = RecordWriter(open(os.devnull, "w"), "jsonl", ["a"])
    with pytest.raises(ValueError):
        writer.write({"confidence": float("nan")})


# ---- 6. a truncated video ---------------------------------------------------------------------------------------
def test_6_a_truncated_video_is_reported(ckpt, tmp_path, capsys):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(30):
        writer.write(np.full((48, 64, 3), 8 * i, np.uint8))
    writer.release()
    data = video.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    args = ["--ckpt", str(ckpt), "--detector", "none", "--device", "cpu"]
    assert predict_main([str(video), *args, "--output", str(tmp_path / "full.jsonl")]) == 0
    assert len((tmp_path / "full.jsonl").read_text().splitlines()) == 30
    assert predict_main([str(tmp_path / "cut.avi"), *args, "--output", str(tmp_path / "cut.jsonl")]) == 1
    records = [strict_json(line) for line in (tmp_path / "cut.jsonl").read_text().splitlines()]
    assert records[-1]["status"] == "error" and "of its 30 frames" in records[-1]["error"]
    assert all(r["status"] == "ok" for r in records[:-1]), "the frames before the break are still reported"
    assert "of its 30 frames" in capsys.readouterr().err
    everything = [str(video), *args, "--max-frames", "5", "--output", str(tmp_path / "five.jsonl")]
    assert predict_main(everything) == 0, "stopping at --max-frames is no truncation"


# ---- 7. a file that is not a checkpoint --------------------------------------------------------------------------
def test_7_a_random_file_as_ckpt_is_named_and_never_gets_weights_only_false_advice(tmp_path, capsys):
    files = {"random.ckpt": os.urandom(3000), "text.ckpt": b"hello\n", "empty.ckpt": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled_object.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other_project.ckpt")
    for name in [*files, "pickled_object.ckpt", "other_project.ckpt"]:
        with pytest.raises(ValueError) as error:
            load_classifier(tmp_path / name)
        assert f"{name} is not a checkpoint of this project" in str(error.value)
        assert "weights_only" not in str(error.value) and "Weights only" not in str(error.value)
    assert predict_main([str(GRACE_HOPPER), "--ckpt", str(tmp_path / "random.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "random.ckpt is not a checkpoint of this project" in err and "weights_only" not in err


# ---- 8. arguments validated up front ------------------------------------------------------------------------------
def test_8_export_names_the_output_it_cannot_write(ckpt, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    targets = [blocker / "x.onnx"] + ([Path("/proc/x.onnx")] if Path("/proc").is_dir() else [])
    for target in targets:
        assert export_main(["--ckpt", str(ckpt), "--format", "onnx", "--output", str(target)]) == 1
        err = capsys.readouterr().err
        assert f"cannot write {target}" in err and ".tmp" not in err and "Traceback" not in err
    assert export_main(["--ckpt", str(ckpt), "--format", "onnx", "--output", str(tmp_path)]) == 1
    assert "is a directory" in capsys.readouterr().err
    assert (
        export_main(["--ckpt", str(ckpt), "--format", "onnx", "--output", str(tmp_path / "m.onnx"), "--opset", "0"])
        == 1
    )
    assert "--opset 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value"), [("--max-side", "0"), ("--max-side", "-5"), ("--margin", "-0.1"), ("--every", "0")]
)
def test_8_predict_rejects_bad_options_before_any_input(option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["photo.jpg", option, value])
    assert exit_info.value.code == 2 and option in capsys.readouterr().err


def test_8_predict_annotate_onto_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    with pytest.raises(SystemExit):
        parse_args(["photo.jpg", "--annotate", str(tmp_path / "f")])
    assert "is a file" in capsys.readouterr().err


# ---- 9. data errors: one line, the traceback in the log ----------------------------------------------------------
def test_9_a_data_error_is_one_line_and_the_traceback_goes_to_the_log(make_cfg, tmp_path, monkeypatch, capsys):
    root = tmp_path / "fer2013"
    root.mkdir()
    rows = [f"{i % 7},{PIXEL_ROW},Training" for i in range(20)] + [f"3,{PIXEL_ROW} 7,Training"]
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    cfg = make_cfg("data=fer2013", f"paths.data_dir={root}", "debug=fdr", run="bad")
    log_file = logging.FileHandler(tmp_path / "run.log")
    logging.getLogger().addHandler(log_file)
    try:
        with pytest.raises(SystemExit) as exit_info, short_errors():
            run_status.run_recorded(cfg, train)
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"error: {root / 'fer2013.csv'}: line 22: 2305 pixel values, expected 2304" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2
    assert "Traceback" in (tmp_path / "run.log").read_text() and "HYDRA_FULL_ERROR=1" in err

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(FER2013DataError), short_errors():
        run_status.run_recorded(make_cfg("data=fer2013", f"paths.data_dir={root}", "debug=fdr", run="b2"), train)


def test_9_config_errors_from_instantiate_are_unwrapped(make_cfg):
    with pytest.raises(Exception) as error:
        build(make_cfg("data.normalize=bogus"))
    assert (
        describe(error.value)
        == "data.normalize must be one of ('unit', 'symmetric', 'dataset'), got 'bogus' (config: data)"
    )
    with pytest.raises(RuntimeError), short_errors():  # a bug, not a user error: Hydra's usual report
        raise RuntimeError("bug")


# ---- 11. outputs that match what they claim ----------------------------------------------------------------------
def test_11_metrics_json_epoch_is_the_tested_checkpoints_epoch(make_cfg, tmp_path):
    train(make_cfg("debug=limit", "trainer.limit_train_batches=2"))  # 2 epochs: before the fix, "epoch": 2
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())
    name = Path(best["ckpt_path"]).name
    assert name == f"epoch_{best['epoch']:03d}.ckpt"
    assert torch.load(best["ckpt_path"], weights_only=True, mmap=True)["epoch"] == best["epoch"]


def test_11_exports_and_caches_get_normal_file_modes(ckpt, tmp_path):
    old = os.umask(0o022)
    try:
        model = export(ckpt, "torchscript", tmp_path / "model.pt")
        root = tmp_path / "fer2013"
        root.mkdir()
        rows = [f"{i % 7},{PIXEL_ROW},Training" for i in range(7)]
        (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
        FER2013Source(str(root), cache_dir=str(tmp_path / "cache")).load()
    finally:
        os.umask(old)
    (cache,) = (tmp_path / "cache").glob("*.npz")
    for path in (model, cache):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_11_preview_has_its_own_task_dir_and_compare_skips_other_commands(tmp_path):
    cfg = compose_config(["data.source.train_size=7"], tmp_path / "p", config_name="preview")
    assert cfg.task_name == "preview"
    from hydra import compose, initialize_config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        hydra_cfg = compose("preview", return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert "/preview/runs/" in hydra_cfg.hydra.run.dir
    for name, task in (("train_run", "train"), ("eval_run", "eval"), ("preview_run", "preview")):
        (tmp_path / "logs" / name / ".hydra").mkdir(parents=True)
        (tmp_path / "logs" / name / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task_name": task}))
    assert [p.name for p in compare.find_runs(tmp_path / "logs")] == ["train_run"]


def test_11_curve_legend_names_overrides_without_a_dot(tmp_path):
    for i, (optimizer, seed) in enumerate((("adam", "0"), ("sgd", "1"))):
        run = tmp_path / str(i)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"optimizer={optimizer}", f"seed={seed}"]))
        pd.DataFrame({"epoch": [0, 1], "val/acc": [0.2, 0.3 + i / 10]}).to_csv(run / "metrics.csv", index=False)
    table, curves = compare.leaderboard(tmp_path)
    figure = compare.plot_curves(table, curves, tmp_path / "curves.png")
    labels = sorted(text.get_text() for text in figure.axes[0].get_legend().get_texts())
    assert labels == ["0 optimizer=adam seed=0", "1 optimizer=sgd seed=1"]


def test_11_help_lists_hydra_launcher(monkeypatch, capsys):
    from fer_lightning.train import main

    assert hydra_command(monkeypatch, main, "--help").code in (0, None)
    help_text = capsys.readouterr().out
    assert "hydra/launcher: basic, slurm" in help_text and "model: cnn3" in help_text


def test_4_on_an_accelerator_the_loss_is_read_one_step_later_and_the_bad_step_is_named():
    from types import SimpleNamespace

    from fer_lightning.training.callbacks import StopOnNonFiniteLoss

    strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision)
    trainer = SimpleNamespace(strategy=strategy, current_epoch=0, global_step=0, state=SimpleNamespace(fn="fit"))
    callback = StopOnNonFiniteLoss(read_later=True)
    for batch, loss in enumerate([1.0, 0.5, float("nan")]):
        trainer.global_step = batch + 1
        callback.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, batch)
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 0, batch 2 \(step 3\)"):
        callback.on_validation_start(trainer, torch.nn.Linear(1, 1))  # before validation: the pending step is read
    later = StopOnNonFiniteLoss(read_later=True)
    later.on_train_batch_end(trainer, None, {"loss": torch.tensor(float("inf"))}, None, 0)
    with pytest.raises(TrainingDiverged, match="inf at epoch 0, batch 0"):
        later.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.0)}, None, 1)
