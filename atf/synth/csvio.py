"""Write SynthFace annotations in exactly the real CSV layouts (column names, order, CRLF rows).

Why a module of its own: the column style differs per dataset (HRNet style for WFLW/300W, COFW's
`filename`/`landmark_i`, AFLW's extra `box_size`), and the writer must match `atf.readers`. When
`atf.readers.write_csv` is available it is the single source; this module only maps rows to it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["STYLE", "file_name", "write_rows"]

# dataset -> column style of its real CSV files
STYLE = {"wflw": "hrnet", "300w": "hrnet", "cofw": "cofw", "aflw": "aflw"}


def file_name(dataset: str, suffix: str, with_box: bool) -> str:
    """`face_landmarks_<dataset>_<suffix>[_with_box].csv`."""
    return f"face_landmarks_{dataset}_{suffix}{'_with_box' if with_box else ''}.csv"


def _header(style: str, k: int, with_box: bool) -> list[str]:
    box = ["left", "top", "right", "bottom"] if with_box else []
    if style == "cofw":
        return ["filename", *box, *[f"landmark_{i}_{a}" for i in range(k) for a in "xy"]]
    head = ["image_name", "scale"] + (["box_size"] if style == "aflw" else []) + ["center_w", "center_h"]
    return head + box + [f"original_{i}_{a}" for i in range(k) for a in "xy"]


def write_rows(dataset: str, scheme: str, rows: Sequence[dict], path: Path, with_box: bool) -> None:
    """Rows (image, landmarks [K,2], center, scale, box, box_size) -> one CSV file."""
    style = STYLE[dataset]
    k = len(rows[0]["landmarks"]) if rows else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(_header(style, k, with_box))
        for r in rows:
            vals: list[str] = [r["image"]]
            if style != "cofw":
                vals.append(f"{r['scale']:.3f}")
                if style == "aflw":
                    vals.append(f"{r['box_size']:.1f}")
                vals += [f"{v:.1f}" for v in r["center"]]
            if with_box:
                vals += [f"{v:.4f}" for v in r["box"]]
            vals += [f"{v:.4f}" for v in np.asarray(r["landmarks"]).reshape(-1)]
            w.writerow(vals)
