"""Data checks with a clear verdict: every bad row of the annotation files, one line each.

Why: a row that parses is not a row that is right. One face whose points lay far outside its
image once fell into a validation split and drove val NME to 1755%, choosing the wrong epoch
without a word. The readers (atf.readers) stop at the first malformed row; this module reads on
and lists EVERY problem, each naming the file and its 1-based data row (the readers' numbering),
so a damaged copy of a dataset is repaired in one pass.

A row is bad when: its field count or numbers are wrong (NaN, inf, text); its image name is
absolute or climbs out of the images folder (`..`); its image is missing or cannot be decoded;
a landmark lies outside the image by more than `margin` x the face size (points a little outside
are real: faces cut by the border, occluded contours); its box, scale or landmark spread is
degenerate. A file is bad when its header is malformed, its point count differs from the
scheme's, or it has no data rows (an empty split names its file here, not later in the sampler).

Policy (`data.bad_rows`): "refuse" (default) stops a run before training, naming the problems;
"skip" drops the bad rows, counts them and lists them in `<out>/data_problems.txt`.
Used by `atf-data check ROOT`, by `atf.train.train` before anything loads, and by the sweep's
preflight (`check_run`).
"""

from __future__ import annotations

import csv
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable

import numpy as np

from atf.errors import DeterministicError
from atf.readers import BOX_COLUMNS, AnnotationError, _layout

__all__ = ["Problem", "DataCheckError", "MARGIN", "PROBLEMS_FILE", "check_csv", "check_root", "check_run",
           "bad_rows", "enforce", "escapes_folder"]

MARGIN = 0.5                       # points may lie outside the image by this fraction of the face size
PROBLEMS_FILE = "data_problems.txt"  # under a run's out_dir when data.bad_rows is "skip"
_SHOWN = 5                         # problems quoted in a refusal (the rest: atf-data check)


@dataclass(frozen=True)
class Problem:
    """One bad row (row >= 1, the readers' 1-based data row) or a bad file (row 0)."""
    file: str
    row: int
    message: str
    image: bool = False  # the row's image is missing or undecodable (data.skip_unreadable covers these)

    def __str__(self) -> str:
        return f"{self.file}: row {self.row}: {self.message}" if self.row else f"{self.file}: {self.message}"


class DataCheckError(DeterministicError, ValueError):
    """Bad rows under data.bad_rows: refuse (one line: the count, the first problems, the way out)."""


# -- one file --------------------------------------------------------------------------------------

def escapes_folder(name: str) -> bool:
    """Absolute, drive-qualified or climbing (`..`) image names leave the images folder."""
    if os.path.isabs(name) or PureWindowsPath(name).drive or name.startswith(("/", "\\", "~")):
        return True
    return ".." in PurePosixPath(name.replace("\\", "/")).parts


def _image_size(path: Path, decode: bool) -> tuple[int, int] | str:
    """(width, height), or why not. decode=False reads only the header (fast, for every run)."""
    if not path.is_file():
        return "no such file"
    if decode:
        import cv2
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            return "it does not decode"
        return int(img.shape[1]), int(img.shape[0])
    try:
        from PIL import Image
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # noqa: BLE001 - PIL raises many types for a broken header
        return "unreadable image header"


def check_csv(path: str | Path, images_dir: str | Path, num_points: int | None = None, decode: bool = True,
              margin: float = MARGIN, workers: int = 4) -> list[Problem]:
    """Every problem of one annotation CSV whose image names are relative to `images_dir`."""
    path, images_dir = Path(path), Path(images_dir)
    src = str(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        return [Problem(src, 0, f"cannot read annotation file ({e.strerror})")]
    except (UnicodeDecodeError, csv.Error) as e:
        return [Problem(src, 0, f"not a readable CSV ({e})")]
    try:
        style, scalars, k = _layout(rows[0] if rows else [], path)
    except AnnotationError as e:
        return [Problem(src, 0, str(e).removeprefix(f"{path}: "))]
    out: list[Problem] = []
    if num_points is not None and k != num_points:
        return [Problem(src, 0, f"header has {k} points, the scheme expects {num_points}")]
    data = [r for r in rows[1:] if r]
    if not data:
        return [Problem(src, 0, "no data rows (an empty split: header only)")]
    width, columns = len(rows[0]), [c.strip() for c in rows[0][1:]]
    parsed: list[tuple[int, str, np.ndarray]] = []
    for i, row in enumerate(data, start=1):
        if len(row) != width:
            out.append(Problem(src, i, f"{len(row)} fields, header has {width}"))
            continue
        name = row[0].strip()
        if not name:
            out.append(Problem(src, i, "empty image name"))
            continue
        if escapes_folder(name):
            out.append(Problem(src, i, f"image name {name!r} leaves the images folder (absolute path or '..')"))
            continue
        values, bad = [], None
        for col, cell in zip(columns, row[1:]):
            try:
                v = float(cell)
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                bad = f"column {col!r} is {cell!r}, not a finite number"
                break
            values.append(v)
        if bad:
            out.append(Problem(src, i, bad))
            continue
        parsed.append((i, name, np.asarray(values)))
    names = sorted({name for _, name, _ in parsed})
    with ThreadPoolExecutor(max(1, workers)) as pool:  # OpenCV and PIL release the GIL while decoding
        sizes = dict(zip(names, pool.map(lambda n: _image_size(images_dir / n, decode), names)))
    col = {c: j for j, c in enumerate(scalars)}
    for i, name, v in parsed:
        if isinstance(sizes[name], str):
            out.append(Problem(src, i, f"cannot read image {name}: {sizes[name]}", image=True))
        out.extend(Problem(src, i, m) for m in _row_problems(v, col, k, style, sizes[name], margin))
    out.sort(key=lambda p: p.row)
    return out


def _row_problems(v: np.ndarray, col: dict[str, int], k: int, style: str, size: tuple[int, int] | str,
                  margin: float) -> list[str]:
    found: list[str] = []
    lm = v[len(col):].reshape(k, 2)
    span = float((lm.max(axis=0) - lm.min(axis=0)).max())
    if span < 1.0:
        found.append(f"degenerate landmarks (all {k} points within {span:.2g} px)")
    if "left" in col:
        left, top, right, bottom = (v[col[c]] for c in BOX_COLUMNS)
        if right <= left or bottom <= top:
            found.append(f"degenerate box (left {left:g}, top {top:g}, right {right:g}, bottom {bottom:g})")
    for label in ("scale", "box_size"):
        if label in col and v[col[label]] <= 0:
            found.append(f"{label} must be positive, got {v[col[label]]:g}")
    if isinstance(size, tuple):
        w, h = size
        face = v[col["scale"]] * 200.0 if "scale" in col and v[col["scale"]] > 0 else span
        slack = margin * max(face, 1.0)
        out = np.flatnonzero((lm[:, 0] < -slack) | (lm[:, 0] > w - 1 + slack)
                             | (lm[:, 1] < -slack) | (lm[:, 1] > h - 1 + slack))
        if out.size:
            x, y = lm[out[0]]
            found.append(f"{out.size} point(s) outside the {w}x{h} image by more than {margin:g} x the face "
                         f"size (point {out[0]} at {x:.1f},{y:.1f})")
    return found


# -- a data root, a run ----------------------------------------------------------------------------

def _dataset_files(name: str, data) -> list[tuple[Path, Path, int]]:
    """(csv, images folder, points) of every split/subset file of one dataset that exists."""
    from atf import datasets
    from atf.schemes import get_scheme
    spec = datasets.get_dataset(name)
    k = get_scheme(spec.scheme).num_points
    folder, images = datasets.annotations_dir(name, data), datasets.images_dir(name, data)
    out = []
    for split, subsets in (("train", ("full",)), ("test", spec.subsets)):
        for subset in subsets:
            for boxed in (True, False):
                p = folder / datasets.csv_name(name, split, subset, boxed)
                if p.is_file():
                    out.append((p, images, k))
    return out


def check_root(root: str | Path, decode: bool = True, margin: float = MARGIN,
               registry: Iterable[str] = ()) -> list[Problem]:
    """Every problem under a data root: each registered dataset whose folder exists there."""
    from atf import datasets
    from atf.config import DataConfig
    data = DataConfig(root=str(root), registry=tuple(registry))
    datasets.apply_registry(data)
    root = Path(root)
    if not root.is_dir():
        return [Problem(str(root), 0, "data root does not exist")]
    found = [n for n in datasets.dataset_names() if datasets.annotations_dir(n, data).is_dir()]
    if not found:
        return [Problem(str(root), 0, f"no dataset folder here (expected one of {datasets.dataset_names()})")]
    out: list[Problem] = []
    for name in found:
        files = _dataset_files(name, data)
        if not files:
            out.append(Problem(str(datasets.annotations_dir(name, data)), 0, "no annotation CSV in this folder"))
        for csv_file, images, k in files:
            out.extend(check_csv(csv_file, images, k, decode=decode, margin=margin))
    return out


def check_run(cfg, decode: bool = False, margin: float = MARGIN) -> list[Problem]:
    """Problems in the files one run reads (`cfg`: a RunConfig): each dataset's train split and the
    test subsets present. decode=False reads image headers only (fast enough before every run)."""
    from atf import datasets
    data = cfg.data
    datasets.apply_registry(data)
    out: list[Problem] = []
    for name in dict.fromkeys([*cfg.datasets, *([cfg.novel] if cfg.novel else [])]):
        spec = datasets.get_dataset(name)
        from atf.schemes import get_scheme
        k = get_scheme(spec.scheme).num_points
        images = datasets.images_dir(name, data)
        for split, subsets in (("train", ("full",)), ("test", spec.subsets)):
            for subset in subsets:
                try:
                    path = datasets.csv_path(name, split, subset, root=data)
                except datasets.DatasetError as e:
                    if split == "train":
                        out.append(Problem(str(datasets.annotations_dir(name, data)), 0, str(e)))
                    continue  # a test subset not shipped: the evaluator reports what it has
                out.extend(check_csv(path, images, k, decode=decode, margin=margin))
    return out


def bad_rows(problems: Iterable[Problem]) -> dict[str, set[int]]:
    """file -> its bad data rows (file-level problems are not rows: they cannot be skipped)."""
    out: dict[str, set[int]] = {}
    for p in problems:
        if p.row:
            out.setdefault(p.file, set()).add(p.row)
    return out


def enforce(cfg, out_dir: Path | None = None) -> dict[str, set[int]]:
    """Apply `cfg.data.bad_rows` to the problems of a run: raise DataCheckError (refuse, or a
    file-level problem that no skipping can mend), else return the rows to skip and list them in
    `<out_dir>/data_problems.txt`."""
    problems = check_run(cfg)
    if cfg.data.skip_unreadable:  # the loader skips and counts unreadable images itself
        problems = [p for p in problems if not p.image]
    if not problems:
        return {}
    files = [p for p in problems if not p.row]
    policy = getattr(cfg.data, "bad_rows", "refuse")
    if policy == "refuse" or files:
        first = files or problems
        shown = "; ".join(str(p) for p in first[:_SHOWN])
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        hint = "" if files else "; set data.bad_rows: skip to train without them"
        raise DataCheckError(f"{len(problems)} data problem(s): {shown}{more}; list them all with "
                             f"`atf-data check {cfg.data.root}`{hint}")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / PROBLEMS_FILE).write_text("".join(f"{p}\n" for p in problems))
    return bad_rows(problems)
