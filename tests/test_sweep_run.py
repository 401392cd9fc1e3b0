"""End to end through a real local Ray, real Optuna and a real MLflow SQLite store, on SynthFace.

The trainer is the real `atf.train.train` on tiny configs (16 images, 48 px, width 0.25).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from atf import keys
from orchestration.mlflow_log import TAG_CHOSEN_FROM
from orchestration.runner import SweepOptions, run_sweep
from orchestration.sweepfile import load_sweep

TINY = """
base:
  data: {{root: {root}, max_train: 16, max_test: 8}}
  model: {{width_mult: 0.25, input_size: 48}}
  optim: {{epochs: {epochs}, batch_size: 8}}
max_failures: 1
tables: [III]
"""


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def runs(db: Path, role: str | None = None) -> list:
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("atf")
    out = client.search_runs([exp.experiment_id], f"tags.`{keys.TAG_KIND}` = 'trial'", max_results=1000)
    return [r for r in out if role is None or r.data.tags.get(keys.TAG_ROLE) == role]


def artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path or None):
        out |= artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def test_sweep_fills_mlflow_then_reuses(tmp_path, synth_root, local_ray, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "s.yaml"
    p.write_text(TINY.format(root=synth_root, epochs=2) + """
experiments:
  - {name: base, set: {scenario: baseline}, tables: [I, III]}
  - {name: w3, set: {scenario: atf, aux: [300w]}}
  - name: tuned
    set: {scenario: atf, aux: [aflw]}
    search: {num_samples: 2, seed: 3, space: {optim.lr: {loguniform: [1.0e-4, 1.0e-2]}, "atdp.ratios[0]": {choice: [2, 3]}}}
""")
    sweep = load_sweep(p)
    summary = run_sweep(sweep, SweepOptions())
    assert summary.ok and summary.finished == 3, summary.line()
    out = capsys.readouterr().out
    assert "4/4 done  0 running  0 failed  best val/nme" in out  # one progress line: 2 cells + 2 samples
    db = tmp_path / "mlflow.db"  # the default store: sqlite:///<cwd>/mlflow.db
    client = MlflowClient(f"sqlite:///{db}")
    cells = {r.data.tags[keys.TAG_CELL]: r for r in runs(db, keys.ROLE_CELL)}
    assert sorted(cells) == sorted(c.cell_id for c in sweep.cells())
    for c in sweep.cells():
        r = cells[c.cell_id]
        assert r.info.status == "FINISHED" and r.data.tags[keys.TAG_STATUS] == "finished"
        assert {k: r.data.tags[k] for k in keys.CELL_TAGS} == c.tags
        assert r.data.tags[keys.TAG_DATA].startswith("synthetic(")
        assert r.data.params["data.max_train"] == "16"
        assert keys.test_metric("wflw", "full", keys.NME) in r.data.metrics
        steps = [m.step for m in client.get_metric_history(r.info.run_id, keys.TRAIN_LOSS)]
        assert steps == [1, 2]
        arts = artifacts(client, r.info.run_id)
        assert {keys.ARTIFACT_CONFIG, keys.ced_artifact("wflw", "full"), keys.pred_artifact("wflw", "full")} <= arts
        assert "ced/wflw.png" in arts                       # the CED curves as one figure per dataset
        assert r.info.run_name == c.label                   # "base s0", not a hash
        assert any(a.startswith(keys.ARTIFACT_MODEL_DIR + "/") for a in arts)
    # the tuned cell: two Optuna samples (no test metrics), the one with the lowest val/nme reported
    tuned = next(c for c in sweep.cells() if c.search)
    samples = runs(db, keys.ROLE_SEARCH)
    assert len(samples) == 2 and all(s.data.tags[keys.TAG_CELL] == tuned.cell_id for s in samples)
    assert all(keys.parse_protocol_metric(m) is None for s in samples for m in s.data.metrics)
    best = min(samples, key=lambda s: s.data.metrics[keys.VAL_NME])
    chosen = cells[tuned.cell_id]
    assert chosen.data.tags[TAG_CHOSEN_FROM] == best.info.run_id
    assert chosen.data.metrics[keys.VAL_NME] == pytest.approx(best.data.metrics[keys.VAL_NME])
    assert chosen.data.params["optim.lr"] == best.data.params["optim.lr"] != tuned.config.optim.lr
    # nested: sweep -> tuned cell -> its samples; the sweep file is an artifact of the sweep's run
    assert {s.data.tags["mlflow.parentRunId"] for s in samples} == {chosen.info.run_id}
    assert sorted(s.info.run_name for s in samples) == ["tuned s0 #1", "tuned s0 #2"]
    assert chosen.info.run_name == "tuned s0"
    top = client.get_run(chosen.data.tags["mlflow.parentRunId"])
    assert top.data.tags[keys.TAG_KIND] == "sweep" and artifacts(client, top.info.run_id) == {"sweep/s.yaml"}
    assert cells[sweep.cells()[0].cell_id].data.tags["mlflow.parentRunId"] == top.info.run_id

    # running it again reuses every finished cell: no new runs, no training
    n = len(runs(db))
    again = run_sweep(load_sweep(p), SweepOptions())
    assert (again.reused, again.finished) == (3, 0) and len(runs(db)) == n
    # another sweep sharing a cell reuses it and adds its table to the run's tables tag
    q = tmp_path / "other.yaml"
    q.write_text(TINY.format(root=synth_root, epochs=2) + "tables: [VII]\nset: {scenario: atf, aux: [300w]}\n"
                 .replace("tables: [III]\n", ""))
    shared = load_sweep(q).cells()[0]
    assert shared.cell_id in cells
    assert run_sweep(load_sweep(q), SweepOptions()).reused == 1
    assert client.get_run(cells[shared.cell_id].info.run_id).data.tags[keys.TAG_TABLES] == "III,VII"
    # --rerun trains it again: a second finished run of the same cell
    assert run_sweep(load_sweep(q), SweepOptions(rerun=True, progress=False)).finished == 1
    assert len([r for r in runs(db, keys.ROLE_CELL) if r.data.tags[keys.TAG_CELL] == shared.cell_id]) == 2


def test_failing_and_killed_trials(tmp_path, synth_root, local_ray, monkeypatch):
    """raise@1 fails on every attempt -> retried, then failed; kill@2 (SIGKILL of the trial's own
    process, first attempt only) -> retried from the epoch-1 checkpoint and finished; others unaffected."""
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "f.yaml"
    p.write_text(TINY.format(root=synth_root, epochs=2).replace("tables: [III]\n", "") + """
experiments:
  - {name: raises, set: {scenario: baseline}, tables: [III]}
  - {name: killed, set: {scenario: atf, aux: [300w]}, tables: [III]}
  - {name: fine, set: {scenario: atf, aux: [cofw]}, tables: [III]}
""")
    sweep = load_sweep(p)
    raises, killed, fine = (c.cell_id for c in sweep.cells())
    summary = run_sweep(sweep, SweepOptions(storage=str(tmp_path / "tune"), progress=False, checkpoint_period=0,
                                            faults=f"raise@1:{raises},kill@2:{killed}"))
    assert summary.failed_cells == (raises,) and summary.finished == 2 and not summary.ok
    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    by_cell: dict[str, list] = {}
    for r in runs(db, keys.ROLE_CELL):
        by_cell.setdefault(r.data.tags[keys.TAG_CELL], []).append(r)
    assert all(len(v) == 1 for v in by_cell.values())  # a retried trial continues its own run
    bad = by_cell[raises][0]
    assert bad.info.status == "FAILED" and bad.data.tags[keys.TAG_STATUS] == "failed"
    assert "injected fault" in bad.data.tags["atf.error"]
    marker = next((tmp_path / "tune" / "faults").rglob(f"{killed}.kill"))
    assert marker.is_file()
    k = by_cell[killed][0]
    assert k.data.tags[keys.TAG_STATUS] == "finished"
    # resumed from its checkpoint: epoch 1 was not trained again
    assert [m.step for m in client.get_metric_history(k.info.run_id, keys.TRAIN_LOSS)] == [1, 2]
    local = Path(client.download_artifacts(k.info.run_id, "result.json", str(tmp_path)))
    assert any("resumed from" in n for n in json.loads(local.read_text())["notes"])
    assert by_cell[fine][0].data.tags[keys.TAG_STATUS] == "finished"


def test_deterministic_failures_fail_once_and_stop_the_search(tmp_path, synth_root, local_ray, monkeypatch):
    """A data error fails its trial once (no retry, max_failures notwithstanding) with a one-line
    reason on the run; a search whose first samples fail alike stops instead of running the rest."""
    import shutil
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    for f in (root / "cofw").glob("face_landmarks_cofw_train*.csv"):
        f.unlink()
    p = tmp_path / "d.yaml"
    p.write_text(TINY.format(root=root, epochs=1).replace("max_failures: 1", "max_failures: 2") + """
max_concurrent: 2
experiments:
  - {name: nocofw, set: {scenario: atf, aux: [cofw]}}
  - {name: fine, set: {scenario: baseline}}
  - name: tuned-nocofw
    set: {scenario: baseline, target: cofw}
    search: {num_samples: 6, seed: 0, space: {optim.lr: {loguniform: [1.0e-4, 1.0e-2]}}}
""")
    sweep = load_sweep(p)
    bad, fine, tuned = (c.cell_id for c in sweep.cells())
    summary = run_sweep(sweep, SweepOptions(storage=str(tmp_path / "tune"), progress=False))
    assert set(summary.failed_cells) == {bad, tuned} and summary.finished == 1
    by_cell = {r.data.tags[keys.TAG_CELL]: r for r in runs(tmp_path / "mlflow.db", keys.ROLE_CELL)}
    for cid in (bad, tuned):
        r = by_cell[cid]
        assert r.info.status == "FAILED" and r.data.tags[keys.TAG_FAILURE] == keys.FAILURE_DETERMINISTIC
        assert "dataset cofw train/full" in r.data.tags[keys.TAG_ERROR]
        assert "\n" not in r.data.tags[keys.TAG_ERROR]
    assert "search stopped: its first 2 samples failed alike" in by_cell[tuned].data.tags[keys.TAG_ERROR]
    assert by_cell[fine].data.tags[keys.TAG_STATUS] == "finished"
    # not retried: Tune saw no trial error (a raised error leaves error.txt and is retried twice)
    assert not list((tmp_path / "tune").rglob("error.txt"))
    samples = runs(tmp_path / "mlflow.db", keys.ROLE_SEARCH)
    # 6 asked; two failed alike, so it stopped (a third may have started while the second ran)
    assert len(samples) <= 3, [s.info.run_name for s in samples]
    kinds = sorted(s.data.tags[keys.TAG_FAILURE] for s in samples)
    assert kinds[:2] == [keys.FAILURE_DETERMINISTIC] * 2 and set(kinds[2:]) <= {keys.FAILURE_DETERMINISTIC,
                                                                               keys.FAILURE_STOPPED}
