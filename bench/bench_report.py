"""atf-report time against the number of stored runs, with and without figures.

Seeds SQLite stores with N finished Table I runs (four rows, N/4 seeds each; seven CED CSVs and a
prediction file per run, as the sweep logs them), then times the `atf-report` command (a fresh
process, as a user runs it) over all tables. Seeded stores are cached under --cache.

    python bench/bench_report.py                       # 50, 250, 1000 runs
    python bench/bench_report.py --sizes 20 --repeats 1  # smoke
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
from _seed import cached_store  # noqa: E402


def time_report(db: Path, out: Path, figures: bool) -> float:
    cmd = [sys.executable, "-m", "reports.cli", "--mlflow-uri", f"sqlite:///{db}", "--out", str(out),
           "--sweeps-dir", str(ROOT / "sweeps")] + ([] if figures else ["--no-figures"])
    t = time.perf_counter()
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if run.returncode != 0:
        raise SystemExit(f"atf-report failed ({run.returncode}):\n{run.stderr[-3000:]}")
    if figures and not list((out / "figures").glob("ced_I_*.png")):
        raise SystemExit(f"atf-report drew no Table I CED figure from {db}:\n{run.stderr[-2000:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50,250,1000", help="stored runs, comma separated")
    p.add_argument("--repeats", type=int, default=3, help="timings per size and mode (the minimum is shown)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "atf-bench-stores")
    a = p.parse_args(argv)
    sizes = [int(x) for x in a.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="atf-bench-report-") as tmp:
        for n in sizes:
            t = time.perf_counter()
            db = cached_store(a.cache, n, artifacts=True)
            seeded = time.perf_counter() - t
            with_f = min(time_report(db, Path(tmp) / f"f{n}-{i}", True) for i in range(a.repeats))
            without = min(time_report(db, Path(tmp) / f"n{n}-{i}", False) for i in range(a.repeats))
            rows.append((n, seeded, with_f, without))
    print(f"\n{machine_line()}\n")
    print(f"`atf-report` over all tables, Table I runs with CED artifacts; min of {a.repeats}\n")
    print("| stored runs | with figures (s) | without figures (s) | added per 1000 more runs (s) |")
    print("|---:|---:|---:|---:|")
    n0, _, w0, _ = rows[0]
    for n, _, w, wo in rows:
        growth = f"{(w - w0) / (n - n0) * 1000:.1f}" if n > n0 else "-"
        print(f"| {n} | {w:.1f} | {wo:.1f} | {growth} |")
    n, _, w, _ = rows[-1]
    print(f"\nreport with figures per 1000 runs: {w / n * 1000:.1f} s (at {n} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
