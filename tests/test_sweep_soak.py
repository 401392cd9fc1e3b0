"""Soak: one sweep whose trial workers are SIGKILLed at random epochs ends exactly as an undisturbed one.

The faults travel in SweepOptions.faults (no environment variable): each listed cell's trial process
kills itself once at the given epoch; Tune retries it from its last checkpoint (or from scratch at
epoch 1). The end state must be one finished run per cell, each step logged once, and the same
report numbers as the same sweep run without faults (CPU training is deterministic per seed).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from atf import keys
from orchestration.runner import SweepOptions, run_sweep
from orchestration.sweepfile import load_sweep
from reports.collect import RunFilter, collect

SWEEP = """
name: soak
base:
  data: {{root: {root}, max_train: 16, max_test: 8}}
  model: {{width_mult: 0.25, input_size: 48}}
  optim: {{epochs: {epochs}, batch_size: 8}}
max_failures: 3
tables: [III]
experiments:
  - {{name: b, set: {{scenario: baseline}}}}
  - {{name: w3, set: {{scenario: atf, aux: [300w]}}}}
  - {{name: wa, set: {{scenario: atf, aux: [aflw]}}}}
"""


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(tmp: Path, sweep_path: Path, faults: str) -> tuple[dict, dict]:
    db = tmp / "mlflow.db"
    summary = run_sweep(load_sweep(sweep_path), SweepOptions(mlflow_uri=f"sqlite:///{db}", storage=str(tmp / "tune"),
                                                             progress=False, faults=faults, max_concurrent=2,
                                                             checkpoint_period=0))
    assert summary.ok, summary.line()
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("atf")
    runs = client.search_runs([exp.experiment_id], f"tags.`{keys.TAG_KIND}` = 'trial'")
    by_cell: dict[str, list] = {}
    for r in runs:
        by_cell.setdefault(r.data.tags[keys.TAG_CELL], []).append(r)
    histories = {}
    for cid, rs in by_cell.items():
        assert len(rs) == 1, f"cell {cid}: {len(rs)} runs"
        (r,) = rs
        assert r.info.status == "FINISHED" and r.data.tags[keys.TAG_STATUS] == "finished"
        assert keys.TAG_ERROR not in r.data.tags
        hist = client.get_metric_history(r.info.run_id, keys.TRAIN_LOSS)
        histories[cid] = [(m.step, round(m.value, 5)) for m in sorted(hist, key=lambda m: m.step)]
    report = collect(f"sqlite:///{db}", RunFilter("soak")).metrics
    table = {(r.run_id and by_cell_id(runs, r.run_id), r.name): round(r.value, 5) for r in report.itertuples()}
    return histories, table


def by_cell_id(runs: list, run_id: str) -> str:
    return next(r.data.tags[keys.TAG_CELL] for r in runs if r.info.run_id == run_id)


def test_killed_workers_leave_the_same_result(tmp_path, synth_root, local_ray, monkeypatch):
    monkeypatch.chdir(tmp_path)
    epochs = 3
    p = tmp_path / "soak.yaml"
    p.write_text(SWEEP.format(root=synth_root, epochs=epochs))
    cells = [c.cell_id for c in load_sweep(p).cells()]
    rng = random.Random(11)  # which trials die, and at which epoch: seeded, so a failure reproduces
    faults = ",".join(f"kill@{rng.randint(1, epochs)}:{cid}" for cid in cells)
    (tmp_path / "calm").mkdir()
    (tmp_path / "faulty").mkdir()
    calm_hist, calm_table = _run(tmp_path / "calm", p, "")
    hist, table = _run(tmp_path / "faulty", p, faults)
    fired = list((tmp_path / "faulty" / "tune" / "faults").rglob("*.kill"))
    assert len(fired) == len(cells), faults  # every cell's worker was killed once
    assert set(hist) == set(calm_hist) == set(cells)
    for cid in cells:
        assert [s for s, _ in hist[cid]] == list(range(1, epochs + 1)), hist[cid]  # each step logged once
        assert hist[cid] == calm_hist[cid]
    assert table and table == calm_table  # the report's numbers are those of the undisturbed sweep


def test_rerun_after_a_failure_logs_each_step_once_and_clears_the_error(tmp_path, synth_root, local_ray,
                                                                         monkeypatch):
    """A cell that failed at epoch 2 (a raise, no retries), then a plain rerun that recovers: the same run
    continues, steps 1-3 are in its history once each, and the finished run keeps no error tag."""
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "soak.yaml"
    p.write_text(SWEEP.format(root=synth_root, epochs=3).replace("  - {name: w3", "#").replace("  - {name: wa", "#"))
    db = tmp_path / "mlflow.db"
    opts = SweepOptions(mlflow_uri=f"sqlite:///{db}", storage=str(tmp_path / "tune"), progress=False,
                        max_failures=0)
    (cid,) = [c.cell_id for c in load_sweep(p).cells()]
    first = run_sweep(load_sweep(p), SweepOptions(**{**opts.__dict__, "faults": f"raise@2:{cid}"}))
    assert first.failed_cells == (cid,)
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("atf")
    (failed,) = client.search_runs([exp.experiment_id], f"tags.`{keys.TAG_KIND}` = 'trial'")
    assert failed.info.status == "FAILED" and "injected fault" in failed.data.tags[keys.TAG_ERROR]
    assert run_sweep(load_sweep(p), opts).ok  # the plain rerun: trains the cell again from epoch 1
    (run,) = client.search_runs([exp.experiment_id], f"tags.`{keys.TAG_KIND}` = 'trial'")
    assert run.info.run_id == failed.info.run_id and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, keys.TRAIN_LOSS)] == [1, 2, 3]
    assert keys.TAG_ERROR not in run.data.tags and keys.TAG_FAILURE not in run.data.tags
