"""Checkpoints from shared storage: no code runs on load; a damaged last.pt falls back to the one before."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from atf.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_resumable,
    previous_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from atf.config import RunConfig, override, to_dict

TINY = {"data.max_train": 16, "data.max_test": 8, "optim.epochs": 2, "optim.batch_size": 8,
        "model.width_mult": 0.25, "model.input_size": 48}


class _Payload:
    """Pickles as a call of os.system: what a crafted checkpoint on shared storage would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _state(epoch: int) -> dict:
    """What train._state saves, in small."""
    return {"model": {"w": torch.full((2,), float(epoch))}, "run_config": to_dict(RunConfig()),
            "epoch": epoch, "rng": rng_state(), "heads": {"wflw": 98}, "optimizer": {}, "scheduler": None,
            "sampler": {"epoch": epoch, "streams": []}, "stage": 0, "best": {}, "best_epoch": 0, "seconds": {}}


def test_crafted_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "last.pt"
    torch.save({"model": {}, "run_config": {}, "x": _Payload(marker)}, bad)
    with pytest.raises(CheckpointError, match=r"last\.pt: refused"):
        load_checkpoint(bad)
    assert not marker.exists()
    # the same through atf-eval, the command that takes a checkpoint path from the user
    out = subprocess.run([sys.executable, "-m", "atf.cli.eval", str(bad)], capture_output=True, text=True,
                         timeout=120)
    assert not marker.exists()
    assert out.returncode != 0 and "refused" in out.stderr


def test_rng_state_round_trips_and_loads_weights_only(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(_state(1), tmp_path / "a.pt")
    expect = (random.random(), np.random.rand(), torch.rand(1).item())
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "a.pt") == []
    set_rng_state(load_checkpoint(tmp_path / "a.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expect


def test_previous_checkpoint_is_kept_and_used(tmp_path):
    last = tmp_path / "checkpoints" / "last.pt"
    for epoch in (1, 2, 3):
        save_checkpoint(_state(epoch), last, keep_previous=True)
    assert load_checkpoint(previous_path(last))["epoch"] == 2
    state, used, note = load_resumable(last)
    assert (state["epoch"], used, note) == (3, last, "")
    last.write_bytes(last.read_bytes()[:100])  # damaged after it was written (disk, copy, sync)
    state, used, note = load_resumable(last, origin="/shared/ray_results/exp/checkpoint_000002")
    assert state["epoch"] == 2 and used == previous_path(last)
    assert str(last) in note and "/shared/ray_results/exp/checkpoint_000002" in note and "last.prev.pt" in note
    previous_path(last).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"last\.pt.*last\.prev\.pt"):
        load_resumable(last)


def test_sweep_trial_restarts_when_no_checkpoint_loads(tmp_path, capsys):
    from orchestration.trainable import usable_resume
    last = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(_state(1), last, keep_previous=True)
    save_checkpoint(_state(2), last, keep_previous=True)
    last.write_bytes(b"not a checkpoint")
    assert usable_resume(last, "/storage/exp/trial/checkpoint_000001") == previous_path(last)
    previous_path(last).write_bytes(b"")
    assert usable_resume(last, "/storage/exp/trial/checkpoint_000001") is None
    err = capsys.readouterr().err
    assert "/storage/exp/trial/checkpoint_000001" in err and "restarts from epoch 1" in err



def _packed(tmp_path: Path) -> Path:
    """A sweep checkpoint as Tune stores it: last.pt, last.prev.pt and best.pt, packed."""
    from orchestration.trainable import pack_checkpoint
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    save_checkpoint(_state(1), last, keep_previous=True)
    save_checkpoint(_state(2), last, keep_previous=True)
    save_checkpoint(_state(2), last.parent / "best.pt")
    dest = tmp_path / "storage" / "checkpoint_000002"
    dest.mkdir(parents=True)
    pack_checkpoint(run, last, dest)
    return dest


def test_torn_sweep_checkpoint_restarts_the_cell_instead_of_crashing_every_retry(tmp_path, capsys):
    """Found by the resume test: the driver was killed while Tune deleted the replaced checkpoint
    file by file (num_to_keep=1), and the saved experiment state still named it."""
    import json

    from orchestration.trainable import unpack_checkpoint
    src = _packed(tmp_path)
    out = tmp_path / "scratch"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "stale.pt").write_bytes(b"left by a crashed attempt")
    assert unpack_checkpoint(src, out) == out / "checkpoints" / "last.pt"
    assert sorted(f.name for f in (out / "checkpoints").iterdir()) == ["best.pt", "last.prev.pt", "last.pt"]

    previous_path(src / "checkpoints" / "last.pt").unlink()  # only a fallback lost: resume as before
    assert unpack_checkpoint(src, out) == out / "checkpoints" / "last.pt"
    assert not previous_path(out / "checkpoints" / "last.pt").exists()
    assert capsys.readouterr().err == ""

    (src / "checkpoints" / "best.pt").unlink()  # the best epoch's weights gone: cannot resume faithfully
    assert unpack_checkpoint(src, out, origin="/storage/exp/trial/checkpoint_000002") is None
    err = capsys.readouterr().err
    assert "/storage/exp/trial/checkpoint_000002 is incomplete (missing checkpoints/best.pt" in err
    assert "restarts from epoch 1" in err

    crafted = _packed(tmp_path / "crafted")  # a file list on shared storage naming a path outside
    info = json.loads((crafted / "atf_files.json").read_text())
    (crafted / "atf_files.json").write_text(json.dumps({**info, "files": info["files"] + ["../../evil.pt"]}))
    (crafted / "../../evil.pt").write_bytes(b"x")  # present, so only the path check stops the copy
    assert unpack_checkpoint(crafted, tmp_path / "x" / "scratch") is None
    assert not (tmp_path / "evil.pt").exists() and "outside the trial's folder" in capsys.readouterr().err
    linked = _packed(tmp_path / "linked")  # last.pt a link to a file of the user's own
    secret = tmp_path / "secret.pt"
    save_checkpoint(_state(7), secret)
    (linked / "checkpoints" / "last.pt").unlink()
    (linked / "checkpoints" / "last.pt").symlink_to(secret)
    assert unpack_checkpoint(linked, tmp_path / "y" / "scratch") is None
    assert not (tmp_path / "y" / "scratch").exists() and "is a symbolic link" in capsys.readouterr().err
    (crafted / "atf_files.json").write_text("{")
    assert unpack_checkpoint(crafted, out) is None and "unusable file list" in capsys.readouterr().err

def test_train_resumes_past_a_damaged_last_checkpoint(synth_root, tmp_path):
    from atf.train import train
    cfg = override(RunConfig(), {**TINY, "data.root": str(synth_root)})
    out = tmp_path / "run"
    full = train(cfg, out)
    last = out / "checkpoints" / "last.pt"
    assert load_checkpoint(previous_path(last))["epoch"] == 1
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    again = train(cfg, out, resume=last)
    assert any("damaged" in n and str(last) in n for n in again.notes)
    assert any("resumed from" in n and "last.prev.pt" in n for n in again.notes)
    k = next(k for k in full.metrics if k.startswith("test/"))
    assert again.metrics[k] == pytest.approx(full.metrics[k])  # epoch 2 retrained from epoch 1: same result


def test_checkpoint_policy_bounds_lost_work_not_epochs():
    """Every N-th epoch, and no sooner than `period` seconds after the last checkpoint: a trial of
    seconds gets none (a retry redoes it faster than checkpoints cost), a long-epoch one every epoch."""
    from orchestration.trainable import checkpoint_policy
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    due = checkpoint_policy(1, 60.0, clock)
    picked = []
    for epoch in range(1, 11):
        now[0] += 25.0           # 25 s epochs: one checkpoint per 60 s at most
        picked.append(epoch) if due(epoch) else None
    assert picked == [3, 6, 9]
    due = checkpoint_policy(2, 0.0, clock)
    assert [e for e in range(1, 7) if due(e)] == [2, 4, 6]
    due = checkpoint_policy(0, 0.0, clock)
    assert not any(due(e) for e in range(1, 5))


def test_a_torn_or_foreign_finished_result_trains_the_cell_again(tmp_path, capsys):
    """result.json of a finished trial, read back on restore: torn or not ours is one line, not a
    crash that every retry repeats."""
    import json

    from orchestration.trainable import finished_metrics
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"metrics": {"test/wflw/full/nme": 4.5, "val/nme": 3}, "best_epoch": 2}))
    assert finished_metrics(path, "/storage/t/checkpoint_000003") == {"test/wflw/full/nme": 4.5, "val/nme": 3.0}
    for bad in ('{"metrics": {"test/wflw/full/nme": 4.', '[1, 2]', '{"metrics": {"x": "rm -rf"}}', '{}'):
        path.write_text(bad)
        assert finished_metrics(path, "/storage/t/checkpoint_000003") is None
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "/storage/t/checkpoint_000003/result.json unusable" in err, err


def test_a_checkpoint_that_loads_but_is_not_resumable_is_refused_by_name(tmp_path):
    """Tensors only, so it loads safely; but without what a resume reads (crafted, or another
    program's) it is refused here with the missing key, not as a KeyError deep in the trainer."""
    last = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(_state(1), last, keep_previous=True)
    save_checkpoint({k: v for k, v in _state(2).items() if k != "heads"}, last, keep_previous=True)
    state, used, note = load_resumable(last)
    assert used == previous_path(last) and state["epoch"] == 1 and "missing 'heads'" in note
    save_checkpoint({**_state(3), "stage": "0; rm"}, last, keep_previous=False)
    previous_path(last).unlink()
    with pytest.raises(CheckpointError, match=r"last\.pt: not a resumable atf checkpoint \('stage' is str\)"):
        load_resumable(last)
