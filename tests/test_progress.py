"""Progress in a log file: atf-train piped to a file prints periodic lines with stage, epoch, step,
throughput and ETA during training and during evaluation (atf.progress)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from atf.progress import Progress, format_duration

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_line_has_step_throughput_and_eta():
    now = [100.0]
    bar = Progress(10, "train", "main", epoch=2, epochs=5, clock=lambda: now[0])
    now[0] += 4.0
    bar.update(4, items=64)
    line = bar.line()
    assert "train main epoch 2/5 step 4/10 (40%)" in line
    assert "16.0 img/s" in line                       # 64 images in 4 s
    assert "ETA epoch 6s, stage 36s" in line          # 6 steps left at 1 s; 3 more epochs of 10 s
    assert format_duration(3725) == "1h02m" and format_duration(408) == "6m48s"


def test_training_piped_to_a_file_prints_progress(synth_root, tmp_path):
    log = tmp_path / "train.log"
    cmd = [str(BIN / "atf-train"), str(REPO / "configs" / "demo_baseline.yaml"), "--smoke",
           "--data-root", str(synth_root), "--out", str(tmp_path / "run"), "--progress-every", "0",
           "--set", "optim.epochs=2", "--set", "optim.batch_size=4"]
    with open(log, "w") as handle:   # stdout and stderr a file, as under nohup or a batch system
        done = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, timeout=600, cwd=tmp_path)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    train = [line for line in text.splitlines() if "] train main epoch" in line]
    assert any("epoch 1/2" in line for line in train) and any("epoch 2/2" in line for line in train)
    moving = [line for line in train if "img/s" in line]
    assert moving and all(re.search(r"step \d+/\d+ \(\d+%\) [\d.]+ img/s ETA epoch \d+", line) for line in moving)
    assert any(", stage " in line for line in moving if "epoch 1/2" in line)   # the rest of the stage
    evals = [line for line in text.splitlines() if "] eval wflw step" in line]
    assert any("img/s" in line and "ETA" in line for line in evals), text[-3000:]


def test_sweep_progress_prints_on_a_timer_with_each_trials_epoch_and_eta():
    import io
    from types import SimpleNamespace

    from orchestration.progress import ProgressCallback
    from orchestration.trainable import FINAL, STEP

    now, out = [0.0], io.StringIO()
    cb = ProgressCallback("demo", 3, stream=out, every=30.0, clock=lambda: now[0])

    def trial(tid: str, epochs: int) -> SimpleNamespace:
        cell = {"cell_id": f"cell{tid}", "label": f"exp s{tid}", "config": {"optim": {"epochs": epochs}}}
        return SimpleNamespace(trial_id=tid, config={"cell": cell})

    a, b = trial("0", 10), trial("1", 10)
    cb.on_trial_start(0, [], a)
    assert out.getvalue().count("[demo ") == 1 and "exp s0 (cell0)  starting" in out.getvalue()
    cb.on_trial_start(0, [], b)                          # a state change: no new block
    cb.on_trial_result(0, [], a, {STEP: 4, "time_total_s": 20.0})
    now[0] = 10.0
    cb.on_step_end(0, [])
    assert out.getvalue().count("[demo ") == 1
    now[0] = 31.0
    cb.on_step_end(0, [])                                # the timer: a second block
    block = out.getvalue().split("[demo ")[-1]
    assert "0/3 done  2 running  0 failed" in block
    assert "exp s0 (cell0)  epoch 4/10  20s so far  ETA 30s" in block and "exp s1 (cell1)  starting" in block
    cb.on_trial_result(0, [], a, {STEP: 10, "time_total_s": 50.0, FINAL: 1.0, "val/nme": 7.5})
    cb.on_trial_complete(0, [], a)
    cb.on_experiment_end([])
    last = out.getvalue().split("[demo ")[-1]
    assert "1/3 done  1 running  0 failed  best val/nme 7.500 (cell0)  ETA ~" in last
