"""Sweep overhead and scaling: serial loop, bare Ray Tune and `atf-sweep`, side by side.

The same N tiny OCN baselines (SynthFace, seeds 0..N-1, 1 CPU each) run as
  serial        `atf.train.train` called N times in one process (1 torch thread), the anchor
  bare Tune x1/x2  a plain `Tuner` (reused actors, Tune's defaults otherwise) over a minimal
                trainable: the same train() call, per-epoch `tune.report`, threads per atf.threads
  atf-sweep x1/x2  atf-sweep's `run_sweep` in a fresh process (fresh MLflow store; the command less its
                argument parsing and preflight), 1 or 2 trials at a time, the trainer wrapped by
                bench/_timed.py through `SweepOptions.trainer`
Each is repeated --repeats times; the table shows min and median of the wall time and of the
trials' phase (first trial's start to last trial's end, from the trainer's own timestamps via
bench/_timed.py), and splits atf-sweep's wall into before / during / after the trials.
"A worker's later trials" is the mean trainer time of the trials after each worker's first (a
worker's first trial also pays torch's deferred imports, once per process); from it, the
steady-state scaling of two concurrent trials (2 x one-at-a-time / two-at-a-time).
Ends with two lines a script can read (medians):
  overhead per trial over serial: X s   = (atf-sweep x1 trials' phase - serial) / N
                                          (steady state: the fixed start-up is shown apart)
  two concurrent vs one at a time: Y x  = atf-sweep x1 trials' phase / x2 trials' phase

    python bench/bench_sweep.py --trials 4 --epochs 6 --max-train 96 --repeats 3
    python bench/bench_sweep.py --quick          # smoke: 2 trials, 1 epoch, 1 repeat
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
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))


def _env(stamps: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["ATF_BENCH_STAMPS"] = str(stamps)
    return env


def _phase(stamps: Path) -> tuple[float, float]:
    """(first start, last end) of the trainer calls recorded in `stamps`."""
    rows = [json.loads(line) for line in stamps.read_text().splitlines() if line.strip()]
    return min(r["start"] for r in rows), max(r["end"] for r in rows)


def _later_trials(stamps: Path, workers: int) -> float:
    """Mean trainer time of the trials after each worker's first (the first `workers` to start):
    a worker's first call also pays torch's deferred imports (torch._dynamo, on the first
    optimizer: about 1.3 s here), once per worker process."""
    rows = sorted((json.loads(line) for line in stamps.read_text().splitlines() if line.strip()),
                  key=lambda r: r["start"])
    later = [r["end"] - r["start"] for r in rows[workers:]] or [rows[-1]["end"] - rows[-1]["start"]]
    return statistics.mean(later)


def serial(sweep: Path, out: Path) -> tuple[float, float]:
    """In this process (imports not counted): wall of the loop = its trials' phase."""
    from atf.threads import configure_threads
    from atf.train import train
    from orchestration.sweepfile import load_sweep, resolve_paths
    configure_threads(1)
    cells = load_sweep(sweep).cells()
    t = time.perf_counter()
    for c in cells:
        train(resolve_paths(c.config, ROOT), out / c.cell_id)
    wall = time.perf_counter() - t
    return wall, wall


def _bare_main(sweep: str, out: str, concurrent: int, cpus: int) -> int:
    """Child process of `bare`: ray.init, a plain Tuner, ray.shutdown."""
    import ray
    from ray import tune

    from atf.config import to_dict
    from orchestration.sweepfile import load_sweep, resolve_paths
    configs = [to_dict(resolve_paths(c.config, ROOT)) for c in load_sweep(Path(sweep)).cells()]

    def trainable(config: dict) -> None:
        import _timed
        from ray import tune as t

        from atf.config import RunConfig, from_dict
        from atf.threads import configure_threads
        configure_threads(1)
        cfg = from_dict(RunConfig, config["cfg"])
        folder = Path(out) / t.get_context().get_trial_id()
        _timed.train(cfg, folder, on_epoch=lambda r: t.report({"epoch": r.epoch, **{
            k: float(v) for k, v in r.metrics.items() if isinstance(v, (int, float))}}))

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space={"cfg": tune.grid_search(configs)},
                   tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
                   run_config=tune.RunConfig(storage_path=str(Path(out) / "ray"), verbose=0)).fit()
    finally:
        ray.shutdown()
    return 0


def _sweep_main(sweep: str, work: str, concurrent: int, cpus: int) -> int:
    """Child process of `through_sweep`: run_sweep with the timed trainer."""
    from orchestration.runner import SweepOptions, run_sweep
    from orchestration.sweepfile import load_sweep
    summary = run_sweep(load_sweep(Path(sweep)), SweepOptions(
        num_cpus=cpus, max_concurrent=concurrent, mlflow_uri=f"sqlite:///{Path(work) / 'mlflow.db'}",
        storage=str(Path(work) / "ray_results"), progress=False, trainer="_timed:train"))
    return 0 if summary.ok else 1


def _timed_child(cmd: list[str], cwd: Path, stamps: Path, workers: int) -> tuple[float, float, float, float]:
    """(wall, trials' phase, seconds before the first trial, later trials' mean) of a child process."""
    t0 = time.time()
    out = subprocess.run(cmd, cwd=cwd, env=_env(stamps), capture_output=True, text=True)
    t1 = time.time()
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    first, last = _phase(stamps)
    return t1 - t0, last - first, first - t0, _later_trials(stamps, workers)


def bare(sweep: Path, work: Path, concurrent: int, cpus: int) -> tuple[float, float, float, float]:
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--bare-child", str(sweep), str(work), str(concurrent), str(cpus)]
    return _timed_child(cmd, ROOT, work / "stamps.jsonl", concurrent)


def through_sweep(sweep: Path, work: Path, concurrent: int, cpus: int) -> tuple[float, float, float, float]:
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--sweep-child", str(sweep), str(work), str(concurrent), str(cpus)]
    return _timed_child(cmd, ROOT, work / "stamps.jsonl", concurrent)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] in ("--bare-child", "--sweep-child"):
        s, o, c, n = sys.argv[2:6]
        return (_bare_main if sys.argv[1] == "--bare-child" else _sweep_main)(s, o, int(c), int(n))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "data" / "synth"), help="SynthFace root (generated if absent)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "atf-bench-stores")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--max-train", type=int, default=96)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (two 1-CPU trials at once)")
    p.add_argument("--quick", action="store_true", help="2 trials, 1 epoch, 16 images, 1 repeat (smoke)")
    a = p.parse_args(argv)
    if a.quick:
        a.trials, a.epochs, a.max_train, a.repeats = 2, 1, 16, 1
    from _machine import machine_line
    from _seed import synth_root, tiny_sweep
    root = synth_root(a.data, a.cache)
    kinds = ["serial", "bare x1", "bare x2", "atf-sweep x1", "atf-sweep x2"]
    res: dict[str, list[tuple[float, ...]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="atf-bench-sweep-") as tmp:
        tmp = Path(tmp)
        sweep = tiny_sweep(tmp / "bench.yaml", root, a.trials, a.epochs, a.max_train, 1)
        for r in range(a.repeats):  # interleaved, so a load change hits every kind alike
            w, ph = serial(sweep, tmp / f"serial{r}")
            res["serial"].append((w, ph, 0.0, ph / a.trials))
            for c in (1, 2):
                res[f"bare x{c}"].append(bare(sweep, tmp / f"bare{c}-{r}", c, a.cpus))
                res[f"atf-sweep x{c}"].append(through_sweep(sweep, tmp / f"sweep{c}-{r}", c, a.cpus))
    med = {k: tuple(statistics.median(x[i] for x in v) for i in range(4)) for k, v in res.items()}
    low = {k: tuple(min(x[i] for x in v) for i in range(4)) for k, v in res.items()}
    n = a.trials
    print(f"\n{machine_line()}\n")
    print(f"{n} tiny OCN baselines (width 0.25, 48 px, {a.max_train} train images, {a.epochs} epochs), "
          f"1 CPU each, Ray with {a.cpus} CPUs; {a.repeats} repeat(s): min / median\n")
    print("| run | wall (s) | trials' phase (s) | before first trial (s) | after last trial (s) | "
          "phase per trial (s) | a worker's later trials (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k in kinds:
        (w0, p0, _, _), (w1, p1, b1, t1) = low[k], med[k]
        after = w1 - p1 - b1
        print(f"| {k} | {w0:.1f} / {w1:.1f} | {p0:.1f} / {p1:.1f} | {b1:.1f} | {after:.1f} | {p1 / n:.2f} | "
              f"{t1:.2f} |")
    ser = med["serial"][1]
    x1, x2 = med["atf-sweep x1"], med["atf-sweep x2"]
    b1, b2 = med["bare x1"], med["bare x2"]
    print(f"\natf-sweep vs bare Tune, one at a time (wall): {x1[0] / b1[0]:.2f} x; "
          f"bare Tune two concurrent vs one at a time (phase): {b1[1] / b2[1]:.2f} x; "
          f"atf-sweep fixed cost (wall - phase, counted once): {x1[0] - x1[1]:.1f} s")
    print(f"two concurrent vs one at a time, each worker's first trial left out (steady state): "
          f"{2 * x1[3] / x2[3]:.2f} x (bare Tune {2 * b1[3] / b2[3]:.2f} x)")
    print(f"overhead per trial over serial: {(x1[1] - ser) / n:.2f} s")
    print(f"two concurrent vs one at a time: {x1[1] / x2[1]:.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
