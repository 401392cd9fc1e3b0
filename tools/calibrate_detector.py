"""Fit how atf-predict maps a face detector's box to the crop a model was trained with.

    python tools/calibrate_detector.py --data-root data/synth [--per-dataset 300]

For every annotated face it finds (the detection nearest the annotated centre), it records where
the annotation's HRNet centre lies relative to the detector box and how the annotation's side
(scale * 200) compares with the box's side, per dataset, in units of the box side. It prints the
medians as the table atf/predict.py holds (DETECTOR_CALIBRATION); the detector's boxes sit tighter
than the annotation boxes and higher on the face, by amounts that differ per dataset's convention.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from atf.facedetect import detect_faces
from atf.readers import read_csv

DATASETS = ("wflw", "300w", "cofw", "aflw")


def measure(root: Path, dataset: str, limit: int, min_score: float) -> tuple[np.ndarray, int]:
    """[n, 3] (dx, dy, k) of the faces detected, and the number of faces tried."""
    rows, tried = [], 0
    for csv in sorted((root / dataset).glob(f"face_landmarks_{dataset}_*.csv")):
        if "with_box" in csv.name or csv.name.count("_") > 3 and "test" in csv.name:
            continue    # the subset files repeat the test set's faces
        aset = read_csv(csv)
        for i in range(len(aset.images)):
            if tried >= limit:
                break
            image = cv2.imread(str(root / dataset / "images" / aset.images[i]))
            if image is None:
                continue
            tried += 1
            cx, cy = aset.centers[i]
            side_gt = aset.scales[i] * 200
            faces = [f for f in detect_faces(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)) if f.score >= min_score]
            if not faces:
                continue
            best = min(faces, key=lambda f: np.hypot((f.box[0] + f.box[2]) / 2 - cx, (f.box[1] + f.box[3]) / 2 - cy))
            x1, y1, x2, y2 = best.box
            side = max(x2 - x1, y2 - y1)
            dx, dy = (cx - (x1 + x2) / 2) / side, (cy - (y1 + y2) / 2) / side
            if np.hypot(dx, dy) < 0.5:     # the same face, not a neighbour's
                rows.append((dx, dy, side_gt / side))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3), tried


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True, help="SynthFace or real data in the CSV layout")
    p.add_argument("--per-dataset", type=int, default=300, help="faces tried per dataset")
    p.add_argument("--min-score", type=float, default=0.95, help="detections below this are ignored")
    a = p.parse_args(argv)
    print("DETECTOR_CALIBRATION = {  # dataset: (centre dx, centre dy, side ratio), in detector box sides")
    for dataset in DATASETS:
        if not (a.data_root / dataset).is_dir():
            continue
        r, tried = measure(a.data_root, dataset, a.per_dataset, a.min_score)
        if not len(r):
            print(f"    # {dataset}: no face detected in {tried} tried", file=sys.stderr)
            continue
        med = np.median(r, axis=0)
        spread = np.median(np.abs(r - med), axis=0)
        print(f"    {dataset!r}: ({med[0]:.3f}, {med[1]:.3f}, {med[2]:.3f}),  # {len(r)}/{tried} found; "
              f"MAD {spread[0]:.3f}, {spread[1]:.3f}, {spread[2]:.3f}")
    print("}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
