"""Official native annotation formats -> AnnotationSet, and `atf-data convert`.

Users who hold the original dataset releases convert them once to the CSV layout every other
piece reads (docs/design.md, "Data on disk"):

    atf-data convert --format {wflw,300w,cofw,aflw} SRC --out DIR [--images FOLDER] [--with-box]

writes DIR/<dataset>/face_landmarks_<dataset>_<split>[_<subset>].csv for the train split and
every test subset of the registry, and makes DIR/<dataset>/images point at the images.

Centre and scale: for WFLW, 300W and COFW they come from the landmarks' bounding box
(`atf.readers.landmark_box`, the public HRNet convention, which reproduces the centre/scale
columns of the public WFLW and 300W CSVs exactly). AFLW's come from the annotation box instead,
because its NME normaliser is that box: box_size = sqrt(w * h), scale = box_size / 200, centre =
the box centre (AFLW-19 protocol). `--with-box` also writes the `_with_box` files, holding the
release's own face box (WFLW rect, COFW bbox, AFLW bbox; the landmark box for 300W), not a
detector's.

Folder rules assumed for the 300W `.pts` tree (path components matched case-insensitively):
  train     = lfpw/trainset, helen/trainset, afw                     (811 + 2000 + 337 = 3148)
  common    = lfpw/testset, helen/testset                            (224 + 330 = 554)
  challenge = ibug                                                   (135)
  full      = common + challenge                                     (689, HRNet's "300W test")
  test      = 300W private set: 01_Indoor, 02_Outdoor                (300 + 300 = 600)
Each `.pts` file's image is the file beside it with the same stem (.jpg, .png or .jpeg).
AFLW-Frontal is the test faces whose 19 points are all visible (`mask_new`), as in the
AFLW-19 protocol (1314 faces); the first `train_count` (20000) entries of `ra` are train.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atf import keys
from atf.datasets import csv_name, get_dataset, test_subsets
from atf.readers import AnnotationSet, landmark_box, write_csv

__all__ = [
    "NativeFormatError", "Converted", "read_wflw", "read_300w", "read_cofw", "read_aflw", "read_pts",
    "load_mat", "convert", "convert_main", "FORMATS",
]

_300W_RULES: dict[str, tuple[tuple[str, ...], ...]] = {
    # subset -> path-component sequences (lower case) that put a .pts file in it
    "train": (("lfpw", "trainset"), ("helen", "trainset"), ("afw",)),
    "common": (("lfpw", "testset"), ("helen", "testset")),
    "challenge": (("ibug",),),
    "test": (("01_indoor",), ("02_outdoor",)),
}
_IMAGE_EXT = (".jpg", ".png", ".jpeg", ".JPG", ".PNG")


class NativeFormatError(ValueError):
    """A native annotation file that cannot be read; one line naming the file (and line/entry)."""


@dataclass(frozen=True)
class Converted:
    """Annotation sets of one dataset: train, and each test subset by registry subset name."""
    dataset: str
    train: AnnotationSet | None
    test: dict[str, AnnotationSet]
    images: Path | None                       # folder the image names are relative to
    notes: tuple[str, ...] = ()


def _aset(dataset: str, source: str, images: list[str], lm: np.ndarray, boxes: np.ndarray | None = None,
          centers: np.ndarray | None = None, scales: np.ndarray | None = None,
          box_sizes: np.ndarray | None = None) -> AnnotationSet:
    n = len(images)
    lm = np.asarray(lm, np.float32).reshape(n, -1, 2)
    if centers is None or scales is None:
        centers, scales = landmark_box(lm) if n else (np.zeros((0, 2)), np.zeros(0))
    spec = get_dataset(dataset)
    return AnnotationSet(
        dataset=dataset, scheme=spec.scheme, style=spec.style, source=source, images=tuple(images),
        landmarks=lm, centers=np.asarray(centers, np.float32).reshape(n, 2),
        scales=np.asarray(scales, np.float32).reshape(n),
        boxes=(np.asarray(boxes, np.float32).reshape(n, 4) if boxes is not None
               else np.full((n, 4), np.nan, np.float32)),
        box_sizes=(np.asarray(box_sizes, np.float32).reshape(n) if box_sizes is not None
                   else np.full(n, np.nan, np.float32)))


def _finite(cells: list, where: str, what: str) -> np.ndarray:
    """Float64 array of text cells; NativeFormatError naming `where` if one is not a finite number."""
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        raise NativeFormatError(f"{where}: non-numeric {what}") from None
    if not np.isfinite(values).all():
        raise NativeFormatError(f"{where}: non-finite {what}")
    return values


# -- WFLW ------------------------------------------------------------------------------------

def _read_wflw_list(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    names, lms, boxes, attrs = [], [], [], []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise NativeFormatError(f"{path}: cannot read ({e.strerror})") from None
    for no, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 196 + 4 + 6 + 1:
            raise NativeFormatError(f"{path}: line {no}: {len(parts)} fields, expected 207 "
                                    "(196 coordinates, 4 box, 6 attributes, image path)")
        vals = _finite(parts[:206], f"{path}: line {no}", "coordinate/box/attribute")
        lms.append(vals[:196])
        boxes.append(vals[196:200])
        attrs.append(vals[200:206])
        names.append(parts[206])
    return names, np.array(lms).reshape(-1, 98, 2), np.array(boxes).reshape(-1, 4), np.array(attrs).reshape(-1, 6)


def _find(src: Path, name: str) -> Path | None:
    if src.is_file() and src.name == name:
        return src
    hits = sorted(src.rglob(name)) if src.is_dir() else []
    return hits[0] if hits else None


def read_wflw(src: str | Path) -> Converted:
    """`list_98pt_rect_attr_{train,test}.txt` under `src` -> train, full test and six attribute subsets."""
    src = Path(src)
    found = {s: _find(src, f"list_98pt_rect_attr_{s}.txt") for s in ("train", "test")}
    if not any(found.values()):
        raise NativeFormatError(f"{src}: no list_98pt_rect_attr_train.txt or _test.txt below it")
    sets: dict[str, AnnotationSet] = {}
    train = None
    for split, path in found.items():
        if path is None:
            continue
        names, lm, box, attr = _read_wflw_list(path)
        aset = _aset("wflw", str(path), names, lm, boxes=box)
        if split == "train":
            train = aset
            continue
        sets["full"] = aset
        for j, subset in enumerate(keys.WFLW_ATTRIBUTES):
            sets[subset] = aset.subset(np.flatnonzero(attr[:, j] > 0))
    images = next((p for p in sorted(src.rglob("WFLW_images")) if p.is_dir()), None) if src.is_dir() else None
    return Converted("wflw", train, sets, images)


# -- 300W ------------------------------------------------------------------------------------

def read_pts(path: Path) -> np.ndarray:
    """One `.pts` file -> [K, 2] float64 in 0-based pixels (the files are 1-based)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise NativeFormatError(f"{path}: cannot read ({e})") from None
    m = re.search(r"n_points\s*:\s*(\d+)", text)
    body = re.search(r"\{(.*)\}", text, re.S)
    if not m or not body:
        raise NativeFormatError(f"{path}: not a .pts file (needs 'n_points:' and a {{ ... }} block)")
    rows = [r.split() for r in body.group(1).strip().splitlines() if r.strip()]
    k = int(m.group(1))
    if len(rows) != k or any(len(r) != 2 for r in rows):
        raise NativeFormatError(f"{path}: expected {k} lines of 'x y' between the braces, got {len(rows)}")
    return _finite(rows, str(path), "coordinate") - 1.0


def _300w_subset(rel: Path) -> str | None:
    parts = [p.lower() for p in rel.parent.parts]
    for subset, rules in _300W_RULES.items():
        for rule in rules:
            for i in range(len(parts) - len(rule) + 1):
                if tuple(parts[i:i + len(rule)]) == rule:
                    return subset
    return None


def read_300w(src: str | Path) -> Converted:
    """A 300W `.pts` tree -> train, full (common + challenge), common, challenge, test."""
    src = Path(src)
    if not src.is_dir():
        raise NativeFormatError(f"{src}: not a folder (expected the 300W tree of .pts files)")
    groups: dict[str, tuple[list[str], list[np.ndarray]]] = {s: ([], []) for s in _300W_RULES}
    missing_images = 0
    skipped = 0
    for pts in sorted(src.rglob("*.pts")):
        rel = pts.relative_to(src)
        subset = _300w_subset(rel)
        if subset is None:
            skipped += 1
            continue
        image = next((pts.with_suffix(e) for e in _IMAGE_EXT if pts.with_suffix(e).is_file()), None)
        if image is None:
            missing_images += 1
            image = pts.with_suffix(".jpg")
        groups[subset][0].append(image.relative_to(src).as_posix())
        groups[subset][1].append(read_pts(pts))
    sets = {s: _aset("300w", f"{src} ({s})", names, np.array(lms).reshape(len(names), 68, 2))
            for s, (names, lms) in groups.items() if names}
    if "common" in sets or "challenge" in sets:
        names = groups["common"][0] + groups["challenge"][0]
        lms = groups["common"][1] + groups["challenge"][1]
        sets["full"] = _aset("300w", f"{src} (common + challenge)", names, np.array(lms).reshape(-1, 68, 2))
    if not sets:
        raise NativeFormatError(f"{src}: no .pts file in a known 300W folder (lfpw, helen, afw, ibug, "
                                "01_Indoor, 02_Outdoor)")
    notes = []
    if missing_images:
        notes.append(f"{missing_images} .pts file(s) without an image beside them (named .jpg)")
    if skipped:
        notes.append(f"{skipped} .pts file(s) outside the known 300W folders were skipped")
    train = sets.pop("train", None)
    return Converted("300w", train, sets, src, tuple(notes))


# -- MATLAB files (COFW, AFLW) ---------------------------------------------------------------

def _h5_value(f: Any, obj: Any) -> Any:
    """An HDF5 (MATLAB v7.3) dataset as numpy, in MATLAB's row-major orientation (transposed)."""
    import h5py
    data = obj[()]
    if isinstance(data, np.ndarray) and data.dtype == object:       # a cell array of references
        flat = [_h5_value(f, f[ref]) for ref in data.T.reshape(-1)]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out
    if obj.attrs.get("MATLAB_class", b"") in (b"char", "char"):
        return "".join(chr(c) for c in np.asarray(data).T.reshape(-1))
    if isinstance(obj, h5py.Dataset) and np.ndim(data) >= 2:
        return np.asarray(data).T
    return np.asarray(data)


def load_mat(path: str | Path, names: tuple[str, ...]) -> dict[str, Any]:
    """Variables `names` of a .mat file, v7.3 (HDF5, via h5py) or older (scipy.io).

    Cell arrays come back as flat object arrays; matrices as MATLAB shows them (N x D).
    """
    path = Path(path)
    if not path.is_file():
        raise NativeFormatError(f"{path}: file not found")
    import h5py
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            missing = [n for n in names if n not in f]
            if missing:
                raise NativeFormatError(f"{path}: no variable {missing[0]!r} (has {sorted(f.keys())})")
            return {n: _h5_value(f, f[n]) for n in names}
    import scipy.io
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:   # scipy raises many types (incl. IndexError) for a corrupt file
        raise NativeFormatError(f"{path}: unreadable .mat file ({type(e).__name__}: {e})") from None
    missing = [n for n in names if n not in mat]
    if missing:
        raise NativeFormatError(f"{path}: no variable {missing[0]!r}")
    out = {}
    for n in names:
        v = mat[n]
        if v.dtype == object:
            flat = np.empty(v.size, dtype=object)
            flat[:] = [np.squeeze(x) if isinstance(x, np.ndarray) and x.dtype.kind in "US" else x
                       for x in v.reshape(-1, order="F")]
            v = flat
        out[n] = v
    return out


def _text(x: Any) -> str:
    if isinstance(x, str):
        return x
    arr = np.asarray(x)
    if arr.dtype.kind in "US":
        return str(arr.reshape(-1)[0]) if arr.size else ""
    return "".join(chr(int(c)) for c in arr.reshape(-1))


# -- COFW ------------------------------------------------------------------------------------

_COFW_VARS = {"train": ("COFW_train_color.mat", "IsTr", "phisTr", "bboxesTr"),
              "test": ("COFW_test_color.mat", "IsT", "phisT", "bboxesT")}


def read_cofw(src: str | Path, image_dir: Path | None = None) -> Converted:
    """COFW_{train,test}_color.mat -> train and full test; images written as PNG under `image_dir`.

    Rows of phis hold 29 x, 29 y, 29 occlusion flags (flags are not kept: the CSV layout has
    no column for them). Image names are `<split>/<index:04d>.png`.
    """
    import cv2
    src = Path(src)
    out: dict[str, AnnotationSet] = {}
    for split, (fname, ims_var, phis_var, box_var) in _COFW_VARS.items():
        path = _find(src, fname)
        if path is None:
            continue
        mat = load_mat(path, (ims_var, phis_var, box_var))
        phis = np.asarray(mat[phis_var], np.float64)
        ims = mat[ims_var]
        n = len(ims)
        if phis.ndim != 2 or phis.shape[1] < 58 or phis.shape[0] != n:
            raise NativeFormatError(f"{path}: {phis_var} has shape {phis.shape}, expected ({n}, 87)")
        lm = np.stack([phis[:, :29], phis[:, 29:58]], axis=2) - 1.0    # MATLAB pixels are 1-based
        bb = np.asarray(mat[box_var], np.float64).reshape(n, 4)
        boxes = np.concatenate([bb[:, :2] - 1.0, bb[:, :2] - 1.0 + bb[:, 2:]], axis=1)
        names = [f"{split}/{i:04d}.png" for i in range(n)]
        if image_dir is not None:
            (image_dir / split).mkdir(parents=True, exist_ok=True)
            for name, im in zip(names, ims):
                im = np.asarray(im)
                if im.ndim == 3:
                    im = cv2.cvtColor(im.astype(np.uint8), cv2.COLOR_RGB2BGR)
                cv2.imwrite(str(image_dir / name), im.astype(np.uint8))
        aset = _aset("cofw", str(path), names, lm, boxes=boxes)
        if split == "train":
            out["train"] = aset
        else:
            out["full"] = aset
    if not out:
        raise NativeFormatError(f"{src}: neither COFW_train_color.mat nor COFW_test_color.mat found")
    return Converted("cofw", out.pop("train", None), out, image_dir)


# -- AFLW ------------------------------------------------------------------------------------

def read_aflw(src: str | Path, train_count: int = 20000) -> Converted:
    """AFLWinfo_release.mat -> train (first `train_count` of `ra`), full test, frontal test."""
    src = Path(src)
    path = _find(src, "AFLWinfo_release.mat")
    if path is None:
        raise NativeFormatError(f"{src}: no AFLWinfo_release.mat")
    mat = load_mat(path, ("data", "bbox", "ra", "mask_new", "nameList"))
    data = np.asarray(mat["data"], np.float64)
    n = data.shape[0]
    if data.ndim != 2 or data.shape[1] != 38:
        raise NativeFormatError(f"{path}: data has shape {data.shape}, expected (N, 38)")
    ra = np.asarray(mat["ra"]).reshape(-1).astype(np.int64) - 1      # MATLAB indices are 1-based
    if sorted(ra.tolist()) != list(range(n)):
        raise NativeFormatError(f"{path}: ra is not a permutation of 1..{n}")
    names = [_text(x) for x in mat["nameList"]]
    if len(names) != n:
        raise NativeFormatError(f"{path}: nameList has {len(names)} entries for {n} faces")
    lm = np.stack([data[:, :19], data[:, 19:]], axis=2) - 1.0
    bbox = np.asarray(mat["bbox"], np.float64).reshape(n, 4) - 1.0     # x1 x2 y1 y2
    x1, x2, y1, y2 = bbox.T
    box_size = np.sqrt((x2 - x1) * (y2 - y1))
    bad = np.flatnonzero(~(box_size > 0))
    if bad.size:
        raise NativeFormatError(f"{path}: bbox of face {bad[0] + 1} has zero size")
    centers = np.stack([(x1 + x2) / 2, (y1 + y2) / 2], axis=1)
    boxes = np.stack([x1, y1, x2, y2], axis=1)
    visible = np.asarray(mat["mask_new"]).reshape(n, 19) > 0
    full = _aset("aflw", str(path), names, lm, boxes=boxes, centers=centers, scales=box_size / 200,
                 box_sizes=box_size)
    train_idx, test_idx = ra[:train_count], ra[train_count:]
    test = full.subset(test_idx)
    return Converted("aflw", full.subset(train_idx),
                     {"full": test, "frontal": test.subset(np.flatnonzero(visible[test_idx].all(axis=1)))},
                     None)


FORMATS = {"wflw": read_wflw, "300w": read_300w, "cofw": read_cofw, "aflw": read_aflw}


# -- writing and the command -----------------------------------------------------------------

def convert(fmt: str, src: str | Path, out: str | Path, images: str | Path | None = None,
            with_box: bool = False, train_count: int = 20000) -> list[Path]:
    """Convert one native release under `src` into the CSV layout under `out`; returns the CSVs.

    train_count: AFLW only, how many leading entries of `ra` form the train split.
    """
    if fmt not in FORMATS:
        raise NativeFormatError(f"unknown format {fmt!r}; expected one of {sorted(FORMATS)}")
    folder = Path(out) / fmt
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "cofw":
        conv = read_cofw(src, folder / "images")
    elif fmt == "aflw":
        conv = read_aflw(src, train_count)
    else:
        conv = FORMATS[fmt](src)
    written = []
    jobs = ([("train", "full", conv.train)] if conv.train is not None else [])
    jobs += [("test", s, conv.test[s]) for s in test_subsets(fmt) if s in conv.test]
    for split, subset, aset in jobs:
        written.append(write_csv(aset, folder / csv_name(fmt, split, subset), with_box=False))
        if with_box:
            boxed = aset if aset.has_boxes else _with_landmark_box(aset)
            written.append(write_csv(boxed, folder / csv_name(fmt, split, subset, True), with_box=True))
    target = Path(images) if images else conv.images
    link = folder / "images"
    if target is not None and fmt != "cofw" and not link.exists():
        os.symlink(Path(target).resolve(), link, target_is_directory=True)
    for note in conv.notes:
        print(f"atf-data convert: note: {note}", file=sys.stderr)
    return written


def _with_landmark_box(aset: AnnotationSet) -> AnnotationSet:
    from dataclasses import replace
    lo, hi = aset.landmarks.min(axis=1), aset.landmarks.max(axis=1)
    return replace(aset, boxes=np.concatenate([lo, hi], axis=1).astype(np.float32))


def convert_main(argv: list[str]) -> int:
    """`atf-data convert --format FMT SRC --out DIR [--images FOLDER] [--with-box]`."""
    from atf.cli.common import HelpFormatter
    ap = argparse.ArgumentParser(prog="atf-data convert", formatter_class=HelpFormatter,
                                 description="Convert an official native annotation release to the CSV layout.",
                                 epilog="example:\n  atf-data convert --format 300w /data/300W --out /data/real")
    ap.add_argument("--format", required=True, choices=sorted(FORMATS), help="which release SRC is")
    ap.add_argument("src", help="folder (or file) of the native release")
    ap.add_argument("--out", required=True, help="data root; files go to OUT/<dataset>/")
    ap.add_argument("--images", help="folder the image names are relative to (linked as OUT/<dataset>/images)")
    ap.add_argument("--with-box", action="store_true", help="also write _with_box files (the release's boxes)")
    ap.add_argument("--train-count", type=int, default=20000, help="AFLW: leading entries of `ra` that are train")
    args = ap.parse_args(argv)
    try:
        written = convert(args.format, args.src, args.out, args.images, args.with_box, args.train_count)
    except ValueError as e:
        print(f"atf-data convert: {e}", file=sys.stderr)
        return 2
    for p in written:
        print(p)
    return 0
