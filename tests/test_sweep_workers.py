"""Several sweepers on one Optuna study (issue 37): a real PostgreSQL started for the test, and the journal file
storage. Every trial is run once, by one worker, into a run dir of its own; a worker killed with ``kill -9``
mid-trial leaves one failed trial and the others go on. SQLite refuses a second sweeper up front."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fer_lightning.compare import leaderboard
from tests.conftest import ROOT, TINY_DATA

optuna = pytest.importorskip("optuna", reason="the sweeps extra is not installed")
_storage = pytest.importorskip("hydra_plugins.fer_optuna_sweeper._storage")

pytestmark = pytest.mark.slow  # three sweepers at once, three times: about 45 s in all
TRIALS = 4


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    return Path(found).resolve().parent if found else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on a Unix socket in its own folder (no TCP port), stopped after the tests.

    PostgreSQL refuses to run as root: there, the cluster belongs to ``nobody``."""
    binaries = _postgres_bin()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb): apt-get install postgresql (.ci/run does)")
    home = Path(tempfile.mkdtemp(prefix="fer-pg-"))  # short: a socket path has at most 107 bytes
    as_user: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    data, log = home / "data", home / "server.log"

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{command[0]} failed:\n{done.stdout}{done.stderr}"

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-k {home} -c listen_addresses='' -c fsync=off"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
        yield f"postgresql://postgres@/postgres?host={home}"
    finally:
        if data.exists():
            subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(home, ignore_errors=True)


def start_worker(storage: str, study: str, sweep_dir: Path, seed: int, *extra: str) -> subprocess.Popen:
    """``python train.py -m hparams_search=optuna`` on the shared study: what one node of a cluster runs."""
    command = [
        sys.executable,
        "train.py",
        "-m",
        "hparams_search=optuna",
        *extra,
        f"hydra.sweeper.storage='{storage}'",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.n_trials={TRIALS}",
        f"hydra.sweeper.sampler.seed={seed}",
        f"hydra.sweep.dir={sweep_dir}",
        "model=logreg",
        *TINY_DATA,
        "trainer.max_epochs=1",
        "callbacks.progress_bar=null",
        "++trainer.enable_progress_bar=false",
    ]
    log = (sweep_dir.parent / f"{sweep_dir.name}.out").open("w")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait(worker: subprocess.Popen, sweep_dir: Path) -> None:
    try:
        worker.wait(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    output = (sweep_dir.parent / f"{sweep_dir.name}.out").read_text()
    assert worker.returncode == 0, f"{sweep_dir.name} failed ({worker.returncode}):\n{output[-4000:]}"


def load(storage: str, study: str) -> optuna.Study:
    with _storage.opened_storage(storage) as opened:
        return optuna.load_study(study_name=study, storage=opened)


def start_three(storage: str, study: str, root: Path) -> list[tuple[subprocess.Popen, Path]]:
    dirs = [root / f"worker{i}" for i in range(3)]
    return [(start_worker(storage, study, d, seed), d) for seed, d in enumerate(dirs)]


def assert_every_trial_once(study: optuna.Study, root: Path, complete: int, failed: int = 0) -> None:
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == complete and states.count("FAIL") == failed, states
    assert sorted(t.number for t in study.trials) == list(range(complete + failed)), "a trial lost or duplicated"
    dirs = [Path(t.user_attrs["output_dir"]) for t in study.trials if t.state.name == "COMPLETE"]
    assert len(set(dirs)) == complete and all((d / "metrics.json").is_file() for d in dirs)
    listed = {root / run for run in leaderboard(root)[0]["run"]}
    assert set(dirs) <= listed, "the leaderboard misses a trial's run dir"


def test_workers_starting_together_on_an_empty_database_all_open_it(postgres):
    """Each creates Optuna's tables, and without the retry all but one failed (optuna/optuna#1092)."""
    fresh = f"fresh_{os.getpid()}"
    with _psycopg_autocommit(postgres) as connection:
        connection.execute(f"CREATE DATABASE {fresh}")
    url = postgres.replace("/postgres?", f"/{fresh}?", 1)
    opener = "import sys; from hydra_plugins.fer_optuna_sweeper._storage import opened_storage as o; "
    opener += "o(sys.argv[1]).__enter__()"
    openers = [
        subprocess.Popen([sys.executable, "-c", opener, url], cwd=ROOT, stderr=subprocess.PIPE) for _ in range(6)
    ]
    errors = [p.communicate(timeout=120)[1].decode()[-2000:] for p in openers]
    assert [p.returncode for p in openers] == [0] * 6, errors


def _psycopg_autocommit(url: str):
    import psycopg

    host = url.split("host=", 1)[1]
    return psycopg.connect(host=host, user="postgres", dbname="postgres", autocommit=True)


@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_three_workers_share_one_study(kind, request, tmp_path):
    storage = request.getfixturevalue("postgres") if kind == "postgresql" else f"journal:///{tmp_path}/study.log"
    for worker, sweep_dir in start_three(storage, tmp_path.name, tmp_path):
        wait(worker, sweep_dir)
    assert_every_trial_once(load(storage, tmp_path.name), tmp_path, complete=3 * TRIALS)


def test_one_sweeper_runs_n_jobs_trials_at_once_with_the_local_launcher(tmp_path):
    storage, sweep_dir = f"journal:///{tmp_path}/study.log", tmp_path / "sweep"
    parallel = ("hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2")
    wait(start_worker(storage, "local", sweep_dir, 0, *parallel), sweep_dir)
    assert_every_trial_once(load(storage, "local"), tmp_path, complete=TRIALS)
    assert (sweep_dir / ".submitit").is_dir(), "the jobs did not go through submitit"


def test_a_worker_killed_mid_trial_leaves_one_failed_trial_and_the_study_goes_on(postgres, tmp_path):
    study_name = tmp_path.name
    (victim, _), *others = start_three(postgres, study_name, tmp_path)
    deadline = time.monotonic() + 120
    while True:  # until the first worker is inside a trial
        assert time.monotonic() < deadline, "the first worker never started a trial"
        try:
            trials = load(postgres, study_name).trials
        except KeyError:  # not created yet
            trials = []
        if any(t.state.name == "RUNNING" and t.user_attrs.get("sweeper_pid") == victim.pid for t in trials):
            break
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    for worker, sweep_dir in others:
        wait(worker, sweep_dir)
    by_victim = [t for t in load(postgres, study_name).trials if t.user_attrs.get("sweeper_pid") == victim.pid]
    finished = sum(t.state.name == "COMPLETE" for t in by_victim)
    again = tmp_path / "worker0_again"
    wait(start_worker(postgres, study_name, again, 3), again)  # the same command again: it resumes the study
    study = load(postgres, study_name)
    killed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(killed) == 1 and killed[0].user_attrs["sweeper_pid"] == victim.pid
    assert_every_trial_once(study, tmp_path, complete=3 * TRIALS + finished, failed=1)


def test_a_second_sweeper_on_one_sqlite_file_is_refused_up_front(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    with _storage.opened_storage(url):
        with pytest.raises(RuntimeError, match="another sweeper.*journal:///.*postgresql://"):
            with _storage.opened_storage(url):
                pass
    with _storage.opened_storage(url):  # free again once the first sweep ended
        pass
