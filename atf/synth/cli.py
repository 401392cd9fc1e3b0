"""`atf-data synth` and `atf-data sheet`: command-line entry points of SynthFace.

Both take argv and return an exit code (the `atf-data` dispatcher calls them); bad input prints
one line naming the offending value and returns 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from atf.cli.common import HelpFormatter
from atf.synth.generate import SynthError, generate
from atf.synth.presets import PresetError, presets
from atf.synth.sheet import SheetError, make_sheet

__all__ = ["synth_main", "sheet_main"]


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return v


def synth_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="atf-data synth", description="Generate the SynthFace benchmark "
                                 "(images + annotation CSVs in the real datasets' layout).",
                                 formatter_class=HelpFormatter,
                                 epilog="example:\n  atf-data synth --out data/synth --scale 0.02 --seed 0")
    ap.add_argument("--out", type=Path, required=True, help="output folder (DIR/<dataset>/...)")
    ap.add_argument("--scale", type=_positive_float, default=0.02, help="fraction of the real sizes (0.02 = demo)")
    ap.add_argument("--seed", type=int, default=0, help="the benchmark is byte-identical per seed")
    ap.add_argument("--presets", default=",".join(presets()), help="comma-separated: wflw,300w,cofw,aflw")
    ap.add_argument("--workers", type=_positive_int, default=min(4, os.cpu_count() or 1),
                    help="processes rendering images (the output does not depend on it)")
    ap.add_argument("--image-size", type=_positive_int, default=0, metavar="PX",
                    help="side of every image (default: 176; real benchmark photos are about 1024, which "
                         "the loader bench renders)")
    ap.add_argument("--force", action="store_true", help="replace a folder holding another dataset")
    ap.add_argument("--skip-existing", action="store_true", help="do nothing when DIR holds this dataset")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    t0 = time.perf_counter()
    try:
        marker = generate(args.out, args.scale, args.seed, names, workers=args.workers, force=args.force,
                          skip_existing=args.skip_existing, image_size=args.image_size)
    except (SynthError, PresetError) as e:
        print(f"atf-data synth: error: {e}", file=sys.stderr)
        return 2
    total = sum(c for d in marker["counts"].values() for c in d.values())
    print(f"SynthFace (scale={args.scale:g}, seed={args.seed}) in {args.out}: "
          f"{total} annotation rows over {len(names)} datasets, {time.perf_counter() - t0:.1f} s")
    return 0


def sheet_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="atf-data sheet", description="Contact sheet of samples per dataset "
                                 "with their landmarks drawn.", formatter_class=HelpFormatter,
                                 epilog="example:\n  atf-data sheet --data-root data/synth --out sheet.png")
    ap.add_argument("--data-root", "--data", dest="data", type=Path, required=True, metavar="DIR",
                    help="data root holding <dataset>/face_landmarks_*.csv")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--per-preset", type=_positive_int, default=6, help="images per dataset row")
    ap.add_argument("--cell", type=_positive_int, default=176, help="tile side in pixels")
    args = ap.parse_args(argv)
    try:
        path = make_sheet(args.data, args.out, args.per_preset, cell=args.cell)
    except (SheetError, OSError) as e:
        print(f"atf-data sheet: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
