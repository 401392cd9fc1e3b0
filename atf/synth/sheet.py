"""Contact sheet: a grid of sample images per preset with each scheme's landmarks drawn.

Why: the quickest honest check that the synthetic faces look like faces and that every scheme's
points sit on the drawn features. Reads only the files on disk (any folder in the CSV layout).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from atf import keys

__all__ = ["SheetError", "read_landmarks", "make_sheet"]

_COLOURS = [(0, 255, 0), (0, 200, 255), (255, 120, 0), (255, 0, 255)]


class SheetError(ValueError):
    """Missing data for a contact sheet; the message names the file."""


def read_landmarks(path: Path) -> list[tuple[str, np.ndarray]]:
    """(image name, landmarks [K, 2]) rows of an annotation CSV in any of the real column styles."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise SheetError(f"{path}: empty CSV")
    head = rows[0]
    xs = [i for i, h in enumerate(head) if h.endswith("_x") and h.split("_")[0] in ("original", "landmark")]
    out = []
    for r in rows[1:]:
        pts = np.array([[float(r[i]), float(r[i + 1])] for i in xs], np.float32)
        out.append((r[0], pts))
    return out


def _marker_presets(data: Path) -> list[str]:
    try:
        return list(json.loads((data / keys.SYNTH_MARKER).read_text()).get("presets", []))
    except (OSError, ValueError, AttributeError):
        return []


def _tile(img: np.ndarray, pts: np.ndarray, colour, label: str, cell: int) -> np.ndarray:
    f = cell / img.shape[0]
    img = cv2.resize(img, (cell, cell), interpolation=cv2.INTER_AREA if cell < img.shape[0] else cv2.INTER_LINEAR)
    for p in pts * f:
        cv2.circle(img, (int(round(p[0] * 4)), int(round(p[1] * 4))), 4, colour, -1, cv2.LINE_AA, 2)
    cv2.putText(img, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def make_sheet(data: Path, out: Path, per_preset: int = 6, datasets: Sequence[str] | None = None,
               cell: int = 176) -> Path:
    """Write a PNG with one row per dataset (its first test images) and return its path."""
    data = Path(data)
    if per_preset < 1:
        raise SheetError(f"per-preset must be >= 1, got {per_preset}")
    if datasets is None:
        found = sorted(p.name for p in data.iterdir() if p.is_dir() and any(p.glob("face_landmarks_*.csv")))
        order = _marker_presets(data)  # a SynthFace folder: its own preset order (wflw first)
        datasets = [d for d in order if d in found] + [d for d in found if d not in order]
    if not datasets:
        raise SheetError(f"{data}: no dataset folders with face_landmarks_*.csv")
    rows = []
    for j, name in enumerate(datasets):
        csvs = sorted((data / name).glob(f"face_landmarks_{name}_*.csv"))
        csvs = [c for c in csvs if not c.stem.endswith("_with_box")]
        pick = next((c for c in csvs if c.stem.endswith("_train")), csvs[0] if csvs else None)
        if pick is None:
            raise SheetError(f"{data / name}: no face_landmarks_{name}_*.csv")
        samples = read_landmarks(pick)[:per_preset]
        tiles = []
        for image, pts in samples:
            path = data / name / "images" / image
            img = cv2.imread(str(path)) if path.is_file() else None
            if img is None:
                raise SheetError(f"{path}: cannot read image listed in {pick.name}")
            tiles.append(_tile(img, pts, _COLOURS[j % len(_COLOURS)], f"{name} {len(pts)}pt", cell))
        tiles += [np.zeros((cell, cell, 3), np.uint8)] * (per_preset - len(tiles))
        rows.append(np.concatenate(tiles, 1))
    sheet = np.concatenate(rows, 0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SheetError(f"{out}: cannot write PNG")
    return out
