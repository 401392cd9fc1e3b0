"""Write SynthFace annotations through `atf.readers.write_csv`, the project's one CSV writer.

Why: synthetic files must be indistinguishable in layout from the real ones (column style per
dataset, AFLW's box_size, CRLF rows), and the reader/writer pair in `atf.readers` is the single
source of that layout. This module only turns generator rows into an `AnnotationSet`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from atf.datasets import get_dataset
from atf.readers import AnnotationSet, write_csv

__all__ = ["file_name", "to_annotation_set", "write_rows"]


def file_name(dataset: str, suffix: str, with_box: bool) -> str:
    """`face_landmarks_<dataset>_<suffix>[_with_box].csv` (stems match `atf.datasets`)."""
    return f"face_landmarks_{dataset}_{suffix}{'_with_box' if with_box else ''}.csv"


def to_annotation_set(dataset: str, scheme: str, rows: Sequence[dict], source: str) -> AnnotationSet:
    """Generator rows (image, landmarks [K,2], center, scale, box, box_size) -> AnnotationSet."""
    n = len(rows)
    k = len(rows[0]["landmarks"]) if rows else 0
    f32 = np.float32

    def stack(key: str, shape: tuple[int, ...]) -> np.ndarray:
        return np.asarray([r[key] for r in rows], f32).reshape(shape) if n else np.zeros(shape, f32)

    # round like the public files: scale to 3 decimals, centre to 0.5 px
    scales = np.round(stack("scale", (n,)), 3)
    spec = get_dataset(dataset)
    return AnnotationSet(
        dataset=dataset, scheme=scheme, style=spec.style, source=source, images=tuple(r["image"] for r in rows),
        landmarks=np.round(stack("landmarks", (n, k, 2)), 3), centers=np.round(stack("center", (n, 2)) * 2) / 2,
        scales=scales, boxes=np.round(stack("box", (n, 4)), 3),
        box_sizes=(scales * 200).astype(f32) if spec.box_size else np.full(n, np.nan, f32))


def write_rows(dataset: str, scheme: str, rows: Sequence[dict], path: Path, with_box: bool) -> None:
    """Rows -> one CSV in the real layout of `dataset`."""
    write_csv(to_annotation_set(dataset, scheme, rows, source=f"synthface:{path.name}"), path, with_box=with_box)
