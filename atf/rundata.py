"""Data of one run: each dataset's splits, schemes and torch datasets, loaded once.

Validation data comes only from the heads the run SELECTS (`RunConfig.selected_heads`): the
target, and in joint/novel runs also each fine-tuned head (the "target" of its stage). A seeded
`data.val_fraction` of those datasets' training split is held out for the whole run, so no stage
ever trains on the images another stage selects with. Auxiliary datasets keep their whole training
split. Scoring lives in `atf.evaluate`.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from atf import cropcache, datasets, keys, transforms
from atf.config import RunConfig, crop_cache_on
from atf.data import LandmarkDataset, collate
from atf.readers import AnnotationSet
from atf.schemes import get_scheme

__all__ = ["RunData"]


def _log(msg: str) -> None:
    """Crop-cache lines (a build takes a while, once): on stderr, where a trial's log shows them."""
    print(f"atf: {msg}", file=sys.stderr, flush=True)


class RunData:
    """Splits, schemes and torch datasets of every dataset a run touches."""

    def __init__(self, cfg: RunConfig, skip: dict[str, set[int]] | None = None, splits: bool = True,
                 cache_workers: int = 1) -> None:
        """`splits=False`: test sets only (`atf-eval CHECKPOINT` reads no training file).
        `cache_workers`: processes that build a missing crop cache (data.crop_cache)."""
        self.cfg = cfg
        self.skip = skip or {}  # csv path -> bad data rows to leave out (atf.datacheck, data.bad_rows: skip)
        self.notes: list[str] = []
        self.skipped = 0
        self._train: dict[str, AnnotationSet] = {}
        self._full: dict[str, AnnotationSet] = {}   # each train file as read: what its crop cache holds
        self._val: dict[str, AnnotationSet | None] = {}
        self._sets: dict[tuple[str, bool], LandmarkDataset] = {}  # built once per run
        self._crops: dict[tuple[str, str], cropcache.CropCache] = {}
        self.cache_workers = max(1, int(cache_workers))
        datasets.apply_registry(cfg.data)  # user YAML schemes/datasets (a novel dataset, no code)
        self.crop_cache = crop_cache_on(cfg.data.crop_cache, datasets.data_provenance(cfg.data))
        names = [*cfg.datasets, *([cfg.novel] if cfg.novel else [])]
        if not splits:
            return
        for name in names:
            datasets.get_dataset(name)  # unknown dataset: one clear error before anything loads
        for name in names:
            self._split(name)

    # -- metadata -------------------------------------------------------------------------------
    def scheme(self, name: str):
        return get_scheme(datasets.get_dataset(name).scheme)

    def num_points(self, name: str) -> int:
        return self.scheme(name).num_points

    def images_dir(self, name: str) -> Path:
        return datasets.images_dir(name, root=self.cfg.data)

    def load(self, name: str, split: str, subset: str = "full") -> AnnotationSet:
        rows = self.skip.get(str(datasets.csv_path(name, split, subset, root=self.cfg.data))) if self.skip else None
        return datasets.load_split(name, split, subset, root=self.cfg.data, skip_rows=rows or ())

    def train_size(self, name: str) -> int:
        return len(self._train[name].images)

    def export_meta(self, name: str, kind: str) -> dict[str, Any]:
        cfg = self.cfg
        return {"dataset": name, "scheme": self.scheme(name).name, "num_points": self.num_points(name),
                "kind": kind, "input_size": cfg.input_size, "heatmap_size": cfg.heatmap_size,
                "crop": cfg.data.crop, "crop_margin": cfg.data.crop_margin,
                "flip_perm": [int(i) for i in self.scheme(name).flip_perm],
                "decode": cfg.eval.decode, "backbone": cfg.model.backbone}

    # -- splits ---------------------------------------------------------------------------------
    def _split(self, name: str) -> None:
        """Train split; a selected head's also minus a seeded validation share (module docstring)."""
        cfg = self.cfg.data
        full = self._full[name] = self.load(name, "train")
        rng = np.random.default_rng([self.cfg.seed, zlib.crc32(name.encode())])
        order = rng.permutation(len(full.images))
        if cfg.max_train:
            order = order[:cfg.max_train]
        frac = cfg.val_fraction if name in self.cfg.selected_heads else 0.0
        n_val = int(round(frac * len(order))) if frac > 0 else 0
        if frac > 0 and len(order) > 1:
            n_val = min(max(n_val, 1), len(order) - 1)
        self._val[name] = full.subset(np.sort(order[:n_val])) if n_val else None
        self._train[name] = full.subset(np.sort(order[n_val:]))

    def val_size(self, name: str) -> int:
        val = self._val.get(name)
        return len(val.images) if val is not None else 0

    # -- torch datasets -------------------------------------------------------------------------
    def dataset(self, name: str, aset: AnnotationSet, train: bool, augment: bool | None = None,
                crop: str | None = None, full: AnnotationSet | None = None, cached: bool = True) -> LandmarkDataset:
        """Torch dataset of `aset`; augmented when `train` (unless `augment` is False).

        With the crop cache on, its pixels come from the cache of `full`, the file `aset` was cut
        from: a training file's (augment view, which its validation share reads too), or a test
        file's (exact view: the very crops the photos give).
        """
        cfg = self.cfg
        augment = train if augment is None else augment
        crops = None
        if cached and self.crop_cache:
            crops = self.crops(name, full if full is not None else aset, crop or cfg.data.crop,
                               view="augment" if full is not None else "exact")
        return LandmarkDataset(
            aset, self.images_dir(name), self.scheme(name).flip_perm, cfg.input_size,
            augment=cfg.augment if augment else None, crop=crop or cfg.data.crop, crop_margin=cfg.data.crop_margin,
            heatmap_size=cfg.heatmap_size if cfg.model.backbone != "ocn" else None,
            sigma=cfg.sigma(name), seed=cfg.seed, skip_unreadable=cfg.data.skip_unreadable, crops=crops)

    def crops(self, name: str, full: AnnotationSet, crop: str, view: str) -> cropcache.CropCache:
        """The crop cache of a whole annotation file: opened, or built on first use (atf.cropcache)."""
        key = (full.source, f"{view}:{crop}")
        if key not in self._crops:
            cfg = self.cfg
            plain = self.dataset(name, full, train=False, crop=crop, cached=False)
            geometry = (cropcache.augment_geometry(cfg.augment, crop, cfg.data.crop_margin, cfg.input_size)
                        if view == "augment" else cropcache.exact_geometry(crop, cfg.data.crop_margin, cfg.input_size))
            self._crops[key] = cropcache.ensure(plain, geometry, self.cache_dir, self.cache_workers, log=_log)
        return self._crops[key]

    def crop_caches(self) -> list[cropcache.CropCache]:
        """The crop caches this run has opened so far."""
        return list(self._crops.values())

    @property
    def cache_dir(self) -> Path:
        return Path(self.cfg.data.cache_dir).expanduser() if self.cfg.data.cache_dir else cropcache.default_cache_dir()

    def prepare_crops(self, tests: bool = True) -> int:
        """Open or build every crop cache this run will read (train files, then test files); returns
        how many. The sweep's driver calls it before any trial starts, so trials only open them."""
        if not self.crop_cache:
            return 0
        for name in self._train:
            self.crops(name, self._full[name], self.cfg.data.crop, "augment")
        for head in self.cfg.selected_heads if tests else ():
            self.test_sets(head)
            if keys.PROTOCOL_OCN in self.cfg.protocols:
                self.test_sets(head, protocol=keys.PROTOCOL_OCN)
        return len(self._crops)

    def mean_crop_coords(self, name: str) -> np.ndarray:
        """Mean training shape [K, 2] in crop units of the un-augmented crop (no image is read)."""
        ds = self.dataset(name, self._train[name], train=False, cached=False)
        identity = transforms.AugmentParams.identity()
        pts = [transforms.transform_points(ds.aset.landmarks[i], ds.affine(i, identity)) for i in range(len(ds))]
        return transforms.input_px_to_crop(np.mean(pts, axis=0), self.cfg.input_size).astype(np.float32)

    def _split_set(self, name: str, train: bool, augment: bool | None = None) -> LandmarkDataset | None:
        """The train or validation dataset of `name`, made once so its image cache survives epochs."""
        augment = train if augment is None else augment
        key = (name, train, augment)
        if key not in self._sets:
            aset = self._train[name] if train else self._val[name]
            self._sets[key] = (self.dataset(name, aset, train=train, augment=augment, full=self._full[name])
                               if aset is not None else None)
        return self._sets[key]

    def val_set(self, name: str) -> LandmarkDataset | None:
        return self._split_set(name, train=False)

    def test_sets(self, name: str, subsets: tuple[str, ...] | None = None,
                  protocol: str = keys.PROTOCOL_BENCHMARK) -> dict[str, LandmarkDataset]:
        """Every test subset whose file exists; a missing one is noted, not fatal (public copies lack some).

        protocol `ocn` crops each face as the public OCN code does (`transforms.ocn_test_affine`).
        """
        crop = "ocn_test" if protocol == keys.PROTOCOL_OCN else None
        out = {}
        for subset in subsets or datasets.test_subsets(name):
            try:
                datasets.csv_path(name, "test", subset, root=self.cfg.data)
            except datasets.DatasetError as e:
                self.notes.append(f"test subset {name}/{subset} not evaluated: {e}")
                continue
            aset = self.load(name, "test", subset)
            if self.cfg.data.max_test and len(aset.images) > self.cfg.data.max_test:
                aset = aset.subset(np.arange(self.cfg.data.max_test))
            out[subset] = self.dataset(name, aset, train=False, crop=crop)   # a capped set: the cache of its rows
        return out

    def train_loader(self, names: tuple[str, ...], plan: list[tuple[int, np.ndarray]], epoch: int,
                     plain: tuple[str, ...] = ()) -> DataLoader:
        """Loader yielding the plan's batches in order (one dataset per batch); `plain` datasets
        are not augmented (auxiliaries under augment.auxiliary: false)."""
        sets = [self._split_set(n, train=True, augment=n not in plain) for n in names]
        batches = [[(epoch, d, int(i)) for i in idx] for d, idx in plan]
        workers = self.cfg.data.num_workers
        return DataLoader(_Multi(sets), batch_sampler=batches, num_workers=workers, collate_fn=collate,
                          pin_memory=torch.cuda.is_available(), prefetch_factor=4 if workers else None)


class _Multi(Dataset):
    """Several datasets addressed by (epoch, dataset position, index); the epoch seeds augmentation."""

    def __init__(self, sets: list[LandmarkDataset]) -> None:
        self.sets = sets

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets)

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        epoch, d, i = key
        ds = self.sets[d]
        ds.set_epoch(epoch)
        return ds[i]

    def __getitems__(self, keys: list[tuple[int, int, int]]) -> dict:
        """A batch of the plan (one dataset, one epoch), made whole by that dataset."""
        epoch, d, _ = keys[0]
        ds = self.sets[d]
        ds.set_epoch(epoch)
        return ds.__getitems__([i for _, _, i in keys])
