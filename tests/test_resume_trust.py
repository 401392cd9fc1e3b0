"""--resume reads launch records and Tune state from shared storage: only this user's own, naming
only this sweep's folders and parent run, may steer it (restoring unpickles the experiment state)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from atf import keys
from orchestration.mlflow_log import TrackingStore
from orchestration.runner import _foreign_experiment, _Launch, _sweep_key
from orchestration.sweepfile import load_sweep

SWEEP = """
name: trust
base:
  data: {root: /nonexistent/synth, max_train: 16}
experiments:
  - {name: b, set: {scenario: baseline}, tables: [I]}
"""
OTHER_UID = 54321


def _sweep(tmp_path: Path):
    p = tmp_path / "trust.yaml"
    p.write_text(SWEEP)
    return load_sweep(p)


def _record(folder: Path, name: str, data: object, age: float) -> Path:
    path = folder / name
    path.write_text(json.dumps(data))
    t = time.time() - age
    os.utime(path, (t, t))
    return path


def test_resume_skips_planted_launch_records_with_one_line_each(tmp_path, capsys):
    sweep = _sweep(tmp_path)
    prefix = f"{sweep.name}-{_sweep_key(sweep)}"
    store = tmp_path / "storage"
    store.mkdir()
    good = _record(store, f"{prefix}-20261201-1-a.launch.json",
                   {"stamp": "20261201-1-a", "grid": f"{prefix}-20261201-1-a", "parent_run_id": "a" * 32,
                    "cells": {f"{prefix}-20261201-1-a": ["c1"]}}, age=100)
    planted = {  # newer than the good one, so each would be chosen first
        "escape": {"stamp": "x", "grid": f"{prefix}-x/../../../home/mallory/exp"},
        "list": [1, 2],
        "run": {"stamp": "y", "grid": f"{prefix}-y", "parent_run_id": "'; drop"},
        "cells": {"stamp": "z", "grid": f"{prefix}-z", "cells": {"/etc": ["c1"]}},
    }
    for i, (name, data) in enumerate(planted.items()):
        _record(store, f"{prefix}-{name}.launch.json", data, age=10 + i)
    if os.geteuid() == 0:  # root can hand a file to another user: a record someone else wrote
        other = _record(store, f"{prefix}-other.launch.json",
                        {"stamp": "o", "grid": f"{prefix}-o", "parent_run_id": None}, age=1)
        os.chown(other, OTHER_UID, -1)
    launch = _Launch.open(store, sweep, resume=True)
    assert launch.path == good
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(planted) + (os.geteuid() == 0), err
    assert all("not resumed (" in line for line in err)
    assert any("experiment name is not one of this sweep's" in line and "escape" in line for line in err)
    assert any("parent run id is malformed" in line for line in err)
    assert any("experiments list is malformed" in line for line in err)
    assert any("not a launch record" in line and "list" in line for line in err)
    if os.geteuid() == 0:
        assert any("another user's launch record" in line for line in err)


def test_an_experiment_folder_with_a_foreign_state_file_is_not_restored(tmp_path):
    exp = tmp_path / "trust-abc-1"
    (exp / "cell_trial1").mkdir(parents=True)  # trial folders: written by the workers' user
    (exp / "tuner.pkl").write_bytes(b"state")
    assert _foreign_experiment(str(exp)) == ""
    assert _foreign_experiment("s3://bucket/trust-abc-1") == ""  # remote storage: its own access control
    (exp / "searcher-state-1.pkl").symlink_to(tmp_path / "elsewhere.pkl")
    assert "is a symbolic link" in _foreign_experiment(str(exp))
    (exp / "searcher-state-1.pkl").unlink()
    if os.geteuid() != 0:
        pytest.skip("handing a file to another user needs root")
    os.chown(exp / "cell_trial1", OTHER_UID, -1)
    assert _foreign_experiment(f"file://{exp}") == ""
    os.chown(exp / "tuner.pkl", OTHER_UID, -1)
    assert "tuner.pkl belongs to another user" in _foreign_experiment(f"file://{exp}")


def test_a_recorded_parent_id_reopens_only_this_sweeps_parent(tmp_path):
    store = TrackingStore(f"sqlite:///{tmp_path / 'm.db'}", "atf")
    mine = store.parent("trust", "trust.yaml")
    theirs = store.parent("someone-else", "other.yaml")
    store.close_parent(theirs, True, {})
    assert store.parent("trust", "trust.yaml", mine) == mine
    fresh = store.parent("trust", "trust.yaml", theirs)
    assert fresh not in (mine, theirs)
    run = store.client.get_run(theirs)
    assert run.info.status == "FINISHED" and run.data.tags[keys.TAG_SWEEP] == "someone-else"
