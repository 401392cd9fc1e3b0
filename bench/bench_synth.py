"""Benchmark: SynthFace generation speed (images/s) on this machine, as a Markdown table.

Why: the demo data set must be generated in well under a minute on a 2-core laptop; this prints
the measured rate for 1 and N worker processes so a regression is visible.

    .venv/bin/python bench/bench_synth.py [--scale 0.01] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _machine import cpu_model  # noqa: E402

from atf.synth import generate  # noqa: E402
from atf.synth.generate import plan  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", default=f"1,{os.cpu_count() or 1}")
    args = ap.parse_args(argv)
    n = len(plan(args.scale, args.seed, ["wflw", "300w", "cofw", "aflw"]))
    print(f"SynthFace generation, scale {args.scale:g} (all four presets, {n} images, 176 px)  ")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}\n")
    print("| workers | seconds | images/s |")
    print("|---:|---:|---:|")
    for w in sorted({int(x) for x in args.workers.split(",")}):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            generate(Path(tmp) / "synth", args.scale, args.seed, workers=w)
            dt = time.perf_counter() - t0
        print(f"| {w} | {dt:.1f} | {n / dt:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
