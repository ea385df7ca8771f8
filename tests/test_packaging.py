"""The wheel is the whole product: built, installed into a fresh environment and used from outside the repo, it
trains, evaluates, compares and predicts with the configs and models inside it. One OpenCV build provides cv2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import distributions
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_DATA
from tests.helpers.deploy import ASTRONAUT

pytestmark = pytest.mark.slow  # builds a wheel and trains: about a minute


def test_one_distribution_provides_cv2():
    providers = sorted({d.metadata["Name"] for d in distributions() if any(f.parts[0] == "cv2" for f in d.files or [])})
    assert providers == ["opencv-python-headless"], f"cv2 comes from {providers}: they overwrite each other"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of its sources (so no build/ lands in the clone), without network or isolation."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("fer_lightning", "hydra_plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(root), "."]
    subprocess.run(command, cwd=source, check=True, capture_output=True)
    return next(root.glob("fer_lightning-*.whl"))


def test_the_wheel_holds_configs_and_models_but_no_benchmarks(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "fer_lightning/conf/train.yaml" in names and "fer_lightning/conf/experiment/cpu_speedrun.yaml" in names
    models = {"fer_lightning/deploy/pretrained/fer2013.onnx", "fer_lightning/deploy/detectors/retinaface_mnet025.onnx"}
    assert models <= set(names)
    assert not [n for n in names if n.startswith(("fer_lightning/bench/", "benchmarks/", "tests/", "conf/"))]


def test_installed_wheel_trains_evaluates_compares_and_predicts_outside_the_repo(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # torch and the other dependencies come from this environment (a path line, not its .pth files: the
    # editable install of the clone stays out); the package itself only from the wheel.
    site = Path(
        subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
        .decode()
        .strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run([*pip, "install", "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}

    def run(*command: str) -> str:
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done.stdout

    where = run(str(python), "-c", "import fer_lightning.deploy, fer_lightning; print(fer_lightning.__file__)")
    assert Path(where.strip()).is_relative_to(venv), f"fer_lightning was imported from {where}"
    bin_ = venv / "bin"
    quiet = ["callbacks.progress_bar=null", "++trainer.enable_progress_bar=false", "logger=csv"]
    run(str(bin_ / "fer-train"), *TINY_DATA, *quiet, "trainer.max_epochs=1", "hydra.run.dir=runs/first")
    trained = json.loads((work / "runs" / "first" / "metrics.json").read_text())
    run(str(bin_ / "fer-evaluate"), *TINY_DATA, f"ckpt_path={trained['ckpt_path']}", "hydra.run.dir=runs/eval")
    evaluated = json.loads((work / "runs" / "eval" / "metrics.json").read_text())
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-4)
    assert "first" in run(str(bin_ / "fer-compare"), "runs")
    # A folder of the user's own configs joins the shipped ones.
    (work / "mine" / "experiment").mkdir(parents=True)
    (work / "mine" / "experiment" / "short.yaml").write_text("# @package _global_\ntrainer:\n  max_epochs: 7\n")
    job = run(str(bin_ / "fer-train"), f"hydra.searchpath=[file://{work / 'mine'}]", "experiment=short", "--cfg", "job")
    assert "max_epochs: 7" in job
    records = run(str(bin_ / "fer-predict"), str(ASTRONAUT), "--no-progress")
    assert json.loads(records.splitlines()[0])["emotion"]
