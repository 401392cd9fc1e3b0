"""Shared-cluster faults with real processes: concurrent drivers on one store, SIGTERM, dead clusters,
unusable storage, shell injection through `submit`, a foreign file as the report's store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from atf import keys
from orchestration.cells import table_tag
from orchestration.mlflow_log import TrackingStore
from orchestration.sweepfile import load_sweep

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """
name: {name}
base:
  data: {{root: {root}, max_train: 16, max_test: 8}}
  model: {{width_mult: 0.25, input_size: 48}}
  optim: {{epochs: {epochs}, batch_size: 8}}
max_concurrent: 1
experiments:
{experiments}
"""
EXPERIMENTS = {  # name -> one experiment line; sweeps below share some of them
    "b": "  - {name: b, set: {scenario: baseline}, tables: [I]}",
    "w3": "  - {name: w3, set: {scenario: atf, aux: [300w]}, tables: [III]}",
    "wc": "  - {name: wc, set: {scenario: atf, aux: [cofw]}, tables: [VII]}",
    "wa": "  - {name: wa, set: {scenario: atf, aux: [aflw]}, tables: [X]}",
}


def sweep_file(folder: Path, name: str, root: Path, exps: list[str], epochs: int = 1) -> Path:
    p = folder / f"{name}.yaml"
    p.write_text(SWEEP.format(name=name, root=root, epochs=epochs, experiments="\n".join(EXPERIMENTS[e] for e in exps)))
    return p


def cmd(path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "orchestration.cli", str(path), "--num-cpus", "1", "--quiet",
            "--checkpoint-period", "0", *extra]


def all_runs(db: Path, experiment: str = "atf") -> list:
    store = TrackingStore(f"sqlite:///{db}", experiment)
    return store.runs("")


def trial_runs(db: Path) -> list:
    return [r for r in all_runs(db) if r.data.tags.get(keys.TAG_KIND) == "trial"]


def parents(db: Path) -> list:
    return [r for r in all_runs(db) if r.data.tags.get(keys.TAG_KIND) == "sweep"]


def start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=cwd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def finish(procs: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:
    deadline = time.time() + timeout
    try:
        for p, log in zip(procs, logs):
            p.wait(timeout=max(1.0, deadline - time.time()))
            assert p.returncode == 0, log.read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def check_trained_once(db: Path, cells: set[str]) -> dict[str, object]:
    """Every cell has exactly one run, finished, with one train/loss row per step."""
    runs = [r for r in trial_runs(db) if r.data.tags[keys.TAG_ROLE] == keys.ROLE_CELL]
    by_cell: dict[str, list] = {}
    for r in runs:
        by_cell.setdefault(r.data.tags[keys.TAG_CELL], []).append(r)
    assert set(by_cell) == cells
    assert all(len(v) == 1 for v in by_cell.values()), {k: len(v) for k, v in by_cell.items()}
    client = MlflowClient(f"sqlite:///{db}")
    for cid, (r,) in by_cell.items():
        assert r.info.status == "FINISHED" and r.data.tags[keys.TAG_STATUS] == "finished"
        steps = [m.step for m in client.get_metric_history(r.info.run_id, keys.TRAIN_LOSS)]
        assert steps == sorted(set(steps)) and steps, (cid, steps)
    return {cid: v[0] for cid, v in by_cell.items()}


def report_cells(db: Path, sweep: str) -> set[str]:
    from reports.collect import RunFilter, collect
    return set(collect(f"sqlite:///{db}", RunFilter(sweep)).runs[keys.TAG_CELL])


def run_concurrently(tmp_path: Path, synth_root: Path, plan: dict[str, list[str]], copies: dict[str, int]) -> None:
    files = {name: sweep_file(tmp_path, name, synth_root, exps) for name, exps in plan.items()}
    procs, logs = [], []
    for name, f in files.items():
        for i in range(copies.get(name, 1)):
            log = tmp_path / f"{name}-{i}.log"
            procs.append(start(cmd(f), tmp_path, log))
            logs.append(log)
    finish(procs, logs, timeout=900)
    db = tmp_path / "mlflow.db"
    cells = {name: {c.cell_id for c in load_sweep(f).cells()} for name, f in files.items()}
    runs = check_trained_once(db, set().union(*cells.values()))
    for name, mine in cells.items():
        assert report_cells(db, name) == mine, name  # every sweep's report finds all its cells
    tables: dict[str, set[str]] = {}
    for f in files.values():
        for c in load_sweep(f).cells():
            tables.setdefault(c.cell_id, set()).update(c.tables)
    for cid, r in runs.items():  # tags several sweeps share accumulate
        sharing = sorted(n for n, mine in cells.items() if cid in mine)
        assert r.data.tags[keys.TAG_SWEEP] == ",".join(sharing)
        assert r.data.tags[keys.TAG_TABLES] == table_tag(tables[cid])
    ps = parents(db)
    assert len(ps) == sum(copies.get(n, 1) for n in plan)
    for p in ps:  # no empty or RUNNING parent: each one trained or linked every cell of its sweep
        assert p.info.status == "FINISHED", p.data.tags
        mine = cells[p.data.tags[keys.TAG_SWEEP]]
        links = {k.removeprefix("atf.link."): v for k, v in p.data.tags.items() if k.startswith("atf.link.")}
        trained = {cid for cid, r in runs.items() if r.data.tags.get("mlflow.parentRunId") == p.info.run_id}
        assert mine <= trained | set(links), (mine, trained, links)
    claims = MlflowClient(f"sqlite:///{db}").get_experiment_by_name("atf-claims")
    assert not MlflowClient(f"sqlite:///{db}").search_runs([claims.experiment_id])  # every claim released


def test_two_sweeps_sharing_cells_train_each_once(tmp_path, synth_root):
    run_concurrently(tmp_path, synth_root, {"sa": ["b", "w3"], "sb": ["w3", "wc"]}, {})


def test_same_sweep_twice_at_once(tmp_path, synth_root):
    run_concurrently(tmp_path, synth_root, {"twice": ["b", "w3"]}, {"twice": 2})


@pytest.mark.slow
def test_four_drivers_on_one_store(tmp_path, synth_root):
    run_concurrently(tmp_path, synth_root, {"s1": ["b", "w3"], "s2": ["w3", "wc"], "s3": ["wc", "wa", "b"],
                                            "s4": ["b", "wa"]}, {})


@pytest.mark.parametrize("how", ["sigterm", pytest.param("ctrl-c", marks=pytest.mark.slow)])
def test_stop_kills_parent_cleanly_then_resume(tmp_path, synth_root, how):
    """SIGTERM to the driver (a scheduler), or SIGINT to its whole process group (Ctrl-C in a terminal,
    which also reaches the local Ray it started)."""
    p = sweep_file(tmp_path, "term", synth_root, ["b", "w3"], epochs=3)
    cells = {c.cell_id for c in load_sweep(p).cells()}
    db = tmp_path / "mlflow.db"
    log = tmp_path / "driver.log"
    proc = start(cmd(p), tmp_path, log)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # the first epoch of the first trial is in MLflow
            if db.exists() and any(r.data.metrics.get(keys.TRAIN_LOSS) is not None for r in trial_runs(db)):
                break
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        t0 = time.time()
        if how == "sigterm":
            os.kill(proc.pid, signal.SIGTERM)  # the driver only, as a scheduler would
        else:
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
        stopped_in = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    sig = signal.SIGTERM if how == "sigterm" else signal.SIGINT
    assert proc.returncode == 128 + sig, text[-3000:]
    assert f"interrupted by {sig.name}" in text and "--resume" in text
    assert stopped_in < 90
    (parent,) = parents(db)
    assert parent.info.status == "KILLED" and parent.data.tags[keys.TAG_STATUS] == "killed"
    assert not [r for r in all_runs(db) if r.info.status == "RUNNING"]  # nothing left RUNNING
    out = subprocess.run(cmd(p, "--resume"), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    runs = check_trained_once(db, cells)
    client = MlflowClient(f"sqlite:///{db}")
    for r in runs.values():  # the resumed run continues its history: every step once
        assert [m.step for m in client.get_metric_history(r.info.run_id, keys.TRAIN_LOSS)] == [1, 2, 3]
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"  # the same parent, resumed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_cluster_address_fails_fast(tmp_path, synth_root):
    p = sweep_file(tmp_path, "dead", synth_root, ["b"])
    t0 = time.time()
    out = subprocess.run(cmd(p, "--address", f"127.0.0.1:{free_port()}"), cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert time.time() - t0 < 60
    assert out.returncode == 2, out.stderr[-2000:]
    assert "unreachable" in out.stderr and "Traceback" not in out.stderr
    db = tmp_path / "mlflow.db"
    assert not db.exists() or not parents(db)  # failed before creating the parent run


def test_unusable_storage_or_store_fails_before_the_parent(tmp_path, synth_root):
    from orchestration.runner import SweepError, SweepOptions, run_sweep
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    sweep = load_sweep(sweep_file(tmp_path, "ro", synth_root, ["b"]))
    db = tmp_path / "mlflow.db"
    with pytest.raises(SweepError, match=r"--storage .*a-file/ray_results is not writable"):
        run_sweep(sweep, SweepOptions(storage=str(blocker / "ray_results"), mlflow_uri=f"sqlite:///{db}"))
    with pytest.raises(SweepError, match=r"--mlflow-uri .*a-file.* is not writable"):
        run_sweep(sweep, SweepOptions(mlflow_uri=f"sqlite:///{blocker}/mlflow.db", storage=str(tmp_path / "t")))
    foreign = tmp_path / "notes.db"
    foreign.write_text("my notes, not a database\n")
    with pytest.raises(SweepError, match="is not a SQLite database"):
        run_sweep(sweep, SweepOptions(mlflow_uri=f"sqlite:///{foreign}", storage=str(tmp_path / "t")))
    assert foreign.read_text() == "my notes, not a database\n"
    assert not db.exists() or not parents(db)
    # the same through the command: one line, exit 2, no traceback
    out = subprocess.run(cmd(sweep.path, "--storage", str(blocker / "x")), cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "a-file" in out.stderr, out.stderr


def test_report_refuses_empty_or_foreign_store(tmp_path):
    from reports.cli import main
    for content in (b"", b"PK\x03\x04 some zip"):
        f = tmp_path / "store.db"
        f.write_bytes(content)
        assert main(["--mlflow-uri", f"sqlite:///{f}", "--out", str(tmp_path / "r")]) != 0
        assert f.read_bytes() == content  # untouched: not turned into an MLflow database


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head` on loopback with every port free-picked: the dashboard agent's fixed default
    port (52365) is taken whenever another Ray head runs on the machine, and then no job is accepted."""
    bin_dir = Path(sys.executable).parent
    ports = {k: free_port() for k in ("port", "dashboard-port", "dashboard-agent-listen-port",
                                      "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")}
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token"}
    log = open(tmp_path_factory.mktemp("head") / "head.log", "w")
    proc = subprocess.Popen([str(bin_dir / "ray"), "start", "--head", "--block", "--num-cpus=1",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                             "--disable-usage-stats", *(f"--{k}={v}" for k, v in ports.items())],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield {"dashboard": f"http://127.0.0.1:{ports['dashboard-port']}", "env": env}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)  # what it started is gone with the group; do not wait longer
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_submit_passes_arguments_intact(tmp_path, synth_root, ray_head):
    """Shell metacharacters and spaces in submit's arguments reach atf-sweep as one argument each."""
    import urllib.error
    import urllib.request
    deadline = time.time() + 120
    while True:  # the dashboard (Jobs API) comes up after the GCS port
        try:
            urllib.request.urlopen(f"{ray_head['dashboard']}/api/version", timeout=10)
            break
        except urllib.error.HTTPError:
            break  # it answers (401 without the token): up
        except OSError as e:
            if time.time() > deadline:
                pytest.skip(f"Ray dashboard not reachable: {e}")
            time.sleep(1.0)
    jobdir = ROOT / "sweeps" / ".test-jobs"
    jobdir.mkdir(exist_ok=True)
    marker = tmp_path / "pwned"
    base = tmp_path / "base dir"  # a space in the path
    base.mkdir()
    p = sweep_file(jobdir, f"inject{os.getpid()}", synth_root, ["b"])
    try:
        out = subprocess.run([sys.executable, "-m", "orchestration.cli", "submit", str(p), "--address",
                              ray_head["dashboard"], "--python", sys.executable, "--base-dir", str(base),
                              "--dry-run", "--experiment", f"e;touch {marker}"],
                             cwd=tmp_path, env=ray_head["env"], capture_output=True, text=True, timeout=400)
    finally:
        p.unlink()
        if not any(jobdir.iterdir()):
            jobdir.rmdir()
    assert not marker.exists()  # the shell never ran `touch`
    # "--base-dir /x/base dir" arrived as one argument (split, argparse would refuse "dir" and the job fail)
    assert out.returncode == 0 and "SUCCEEDED" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
    assert f"'e;touch {marker}'" in out.stdout  # the command line shown is the quoted one

