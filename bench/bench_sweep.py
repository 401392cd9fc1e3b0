"""Sweep overhead: N tiny trials through `atf-sweep` vs the same trainer calls in one process.

Three wall times over the same N cells (tiny baselines on SynthFace, seeds 0..N-1):
  serial      atf.train.train called N times, one after another, in this process
  sweep x1    `atf-sweep` with one trial at a time (Ray start, Tune, MLflow logging included)
  sweep xP    `atf-sweep` with P trials at a time (P = CPUs, one CPU per trial)
Per-trial overhead = (sweep x1 - serial) / N; speed-up = sweep x1 / sweep xP.
Prints a Markdown table with the machine.

    python bench/bench_sweep.py --data data/synth --trials 4 --epochs 2
    python bench/bench_sweep.py --quick        # smoke: 2 trials, 1 epoch
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """
name: bench
base:
  data: {{root: {root}, max_train: {max_train}, max_test: 16, cache_images: true}}
  model: {{width_mult: 0.25, input_size: 48}}
  optim: {{epochs: {epochs}, batch_size: 16}}
resources: {{cpu: 1}}
max_concurrent: {concurrent}
tables: [I]
set: {{scenario: baseline}}
repeats: {trials}
"""


def serial(sweep_file: Path, out: Path) -> float:
    """The same cells, trained back to back in this process (torch limited to one thread)."""
    import torch

    from atf.train import train
    from orchestration.sweepfile import load_sweep, resolve_paths
    torch.set_num_threads(1)
    cells = load_sweep(sweep_file).cells()
    t = time.perf_counter()
    for c in cells:
        train(resolve_paths(c.config, Path.cwd()), out / c.cell_id)
    return time.perf_counter() - t


def through_sweep(sweep_file: Path, work: Path, cpus: int) -> float:
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "orchestration.cli", str(sweep_file), "--num-cpus", str(cpus), "--quiet",
           "--mlflow-uri", f"sqlite:///{work / 'mlflow.db'}", "--storage", str(work / "ray_results")]
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"atf-sweep failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "data" / "synth"), help="SynthFace root (atf-data synth)")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-train", type=int, default=32)
    p.add_argument("--quick", action="store_true", help="2 trials, 1 epoch (smoke)")
    args = p.parse_args()
    if args.quick:
        args.trials, args.epochs = 2, 1
    cpus = os.cpu_count() or 1
    root = Path(args.data).resolve()
    if not (root / "synthface.json").is_file():
        raise SystemExit(f"{root}: no SynthFace data; run: atf-data synth --out {args.data} --scale 0.02 --seed 0")
    with tempfile.TemporaryDirectory(prefix="atf-bench-sweep-") as tmp:
        tmp = Path(tmp)
        files = {}
        for name, conc in (("x1", 1), ("xP", cpus)):
            files[name] = tmp / f"bench_{name}.yaml"
            files[name].write_text(SWEEP.format(root=root, max_train=args.max_train, epochs=args.epochs,
                                                concurrent=conc, trials=args.trials))
        t_serial = serial(files["x1"], tmp / "serial")
        t_x1 = through_sweep(files["x1"], tmp / "x1", cpus)
        t_xp = through_sweep(files["xP"], tmp / "xP", cpus)
    import ray
    import torch
    n = args.trials
    print(f"\n**Machine:** {platform.platform()}, {platform.processor() or platform.machine()}, {cpus} CPUs, "
          f"Python {platform.python_version()}, torch {torch.__version__}, Ray {ray.__version__}\n")
    print(f"Trials: {n} tiny baselines (OCN width 0.25, 48 px, {args.max_train} train images, "
          f"{args.epochs} epochs), SynthFace at {root}\n")
    print("| run | wall (s) | per trial (s) | vs serial |")
    print("|---|---:|---:|---:|")
    print(f"| serial, one process | {t_serial:.1f} | {t_serial / n:.1f} | 1.00x |")
    print(f"| atf-sweep, 1 at a time | {t_x1:.1f} | {t_x1 / n:.1f} | {t_serial / t_x1:.2f}x |")
    print(f"| atf-sweep, {cpus} at a time | {t_xp:.1f} | {t_xp / n:.1f} | {t_serial / t_xp:.2f}x |")
    print(f"\nPer-trial overhead of the sweep (x1 - serial) / N: {(t_x1 - t_serial) / n:.1f} s "
          f"(includes the one-off Ray start and MLflow store setup, spread over {n} trials); "
          f"speed-up from {cpus} parallel trials: {t_x1 / t_xp:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
