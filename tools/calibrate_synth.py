"""Regenerate SynthFace's calibration data from the real annotation CSVs.

Why: the synthetic benchmark must be grounded in real face shapes. This tool reads the public
annotation files (no images needed), Procrustes-aligns every face of each scheme, and stores compact
derived numbers in `atf/synth/calibration.json`: the mean shape per scheme (rounded to 1e-4, in
units of the outer inter-ocular distance), the box conventions (scale*200 and detector box relative
to the landmarks), and percentiles of a yaw proxy and a mouth-opening proxy. Then it fits each
scheme's systematic bias so that synthetic means match the real ones (`atf.synth.calibrate`).

    .venv/bin/python tools/calibrate_synth.py [--shared DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from atf.synth import stats  # noqa: E402

OUT = ROOT / "atf" / "synth" / "calibration.json"


def default_shared() -> Path:
    env = os.environ.get("ATF_SHARED")
    return Path(env) if env else ROOT.parent / "shared"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=default_shared())
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    ann = args.shared / "data" / "annotations"
    if not ann.is_dir():
        print(f"calibrate_synth: annotations folder not found: {ann}", file=sys.stderr)
        return 2
    real = {}
    for scheme, files in stats.REAL_FILES.items():
        frames = [pd.read_csv(ann / f) for f in files]
        real[scheme] = stats.summarise_real(scheme, frames)
        print(f"{scheme}: {real[scheme]['n']} faces")
    calib = {"real": real}
    # fit the per-scheme biases of the synthetic schemes against the real means
    from atf.synth.calibrate import fit_calibration
    calib.update(fit_calibration(real))
    args.out.write_text(json.dumps(calib, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
