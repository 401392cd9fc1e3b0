"""Per-trial driver overhead against the size of the MLflow store: 10, 1000 and 10,000 stored runs.

Seeds SQLite stores with finished runs of other cells (bench/_seed.py; cached under --cache, a
private copy per measurement), then either
  --mode sweep  runs the same tiny sweep (`atf-sweep`, 1 CPU per trial, one at a time) against
                each store: wall time per trial, and its excess over the smallest store;
  --mode store  does only the driver's store work of such a sweep (the launch's finished-cell
                lookup, then per trial: its cell lookup, open run, per-epoch metrics, finish,
                reconcile lookup; the final lookup), without Ray or training: quiet and exact.
The issue's target: per-trial overhead within 10% from 10 to 10,000 stored runs.

    python bench/bench_store.py                                   # sweep mode, 10/1000/10000
    python bench/bench_store.py --mode store --sizes 10,50 --trials 2   # smoke
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _machine import machine_line  # noqa: E402
from _seed import cached_store, copy_store, synth_root, tiny_sweep  # noqa: E402


def store_work(db: Path, trials: int, epochs: int) -> float:
    """The driver's MLflow calls for `trials` new cells, as runner + MlflowCallback make them."""
    import dataclasses

    from atf import keys
    from atf.config import RunConfig
    from orchestration.mlflow_log import TrackingStore
    uri = f"sqlite:///{db}"
    cfg = RunConfig()
    cells = [f"bench{i:07d}" for i in range(trials)]
    t = time.perf_counter()
    store = TrackingStore(uri, "atf")
    parent = store.parent("bench", "bench.yaml")
    assert not store.finished_cells(cells)
    for i, cid in enumerate(cells):
        tags = {k: "" for k in keys.CELL_TAGS} | {keys.TAG_CELL: cid, keys.TAG_SEED: str(i)}
        assert store.finished_cells([cid]).get(cid) is None
        run = store.open_run(parent_id=parent, sweep_name="bench", tags=tags, role=keys.ROLE_CELL,
                             trial_id=f"t{i}", cfg=dataclasses.replace(cfg, seed=i), name=cid)
        for e in range(1, epochs + 1):
            store.log_metrics(run, {"train/loss": 1.0 / e, keys.VAL_NME: 0.1, keys.EPOCH: float(e)}, step=e)
        if store.status(run) != "finished":
            store.finish(run, {keys.test_metric("wflw", "full", keys.NME): 5.0}, None, epochs)
        assert store.trial_run(cid, keys.ROLE_CELL, f"t{i}") is not None
    assert len(store.finished_cells(cells)) == trials
    store.close_parent(parent, True, {"cells": trials})
    return time.perf_counter() - t


def sweep_work(db: Path, sweep: Path, work: Path) -> float:
    cmd = [sys.executable, "-m", "orchestration.cli", str(sweep), "--num-cpus", "2", "--quiet",
           "--mlflow-uri", f"sqlite:///{db}", "--storage", str(work / "ray_results")]
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"atf-sweep failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,1000,10000", help="stored runs, comma separated")
    p.add_argument("--mode", choices=("sweep", "store"), default="sweep")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-train", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1, help="measurements per size (the minimum is shown)")
    p.add_argument("--data", default=str(ROOT / "data" / "synth"), help="SynthFace root (generated if absent)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "atf-bench-stores")
    a = p.parse_args(argv)
    sizes = [int(x) for x in a.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="atf-bench-store-") as tmp:
        tmp = Path(tmp)
        root = synth_root(a.data, a.cache) if a.mode == "sweep" else None
        for n in sizes:
            t = time.perf_counter()
            seeded = cached_store(a.cache, n)
            seed_s = time.perf_counter() - t
            best = float("inf")
            for r in range(a.repeats):
                db = copy_store(seeded, tmp / f"s{n}-{r}")
                if a.mode == "store":
                    best = min(best, store_work(db, a.trials, a.epochs))
                else:
                    # seeds past the seeded ones' range: new cells, trained in every measurement
                    sweep = tiny_sweep(tmp / f"s{n}-{r}.yaml", root, a.trials, a.epochs, a.max_train, 1,
                                       seed0=1000 + 100 * r)
                    best = min(best, sweep_work(db, sweep, tmp / f"s{n}-{r}"))
            rows.append((n, seed_s, best))
    base = rows[0][2] / a.trials
    what = ("`atf-sweep` of tiny OCN baselines, one at a time" if a.mode == "sweep"
            else "the driver's MLflow work alone (no Ray, no training)")
    print(f"\n{machine_line()}\n")
    print(f"{a.trials} trials x {a.epochs} epochs per measurement, {what}; min of {a.repeats}\n")
    print("| stored runs | seeding (s, cached) | wall (s) | per trial (s) | vs smallest store |")
    print("|---:|---:|---:|---:|---:|")
    for n, seed_s, wall in rows:
        print(f"| {n} | {seed_s:.1f} | {wall:.2f} | {wall / a.trials:.3f} | {wall / a.trials / base:.2f}x |")
    print(f"\nper-trial overhead, largest vs smallest store: {rows[-1][2] / a.trials / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
