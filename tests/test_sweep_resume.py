"""A sweep whose driver is killed mid-way, then `atf-sweep --resume`: one finished run per cell."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from atf import keys
from orchestration.mlflow_log import TrackingStore
from orchestration.sweepfile import load_sweep


def cell_runs(db: Path) -> list:
    """Reported runs, read through the same locking store the sweep uses (the file may be new)."""
    store = TrackingStore(f"sqlite:///{db}", "atf")
    return [r for rs in store.cell_runs(keys.ROLE_CELL).values() for r in rs]


def sweep_cmd(path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "orchestration.cli", str(path), "--num-cpus", "2", "--checkpoint-period", "0",
            *extra]


def test_killed_driver_then_resume(tmp_path, synth_root):
    p = tmp_path / "r.yaml"
    p.write_text(f"""
base:
  data: {{root: {synth_root}, max_train: 16, max_test: 8}}
  model: {{width_mult: 0.25, input_size: 48}}
  optim: {{epochs: 3, batch_size: 8}}
max_concurrent: 1          # one at a time, so the kill lands between cells
tables: [VII]
experiments:
  - {{name: base, set: {{scenario: baseline}}, seeds: [0, 1]}}
  - name: tuned            # its samples run in the same Tune experiment, after the plain cells
    set: {{scenario: baseline, target: 300w}}
    search: {{num_samples: 2, seed: 0, space: {{optim.lr: {{loguniform: [1.0e-4, 1.0e-2]}}}}}}
""")
    cells = [c.cell_id for c in load_sweep(p).cells()]
    tuned = next(c.cell_id for c in load_sweep(p).cells() if c.search)
    db = tmp_path / "mlflow.db"
    log = open(tmp_path / "driver1.log", "w")
    proc = subprocess.Popen(sweep_cmd(p), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            done = [r for r in cell_runs(db) if r.data.tags.get(keys.TAG_STATUS) == "finished"]
            if done:
                break
            assert proc.poll() is None, (tmp_path / "driver1.log").read_text()[-2000:]
            time.sleep(1.0)
        assert done, "no cell finished before the deadline"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    before = {r.data.tags[keys.TAG_CELL]: r for r in cell_runs(db)}
    first = done[0]
    assert len([r for r in before.values() if r.data.tags[keys.TAG_STATUS] == "finished"]) < len(cells)

    out = subprocess.run(sweep_cmd(p, "--resume"), cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    said = out.stdout[-3000:] + out.stderr[-3000:]
    assert "resuming Tune experiment" in out.stdout, said
    after = cell_runs(db)
    assert sorted(r.data.tags[keys.TAG_CELL] for r in after) == sorted(cells), said  # exactly one run per cell
    assert all(r.data.tags[keys.TAG_STATUS] == "finished" and r.info.status == "FINISHED" for r in after), said
    again = next(r for r in after if r.info.run_id == first.info.run_id)
    client = MlflowClient(f"sqlite:///{db}")
    # the cell finished before the kill was not trained again
    assert [m.step for m in client.get_metric_history(again.info.run_id, keys.TRAIN_LOSS)] == [1, 2, 3]
    # the search came back with the experiment: its two samples, each run once, the best one reported
    samples = TrackingStore(f"sqlite:///{db}", "atf").cell_runs(keys.ROLE_SEARCH).get(tuned, [])
    assert len(samples) == 2 and all(r.data.tags[keys.TAG_STATUS] == "finished" for r in samples), \
        [(r.info.run_name, r.data.tags.get(keys.TAG_STATUS)) for r in samples]
    chosen = next(r for r in after if r.data.tags[keys.TAG_CELL] == tuned)
    assert chosen.data.tags[keys.TAG_CHOSEN_FROM] in {r.info.run_id for r in samples}
