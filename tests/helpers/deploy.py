"""Shared by the evaluate / predict / export tests: sample photos and one tiny checkpoint per test session.

Training even a tiny model takes seconds on this machine, so the checkpoint (and its ONNX export) are made once
per pytest process and handed to every module's fixtures, not once per module.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import matplotlib
import pytest
import torch

from tests.conftest import TINY_DATA, compose_config

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"  # 512x600, one face
# Inside the scikit-image wheel itself (not fetched with pooch); only its path is used, skimage is not imported.
ASTRONAUT = Path(find_spec("skimage").submodule_search_locations[0]) / "data" / "astronaut.png"
# Where OpenCV's frontal-face cascade finds Grace Hopper's face: centre and side, in pixels (RetinaFace: the same
# centre within 5 px, a 176x221 box).
GRACE_FACE_CENTRE, GRACE_FACE_SIDE = (265, 215), 231
RECORD_KEYS = {"source", "frame", "time_s", "status", "face", "box", "emotion", "confidence", "probs", "error"}
RECORD_KEYS |= {"detector", "detector_score", "track_id", "smoothed_emotion", "smoothed_probs"}

_made: dict[str, Path] = {}


def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``last.ckpt`` of a one-epoch run on tiny synthetic data (the model is near chance: only plumbing matters)."""
    if "ckpt" not in _made:
        from fer_lightning.train import train

        out = tmp_path_factory.mktemp("deploy") / "run"
        overrides = ["debug=limit", "trainer.max_epochs=1", "test=false", "callbacks.progress_bar=null"]
        train(compose_config([*TINY_DATA, "++trainer.enable_progress_bar=false", *overrides], out))
        _made["ckpt"] = out / "checkpoints" / "last.ckpt"
    return _made["ckpt"]


def perturbed_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, different model for ensembles: the tiny checkpoint with noise added to every weight."""
    if "perturbed" not in _made:
        checkpoint = torch.load(tiny_checkpoint(tmp_path_factory), weights_only=True, map_location="cpu")
        generator = torch.Generator().manual_seed(0)
        for name, value in checkpoint["state_dict"].items():
            if value.is_floating_point() and name.startswith("net."):
                value.add_(0.05 * torch.randn(value.shape, generator=generator))
        path = tmp_path_factory.mktemp("perturbed") / "perturbed.ckpt"
        torch.save(checkpoint, path)
        _made["perturbed"] = path
    return _made["perturbed"]


def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "onnx" not in _made:
        from fer_lightning.export import export

        _made["onnx"] = export(
            tiny_checkpoint(tmp_path_factory), "onnx", tmp_path_factory.mktemp("onnx") / "model.onnx"
        )
    return _made["onnx"]


def check_record(record: dict, class_names: list[str]) -> None:
    """Every record has every key of the documented schema, with the documented types."""
    assert set(record) == RECORD_KEYS
    assert isinstance(record["source"], str) and record["status"] in ("ok", "no_face", "error")
    assert record["frame"] is None or isinstance(record["frame"], int)
    assert record["time_s"] is None or isinstance(record["time_s"], float)
    if record["status"] == "ok":
        assert isinstance(record["face"], int) and record["error"] is None
        assert len(record["box"]) == 4 and all(isinstance(v, int) for v in record["box"])
        assert list(record["probs"]) == class_names
        assert sum(record["probs"].values()) == pytest.approx(1.0, abs=1e-4)
        assert record["emotion"] == max(record["probs"], key=record["probs"].get)
        assert record["confidence"] == pytest.approx(max(record["probs"].values()))
        assert record["detector"] in ("retinaface", "haar", "none")
        assert (record["detector_score"] is None) == (record["detector"] != "retinaface")
        assert record["detector_score"] is None or 0 < record["detector_score"] <= 1
        if record["frame"] is None:  # a photo: never tracked nor smoothed
            assert record["track_id"] is record["smoothed_emotion"] is record["smoothed_probs"] is None
        else:
            assert isinstance(record["track_id"], int) and list(record["smoothed_probs"]) == class_names
            assert sum(record["smoothed_probs"].values()) == pytest.approx(1.0, abs=1e-4)
            assert record["smoothed_emotion"] == max(record["smoothed_probs"], key=record["smoothed_probs"].get)
    else:
        assert record["face"] is record["box"] is record["emotion"] is record["probs"] is record["confidence"] is None
        assert record["detector_score"] is None
        assert (record["error"] is None) == (record["status"] == "no_face")
