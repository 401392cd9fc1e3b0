"""Threads follow resources: concurrent 1-CPU trials, and a run beside CPU hogs.

Each measurement is a separate process training the same tiny OCN baseline (`atf.train.train`)
and timing its epochs (median after the first). Two set-ups per process:
  atf      atf.threads: torch intra-op = its CPUs, inter-op 1, OpenCV 1, DataLoader workers
           within its CPUs, idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE)
  default  what a process got before: OMP_NUM_THREADS = its CPUs (as Ray sets it), everything
           else torch's and OpenCV's defaults (pools the size of the machine, spinning waits)
Checks (the issue's targets):
  concurrency  two 1-CPU processes at once vs one alone: epoch time ratio (target <= 1.15)
  hog          a run with all CPUs beside --hogs busy processes vs idle (target <= 2.0)

    python bench/bench_threads.py
    python bench/bench_threads.py --quick                  # smoke: 2 epochs, 16 images, atf only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def worker(a: argparse.Namespace) -> int:
    """One training process; prints {"epochs": [seconds, ...]} as its last line."""
    if a.mode == "atf":
        from atf.threads import passive_wait
        passive_wait()
    import dataclasses

    from atf.train import train
    from orchestration.sweepfile import load_sweep, resolve_paths
    cfg = resolve_paths(load_sweep(Path(a.sweep)).cells()[0].config, ROOT)
    if a.mode == "atf":
        from atf.threads import configure_threads
        plan = configure_threads(a.cpus, cfg.data.num_workers)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_workers=plan.loader_workers))
    stamps = [time.perf_counter()]
    train(cfg, Path(a.out), on_epoch=lambda r: stamps.append(time.perf_counter()))
    print(json.dumps({"epochs": [b - a_ for a_, b in zip(stamps, stamps[1:])]}))
    return 0


def _spawn(sweep: Path, out: Path, cpus: int, mode: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["OMP_NUM_THREADS"] = str(cpus)  # as Ray sets it for a trial of `cpus` CPUs
    cmd = [sys.executable, __file__, "--worker", "--sweep", str(sweep), "--out", str(out), "--cpus", str(cpus),
           "--mode", mode]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _epoch(proc: subprocess.Popen) -> float:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"worker failed:\n{err[-3000:]}")
    epochs = json.loads(out.strip().splitlines()[-1])["epochs"]
    return statistics.median(epochs[1:] or epochs)


def _hog(stop: Path) -> subprocess.Popen:
    code = f"import os\nwhile not os.path.exists({str(stop)!r}):\n    sum(range(100000))\n"
    return subprocess.Popen([sys.executable, "-c", code])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max-train", type=int, default=96)
    p.add_argument("--hogs", type=int, default=1, help="busy processes beside the hog-check run")
    p.add_argument("--modes", default="atf,default", help="comma separated: atf, default")
    p.add_argument("--data", default=str(ROOT / "data" / "synth"), help="SynthFace root (generated if absent)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "atf-bench-stores")
    p.add_argument("--quick", action="store_true", help="2 epochs, 16 images, atf threads only (smoke)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sweep", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--cpus", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="atf", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)
    if a.quick:
        a.epochs, a.max_train, a.modes = 2, 16, "atf"
    from _machine import machine_line
    from _seed import synth_root, tiny_sweep
    cpus = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="atf-bench-threads-") as tmp:
        tmp = Path(tmp)
        sweep = tiny_sweep(tmp / "s.yaml", synth_root(a.data, a.cache), 1, a.epochs, a.max_train, 1)
        n = 0

        def out() -> Path:
            nonlocal n
            n += 1
            return tmp / f"run{n}"

        for mode in [m.strip() for m in a.modes.split(",") if m.strip()]:
            alone = _epoch(_spawn(sweep, out(), 1, mode))
            pair = [_spawn(sweep, out(), 1, mode) for _ in range(2)]
            together = max(_epoch(q) for q in pair)
            idle = _epoch(_spawn(sweep, out(), cpus, mode))
            stop = tmp / f"stop-{mode}"
            hogs = [_hog(stop) for _ in range(a.hogs)]
            try:
                busy = _epoch(_spawn(sweep, out(), cpus, mode))
            finally:
                stop.write_text("")
                for h in hogs:
                    h.wait()
            rows.append((mode, alone, together, idle, busy))
    print(f"\n{machine_line()}\n")
    print(f"Tiny OCN baseline ({a.max_train} train images, 48 px), median epoch after the first of {a.epochs}; "
          f"hog check: {cpus} CPUs beside {a.hogs} busy process(es)\n")
    print("| threads | 1-CPU alone (s) | two 1-CPU at once (s) | ratio | all CPUs idle (s) | beside hog (s) | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, alone, together, idle, busy in rows:
        print(f"| {mode} | {alone:.2f} | {together:.2f} | {together / alone:.2f}x | {idle:.2f} | {busy:.2f} | "
              f"{busy / idle:.2f}x |")
    mode, alone, together, idle, busy = rows[0]
    print(f"\ntwo concurrent 1-CPU trials vs one alone ({mode}): {together / alone:.2f} x")
    print(f"beside a CPU hog vs idle ({mode}): {busy / idle:.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
