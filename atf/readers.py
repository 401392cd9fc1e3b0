"""Annotation CSVs (the public HRNet/ATF layout) <-> `AnnotationSet`.

Two column styles exist in the real files:
  "original": image_name, scale, [box_size,] center_w, center_h, [left, top, right, bottom],
              original_{i}_x, original_{i}_y ...             (WFLW, 300W, AFLW)
  "cofw":     filename, [left, top, right, bottom], landmark_{i}_x, landmark_{i}_y ...   (COFW)
The style, the optional box/box_size columns and the point count are read from the header, so
one reader serves every dataset (and a user's own files). COFW rows carry no centre/scale; they
are computed from the landmarks' box as the public HRNet COFW loader does (`landmark_box`).
Every bad input raises `AnnotationError` in one line naming the file and 1-based data row.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Collection, Literal, Sequence

import numpy as np
import pandas as pd

__all__ = ["AnnotationError", "AnnotationSet", "read_csv", "write_csv", "landmark_box", "Style"]

Style = Literal["original", "cofw"]
BOX_COLUMNS = ("left", "top", "right", "bottom")
_NAME_COLUMN = {"original": "image_name", "cofw": "filename"}
_POINT_PREFIX = {"original": "original", "cofw": "landmark"}


class AnnotationError(ValueError):
    """Malformed annotation file or record; one line naming the file and row."""


@dataclass(frozen=True, eq=False)
class AnnotationSet:
    """N annotated faces of one dataset split; arrays are row-aligned with `images`."""
    dataset: str               # registry name ("wflw"); "" when unknown
    scheme: str                # scheme name ("wflw98"); "" when unknown
    source: str                # file it came from (for error messages)
    images: tuple[str, ...]    # N image names relative to the images folder
    landmarks: np.ndarray      # [N, K, 2] float32, original-image pixels
    centers: np.ndarray        # [N, 2] float32 (center_w, center_h)
    scales: np.ndarray         # [N] float32; scale*200 = box side in pixels
    boxes: np.ndarray          # [N, 4] float32 left, top, right, bottom (NaN row when absent)
    box_sizes: np.ndarray      # [N] float32 (AFLW box_size column; NaN when absent)
    style: Style = "original"  # column style of the file it was read from; `write_csv` keeps it
    rows: np.ndarray | None = None  # [N] 0-based data rows of `source` (None: 0..N-1); kept by `subset`,
                               # so errors name the file's row and the crop cache finds a face's crop

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_points(self) -> int:
        return int(self.landmarks.shape[1])

    @property
    def has_boxes(self) -> bool:
        return bool(np.isfinite(self.boxes).all())

    @property
    def has_box_sizes(self) -> bool:
        return bool(np.isfinite(self.box_sizes).all())

    def subset(self, idx: Sequence[int] | np.ndarray | slice) -> "AnnotationSet":
        """Rows `idx` (indices, boolean mask or slice) as a new set with the same metadata."""
        rows = np.arange(len(self))[idx]
        return replace(self, images=tuple(self.images[i] for i in rows), landmarks=self.landmarks[rows],
                       centers=self.centers[rows], scales=self.scales[rows], boxes=self.boxes[rows],
                       box_sizes=self.box_sizes[rows], rows=self.file_rows()[rows])

    def file_rows(self) -> np.ndarray:
        """[N] int64: the 0-based data row of `source` each face was read from."""
        if self.rows is None:
            return np.arange(len(self), dtype=np.int64)
        return np.asarray(self.rows, dtype=np.int64)

    def with_landmarks(self, landmarks: np.ndarray) -> "AnnotationSet":
        """Same faces with other landmarks (e.g. predictions to write in the annotation layout)."""
        lm = np.asarray(landmarks, dtype=np.float32)
        if lm.shape[0] != len(self) or lm.ndim != 3 or lm.shape[2] != 2:
            raise AnnotationError(f"{self.source}: landmarks of shape {lm.shape} do not fit {len(self)} faces")
        return replace(self, landmarks=lm)


def landmark_box(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre [N, 2] and scale [N] of the landmarks' bounding box, HRNet convention.

    As the public HRNet COFW loader: the box is snapped outward to whole pixels
    (floor(min), ceil(max)); centre = its middle; scale = longer side / 200. The 1.25 crop
    margin is NOT included (the data pipeline applies `DataConfig.crop_margin`).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    lo, hi = np.floor(lm.min(axis=1)), np.ceil(lm.max(axis=1))
    centers = (lo + hi) / 2.0
    scales = (hi - lo).max(axis=1) / 200.0
    return centers.astype(np.float32), scales.astype(np.float32)


# -- reading -------------------------------------------------------------------------------

def _layout(header: list[str], path: Path) -> tuple[Style, list[str], int]:
    """Column style, the scalar columns before the points, and the number of points."""
    if not header:
        raise AnnotationError(f"{path}: empty file (no header row)")
    first = header[0].strip()
    style: Style
    if first == "image_name":
        style = "original"
    elif first == "filename":
        style = "cofw"
    else:
        raise AnnotationError(f"{path}: header: first column must be 'image_name' or 'filename', got {first!r}")
    prefix = _POINT_PREFIX[style]
    start = next((i for i, c in enumerate(header) if c.startswith(prefix + "_")), None)
    if start is None:
        raise AnnotationError(f"{path}: header: no {prefix}_<i>_x/y landmark columns")
    scalars = [c.strip() for c in header[1:start]]
    allowed = (["scale", "box_size", "center_w", "center_h"] if style == "original" else []) + list(BOX_COLUMNS)
    bad = [c for c in scalars if c not in allowed]
    if bad:
        raise AnnotationError(f"{path}: header: unexpected column {bad[0]!r}")
    if style == "original" and not {"scale", "center_w", "center_h"} <= set(scalars):
        raise AnnotationError(f"{path}: header: needs scale, center_w and center_h columns")
    if any(c in scalars for c in BOX_COLUMNS) and not set(BOX_COLUMNS) <= set(scalars):
        raise AnnotationError(f"{path}: header: box columns must be all of {BOX_COLUMNS}")
    points = header[start:]
    k = len(points) // 2
    expected = [f"{prefix}_{i}_{a}" for i in range(k) for a in "xy"]
    if len(points) % 2 or [c.strip() for c in points] != expected:
        wrong = next((i for i, (c, e) in enumerate(zip(points, expected)) if c.strip() != e), len(expected))
        got = points[wrong] if wrong < len(points) else "(end of header)"
        raise AnnotationError(f"{path}: header: column {start + wrong + 1} is {got!r}, "
                              f"expected {expected[wrong] if wrong < len(expected) else 'nothing'}")
    return style, scalars, k


def read_csv(path: str | Path, dataset: str = "", scheme: str = "",
             num_points: int | None = None, skip_rows: Collection[int] = ()) -> AnnotationSet:
    """Read one annotation CSV. `num_points` (or the scheme's) is checked when given; `skip_rows`
    (1-based data rows, blank lines not counted) are left out unread."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read annotation file ({e.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise AnnotationError(f"{path}: not a readable CSV ({e})") from None
    style, scalars, k = _layout(header, path)
    if num_points is None and scheme:
        from atf.schemes import get_scheme
        num_points = get_scheme(scheme).num_points
    if num_points is not None and k != num_points:
        raise AnnotationError(f"{path}: header has {k} points, scheme {scheme or '?'} expects {num_points}")
    fast = None if skip_rows else _fast_table(path, len(header))
    file_rows = None
    if fast is not None:
        images, values = fast
    else:
        images, values, file_rows = _checked_table(path, header, style, set(skip_rows))
    n = len(images)
    col = {c: values[:, i] for i, c in enumerate(scalars)}
    lm = values[:, len(scalars):].reshape(n, k, 2)
    boxes = (np.stack([col[c] for c in BOX_COLUMNS], axis=1) if "left" in col
             else np.full((n, 4), np.nan))
    if "left" in col:
        degenerate = np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
        if degenerate.size:
            raise AnnotationError(f"{path}: row {degenerate[0] + 1}: box has zero or negative size")
    if style == "original":
        centers = np.stack([col["center_w"], col["center_h"]], axis=1)
        scales = col["scale"]
    else:
        centers, scales = landmark_box(lm) if n else (np.zeros((0, 2)), np.zeros(0))
    for label, v in (("scale", scales), ("box_size", col.get("box_size", np.ones(n)))):
        zero = np.flatnonzero(v <= 0)
        if zero.size:
            raise AnnotationError(f"{path}: row {zero[0] + 1}: {label} must be positive, got {v[zero[0]]:g}")
    f32 = np.float32
    return AnnotationSet(
        dataset=dataset, scheme=scheme, source=str(path), images=images,
        landmarks=lm.astype(f32), centers=np.asarray(centers, f32).reshape(n, 2),
        scales=np.asarray(scales, f32).reshape(n), boxes=boxes.astype(f32),
        box_sizes=np.asarray(col.get("box_size", np.full(n, np.nan)), f32), style=style,
        rows=file_rows if skip_rows else None)


def _fast_table(path: Path, width: int) -> tuple[tuple[str, ...], np.ndarray] | None:
    """Names and numbers via pandas' C parser, or None when anything looks off (then the slow,
    row-checking reader runs and names the bad row)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            df = pd.read_csv(path, dtype={0: str}, index_col=False, skip_blank_lines=True,
                             keep_default_na=False, na_values=[])
    except Exception:   # any parser complaint: let the checked reader produce the message
        return None
    if df.shape[1] != width:
        return None
    numeric = df.iloc[:, 1:]
    if not all(pd.api.types.is_float_dtype(t) or pd.api.types.is_integer_dtype(t) for t in numeric.dtypes):
        return None
    values = numeric.to_numpy(np.float64)
    names = df.iloc[:, 0].astype(str).str.strip()
    if not np.isfinite(values).all() or (names == "").any():
        return None
    return tuple(names.tolist()), values


def _checked_table(path: Path, header: list[str], style: Style, skip: set[int] = frozenset()
                   ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Row-by-row reader that reports the first bad row (1-based) and column; `skip` rows are dropped.
    Also returns the 0-based data row of each kept face."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))[1:]
    except (UnicodeDecodeError, csv.Error) as e:
        raise AnnotationError(f"{path}: not a readable CSV ({e})") from None
    rows = [r for r in rows if r]   # blank lines carry no face
    kept = np.array([i for i in range(len(rows)) if i + 1 not in skip], dtype=np.int64)
    if skip:
        rows = [rows[i] for i in kept]
    width = len(header)
    for r, row in enumerate(rows):
        if len(row) != width:
            raise AnnotationError(f"{path}: row {r + 1}: {len(row)} fields, header has {width}")
        if not row[0].strip():
            raise AnnotationError(f"{path}: row {r + 1}: empty {_NAME_COLUMN[style]}")
    values = _floats([row[1:] for row in rows], header[1:], path).reshape(len(rows), width - 1)
    return tuple(row[0].strip() for row in rows), values, kept


def _floats(cells: list[list[str]], columns: list[str], path: Path) -> np.ndarray:
    """Float64 array of the numeric cells; the first non-number or non-finite value is reported."""
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        values = None
    if values is not None and np.isfinite(values).all():
        return values
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            try:
                ok = math.isfinite(float(cell))
            except ValueError:
                ok = False
            if not ok:
                raise AnnotationError(f"{path}: row {r + 1}: column {columns[c].strip()!r} is {cell!r}, "
                                      "not a finite number")
    raise AnnotationError(f"{path}: unreadable numbers")   # unreachable: some cell failed above


# -- writing -------------------------------------------------------------------------------

def write_csv(aset: AnnotationSet, path: str | Path, with_box: bool | None = None,
              style: Style | None = None, box_size: bool | None = None) -> Path:
    """Write `aset` in exactly the real layout; returns the path.

    style: "original" or "cofw"; None = the set's own (`aset.style`: a set read from a file is
    written back in its layout; builders of new sets take it from the dataset registry).
    with_box: add left..bottom; None = when every row has a box. box_size: add AFLW's column;
    None = when every row has one.
    """
    path = Path(path)
    style = style or aset.style
    with_box = aset.has_boxes if with_box is None else with_box
    box_size = aset.has_box_sizes if box_size is None else box_size
    if with_box and not aset.has_boxes:
        raise AnnotationError(f"{path}: cannot write boxes: {aset.source} has rows without a box")
    if box_size and style == "original" and not aset.has_box_sizes:
        raise AnnotationError(f"{path}: cannot write box_size: {aset.source} has rows without one")
    k = aset.num_points
    prefix = _POINT_PREFIX[style]
    head = [_NAME_COLUMN[style]]
    cols: list[np.ndarray] = []
    if style == "original":
        head += ["scale"] + (["box_size"] if box_size else []) + ["center_w", "center_h"]
        cols += [aset.scales[:, None]] + ([aset.box_sizes[:, None]] if box_size else []) + [aset.centers]
    if with_box:
        head += list(BOX_COLUMNS)
        cols.append(aset.boxes)
    head += [f"{prefix}_{i}_{a}" for i in range(k) for a in "xy"]
    cols.append(aset.landmarks.reshape(len(aset), 2 * k))
    table = np.concatenate(cols, axis=1) if len(aset) else np.zeros((0, len(head) - 1))
    # float32 columns print as the shortest text that reads back to the same float32 ("0.455")
    df = pd.DataFrame(table.astype(np.float32), columns=head[1:])
    df.insert(0, head[0], list(aset.images))
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, lineterminator="\r\n")   # the public files end rows with CRLF
    return path
