"""Dataset registry: name -> scheme, annotation file stems per split/subset, column style.

This is the single source of the on-disk names (docs/design.md, "Data on disk"): readers, the
SynthFace generator, the converter and the report all ask it instead of spelling file names.
The built-in table below is plain data; a user adds a dataset with a YAML file (`register_file`,
or `DataConfig.registry`) holding `datasets: [{name, scheme, style, box_size, train, test}]`
(test: an ordered mapping subset -> file stem; `full` first) next to any new `schemes:`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import numpy as np
import yaml

from atf import keys
from atf.config import ConfigError, DataConfig, DatasetPaths, RunConfig
from atf.readers import AnnotationError, AnnotationSet, Style, read_csv
from atf.schemes import SchemeError, get_scheme
from atf.schemes import register_file as register_scheme_file

__all__ = [
    "DatasetError", "DatasetSpec", "get_dataset", "dataset_names", "test_subsets", "register_file",
    "register_dataset", "csv_name", "csv_path", "annotations_dir", "images_dir", "load_split",
    "normalizers", "data_provenance", "apply_registry", "dataset_for_points",
]

SPLITS = ("train", "test")


class DatasetError(ValueError):
    """Unknown dataset/split/subset or a bad registry entry; one line naming it."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    scheme: str
    style: Style                       # CSV column style ("original" or "cofw")
    box_size: bool                     # files carry AFLW's box_size column (the NME normaliser)
    train: str                         # file stem of the train split
    test: tuple[tuple[str, str], ...]  # (subset, file stem) in paper-table order, "full" first
    sizes: tuple[int, int] = (0, 0)    # published faces: train split, all test subsets together (0: unknown);
                                       # what `atf-sweep --dry-run` sizes a sweep with while the files are absent

    @property
    def subsets(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.test)


# Built-in datasets (docs/design.md table); test subsets in the order of the paper's tables.
_BUILTIN: list[dict[str, Any]] = [
    {"name": "wflw", "scheme": "wflw98", "style": "original", "box_size": False, "train": "wflw_train",
     "test": {"full": "wflw_test", **{a: f"wflw_test_{a}" for a in keys.WFLW_ATTRIBUTES}},
     "sizes": {"train": 7500, "test": 2500 + 326 + 314 + 698 + 206 + 736 + 773}},
    {"name": "300w", "scheme": "300w68", "style": "original", "box_size": False, "train": "300w_train",
     "test": {"full": "300w_valid", "common": "300w_valid_common", "challenge": "300w_valid_challenge",
              "test": "300w_test"}, "sizes": {"train": 3148, "test": 689 + 554 + 135 + 600}},
    {"name": "cofw", "scheme": "cofw29", "style": "cofw", "box_size": False, "train": "cofw_train",
     "test": {"full": "cofw_test"}, "sizes": {"train": 1345, "test": 507}},
    {"name": "aflw", "scheme": "aflw19", "style": "original", "box_size": True, "train": "aflw_train",
     "test": {"full": "aflw_test", "frontal": "aflw_test_frontal"}, "sizes": {"train": 20000, "test": 4386 + 1314}},
]
_KEYS = {"name", "scheme", "style", "box_size", "train", "test", "sizes"}
_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")
_DATASETS: dict[str, DatasetSpec] = {}
_LOADED: set[Path] = set()


def _spec_from_dict(d: Any, where: str) -> DatasetSpec:
    if not isinstance(d, dict):
        raise DatasetError(f"{where}: a dataset must be a mapping")
    unknown, missing = sorted(set(d) - _KEYS), sorted({"name", "scheme", "test"} - set(d))
    if unknown or missing:
        what = f"unknown key {unknown[0]!r}" if unknown else f"missing key {missing[0]!r}"
        raise DatasetError(f"{where}: {what}; dataset keys are {sorted(_KEYS)}")
    name = str(d["name"])
    if not _NAME.fullmatch(name):
        raise DatasetError(f"{where}: dataset name {name!r}: lower-case letters, digits and _ only "
                           "(it names metrics, files and folders)")
    try:
        get_scheme(str(d["scheme"]))
    except SchemeError as e:
        raise DatasetError(f"{where}: dataset {name}: {e}") from None
    style = d.get("style", "original")
    if style not in ("original", "cofw"):
        raise DatasetError(f"{where}: dataset {name}.style: {style!r} is not 'original' or 'cofw'")
    test = d["test"]
    if not isinstance(test, dict) or not test:
        raise DatasetError(f"{where}: dataset {name}.test: expected a mapping subset -> file stem")
    for key, value in [*((f"test.{k}", k) for k in test), *((f"test.{k}", v) for k, v in test.items()),
                       ("train", d.get("train", f"{name}_train"))]:
        if not _NAME.fullmatch(str(value)):
            raise DatasetError(f"{where}: dataset {name}.{key}: {str(value)!r}: lower-case letters, digits and _ "
                               "only (subsets name metrics and files; stems name CSVs under the data root)")
    sizes = d.get("sizes", {})
    if not isinstance(sizes, dict) or set(sizes) - {"train", "test"} or \
            not all(isinstance(v, int) and v >= 0 for v in sizes.values()):
        raise DatasetError(f"{where}: dataset {name}.sizes: expected {{train: N, test: N}} (face counts)")
    return DatasetSpec(name=name, scheme=str(d["scheme"]), style=style, box_size=bool(d.get("box_size", False)),
                       train=str(d.get("train", f"{name}_train")),
                       test=tuple((str(k), str(v)) for k, v in test.items()),
                       sizes=(int(sizes.get("train", 0)), int(sizes.get("test", 0))))


def register_dataset(spec: DatasetSpec) -> None:
    _DATASETS[spec.name] = spec


def _builtin() -> None:
    if not _DATASETS:
        for d in _BUILTIN:
            register_dataset(_spec_from_dict(d, "atf.datasets"))


def register_file(path: str | Path) -> list[str]:
    """Register the schemes, pair tables and datasets of a registry YAML; returns dataset names."""
    _builtin()
    path = Path(path).resolve()
    if path in _LOADED:
        return []
    register_scheme_file(path)
    data = yaml.safe_load(path.read_text()) or {}
    specs = data.get("datasets", []) if isinstance(data, dict) else []
    if not isinstance(specs, list):
        raise DatasetError(f"{path}: datasets: expected a list")
    names = []
    for i, d in enumerate(specs):
        spec = _spec_from_dict(d, f"{path}: datasets[{i}]")
        register_dataset(spec)
        names.append(spec.name)
    _LOADED.add(path)
    return names


def apply_registry(data: DataConfig) -> None:
    """Register the extra YAML files a run config names (idempotent)."""
    for f in data.registry:
        register_file(f)


def dataset_names() -> list[str]:
    _builtin()
    return list(_DATASETS)


def get_dataset(name: str) -> DatasetSpec:
    _builtin()
    try:
        return _DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(_DATASETS)}") from None


def check_datasets(cfg: RunConfig) -> None:
    """Every dataset `cfg` names exists (after its own registry files); ConfigError naming the key.
    The dataset half of validating a config: `atf-train` and `atf-sweep` both call it."""
    if cfg.data.registry:
        apply_registry(cfg.data)
    named = [("target", cfg.target), *((f"aux[{i}]", a) for i, a in enumerate(cfg.aux))]
    if cfg.novel:
        named.append(("novel", cfg.novel))
    for where, name in named:
        try:
            get_dataset(name)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"{where}: {str(e).strip(chr(39))}") from None


def test_subsets(name: str) -> tuple[str, ...]:
    """Test subsets of `name` in paper-table order ("full" first)."""
    return get_dataset(name).subsets


test_subsets.__test__ = False   # a public name starting with "test": keep pytest from collecting it


def dataset_for_points(num_points: int) -> str:
    """The one registered dataset whose scheme has `num_points` points (for `atf-eval`)."""
    hits = [n for n, s in _all().items() if get_scheme(s.scheme).num_points == num_points]
    if len(hits) != 1:
        why = "no dataset" if not hits else f"several datasets ({', '.join(hits)})"
        raise DatasetError(f"{why} with {num_points} points; name one with --dataset")
    return hits[0]


def _all() -> dict[str, DatasetSpec]:
    _builtin()
    return _DATASETS


def _stem(name: str, split: str, subset: str) -> str:
    spec = get_dataset(name)
    if split == "train":
        if subset != "full":
            raise DatasetError(f"dataset {name}: the train split has no subset {subset!r}")
        return spec.train
    if split == "test":
        stems = dict(spec.test)
        if subset not in stems:
            raise DatasetError(f"dataset {name}: unknown test subset {subset!r}; known: {', '.join(stems)}")
        return stems[subset]
    raise DatasetError(f"dataset {name}: unknown split {split!r}; expected one of {SPLITS}")


def csv_name(name: str, split: str, subset: str = "full", with_box: bool = False) -> str:
    """File name of a split, e.g. face_landmarks_wflw_test_largepose_with_box.csv."""
    return f"face_landmarks_{_stem(name, split, subset)}{'_with_box' if with_box else ''}.csv"


def _resolve(name: str, root: str | Path | DataConfig | None,
             paths: DatasetPaths | None) -> tuple[Path, DatasetPaths]:
    if isinstance(root, DataConfig):
        apply_registry(root)
        paths = paths or root.paths.get(name)
        root = root.root
    paths = paths or DatasetPaths()
    return Path(root if root is not None else DataConfig().root), paths


def annotations_dir(name: str, root: str | Path | DataConfig | None = None,
                    paths: DatasetPaths | None = None) -> Path:
    """Folder of the CSVs: `paths.annotations`, else <root>/<name>."""
    root_p, paths = _resolve(name, root, paths)
    return Path(paths.annotations) if paths.annotations else root_p / name


def images_dir(name: str, root: str | Path | DataConfig | None = None,
               paths: DatasetPaths | None = None) -> Path:
    """Folder the CSV image names are relative to: `paths.images`, else <annotations>/images."""
    _, p = _resolve(name, root, paths)
    return Path(p.images) if p.images else annotations_dir(name, root, paths) / "images"


def csv_path(name: str, split: str, subset: str = "full", paths: DatasetPaths | None = None,
             root: str | Path | DataConfig | None = None) -> Path:
    """Existing CSV of a split, preferring the `_with_box` file; error naming both when absent."""
    folder = annotations_dir(name, root, paths)
    boxed, plain = folder / csv_name(name, split, subset, True), folder / csv_name(name, split, subset)
    for p in (boxed, plain):
        if p.is_file():
            return p
    raise DatasetError(f"dataset {name} {split}/{subset}: neither {boxed} nor {plain.name} exists")


def load_split(name: str, split: str, subset: str = "full", root: str | Path | DataConfig | None = None,
               paths: DatasetPaths | None = None, skip_rows: Collection[int] = ()) -> AnnotationSet:
    """Read one split/subset of a dataset as an AnnotationSet (point count checked); `skip_rows`
    (1-based data rows) are left out (atf.datacheck's bad rows under data.bad_rows: skip).

    `root` may be a DataConfig: its per-dataset paths and registry files are honoured.
    """
    if isinstance(root, DataConfig):
        apply_registry(root)
    spec = get_dataset(name)
    path = csv_path(name, split, subset, paths=paths, root=root)
    return read_csv(path, dataset=spec.name, scheme=spec.scheme, skip_rows=skip_rows)


def normalizers(aset: AnnotationSet) -> np.ndarray:
    """[N] NME denominators in pixels from the scheme: eye-corner distance, or the box size."""
    scheme = get_scheme(aset.scheme or get_dataset(aset.dataset).scheme)
    norm = scheme.normalizer
    if norm.kind == "box":
        d = aset.box_sizes.astype(np.float64)
        what = "box_size"
    else:
        a, b = norm.points
        d = np.linalg.norm(aset.landmarks[:, a].astype(np.float64) - aset.landmarks[:, b], axis=1)
        what = f"distance of points {a} and {b}"
    bad = np.flatnonzero(~(d > 0))
    if bad.size:
        raise AnnotationError(f"{aset.source}: row {bad[0] + 1}: NME normaliser ({what}) is {d[bad[0]]:g}")
    return d


def data_provenance(root: str | Path | DataConfig) -> str:
    """"synthetic(scale=S,seed=N)" when a SynthFace marker sits at the data root, else "real"."""
    folder = Path(root.root if isinstance(root, DataConfig) else root)
    marker = folder / keys.SYNTH_MARKER
    if not marker.is_file():
        return "real"
    try:
        info = json.loads(marker.read_text())
        size = f",size={int(info['image_size'])}" if info.get("image_size") else ""
        return f"synthetic(scale={info['scale']:g},seed={int(info['seed'])}{size})"
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{marker}: unreadable SynthFace marker ({e})") from None
