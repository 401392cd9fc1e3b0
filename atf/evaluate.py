"""Data for a run, and evaluation of a head in original image pixels.

`RunData` loads each dataset's splits once, carves the validation split from
the training data (seeded), and builds the torch datasets and loaders.
`evaluate_head` predicts a split and scores it; `report_tests` scores every
test subset of a dataset and writes the CED curves and predictions the report
uses. NME is always computed after mapping predictions back to the original
image, with the dataset's own normaliser (eye corners or AFLW's box size).
`checkpoint_main` is `atf-eval CHECKPOINT`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from atf import datasets, keys, metrics, transforms
from atf.config import RunConfig
from atf.data import LandmarkDataset, collate, flip_average
from atf.heatmaps import decode, hm_to_crop
from atf.losses import landmark_loss
from atf.readers import AnnotationSet, write_csv
from atf.schemes import get_scheme
from atf.transforms import to_original

CED_RANGE = 0.5  # the CED artifact spans NME 0..0.5 so that weak models still show a curve

__all__ = ["RunData", "HeadEval", "TestReport", "evaluate_head", "report_tests", "predict", "checkpoint_main"]


class RunData:
    """Splits, schemes and torch datasets of every dataset a run touches."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.notes: list[str] = []
        self.skipped = 0
        self._train: dict[str, AnnotationSet] = {}
        self._val: dict[str, AnnotationSet | None] = {}
        self._sets: dict[tuple[str, bool], LandmarkDataset] = {}  # built once: image caches live here
        datasets.apply_registry(cfg.data)  # user YAML schemes/datasets (a novel dataset, no code)
        names = [*cfg.datasets, *([cfg.novel] if cfg.novel else [])]
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
        return datasets.load_split(name, split, subset, root=self.cfg.data)

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
        """Train split minus a seeded validation share (the honest model-selection data)."""
        cfg = self.cfg.data
        full = self.load(name, "train")
        rng = np.random.default_rng([self.cfg.seed, zlib.crc32(name.encode())])
        order = rng.permutation(len(full.images))
        if cfg.max_train:
            order = order[:cfg.max_train]
        n_val = int(round(cfg.val_fraction * len(order))) if cfg.val_fraction > 0 else 0
        if cfg.val_fraction > 0 and len(order) > 1:
            n_val = min(max(n_val, 1), len(order) - 1)
        self._val[name] = full.subset(np.sort(order[:n_val])) if n_val else None
        self._train[name] = full.subset(np.sort(order[n_val:]))

    # -- torch datasets -------------------------------------------------------------------------
    def dataset(self, name: str, aset: AnnotationSet, train: bool) -> LandmarkDataset:
        cfg = self.cfg
        return LandmarkDataset(
            aset, self.images_dir(name), self.scheme(name).flip_perm, cfg.input_size,
            augment=cfg.augment if train else None, crop=cfg.data.crop, crop_margin=cfg.data.crop_margin,
            heatmap_size=cfg.heatmap_size if cfg.model.backbone != "ocn" else None,
            sigma=cfg.sigma(name), seed=cfg.seed, skip_unreadable=cfg.data.skip_unreadable,
            cache_images=cfg.data.cache_images)

    def mean_crop_coords(self, name: str) -> np.ndarray:
        """Mean training shape [K, 2] in crop units of the un-augmented crop (no image is read)."""
        ds = self.dataset(name, self._train[name], train=False)
        identity = transforms.AugmentParams.identity()
        pts = [transforms.transform_points(ds.aset.landmarks[i], ds.affine(i, identity)) for i in range(len(ds))]
        return transforms.input_px_to_crop(np.mean(pts, axis=0), self.cfg.input_size).astype(np.float32)

    def _split_set(self, name: str, train: bool) -> LandmarkDataset | None:
        """The train or validation dataset of `name`, made once so its image cache survives epochs."""
        key = (name, train)
        if key not in self._sets:
            aset = self._train[name] if train else self._val[name]
            self._sets[key] = self.dataset(name, aset, train=train) if aset is not None else None
        return self._sets[key]

    def val_set(self, name: str) -> LandmarkDataset | None:
        return self._split_set(name, train=False)

    def test_sets(self, name: str, subsets: tuple[str, ...] | None = None) -> dict[str, LandmarkDataset]:
        """Every test subset whose file exists; a missing one is noted, not fatal (public copies lack some)."""
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
            out[subset] = self.dataset(name, aset, train=False)
        return out

    def train_loader(self, names: tuple[str, ...], plan: list[tuple[int, np.ndarray]], epoch: int) -> DataLoader:
        """Loader yielding the plan's batches in order (one dataset per batch)."""
        sets = [self._split_set(n, train=True) for n in names]
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


# -- evaluation -----------------------------------------------------------------------------------

@dataclass
class HeadEval:
    pred: np.ndarray        # [N, K, 2] original pixels
    errors: np.ndarray      # [N] NME per image (fraction)
    nme: float              # percent
    loss: float             # mean of the head's own loss


@torch.no_grad()
def predict(model: torch.nn.Module, head: str, ds: LandmarkDataset, cfg: RunConfig,
            device: torch.device) -> tuple[np.ndarray, float]:
    """Predictions of `head` on `ds` in original pixels, and the mean own loss."""
    model.eval()
    kind = model.kind
    loader = DataLoader(ds, batch_size=max(cfg.optim.batch_size, 32), shuffle=False,
                        num_workers=cfg.data.num_workers, collate_fn=collate)
    preds, loss_sum, n = [], 0.0, 0
    order = []

    def run(x: torch.Tensor) -> torch.Tensor:
        return model(x, heads=[head])[head]

    for batch in loader:
        if "image" not in batch:  # all unreadable (skip mode): their rows stay NaN and are noted
            continue
        x = batch["image"].to(device)
        out = flip_average(run, x, ds.flip_perm, kind) if cfg.eval.flip_test else run(x)
        gt = batch["heatmap" if kind == "heatmap" else "coords"].to(device)
        loss_sum += float(landmark_loss(cfg.loss_kind, out, gt)) * len(x)
        n += len(x)
        crop = hm_to_crop(decode(out, cfg.eval.decode), out.shape[-1]) if kind == "heatmap" else out
        preds.append(to_original(crop.float().cpu().numpy(), batch["inverse"].numpy(), cfg.input_size))
        order.append(batch["index"].numpy())
    if not preds:
        raise ValueError(f"{ds.aset.source}: no readable image to evaluate")
    pred = np.full((len(ds), *preds[0].shape[1:]), np.nan, dtype=np.float64)
    pred[np.concatenate(order)] = np.concatenate(preds)
    return pred, loss_sum / max(n, 1)


def evaluate_head(model: torch.nn.Module, head: str, ds: LandmarkDataset | None, data: RunData,
                  device: torch.device) -> HeadEval | None:
    if ds is None:
        return None
    pred, loss = predict(model, head, ds, data.cfg, device)
    ok = np.isfinite(pred).all(axis=(1, 2))
    if not ok.all():
        data.notes.append(f"{ds.aset.source}: {int((~ok).sum())} unreadable images skipped in evaluation")
    errors = metrics.nme(pred[ok], ds.aset.landmarks[ok], datasets.normalizers(ds.aset)[ok])
    return HeadEval(pred, errors, float(errors.mean() * 100.0), loss)


@dataclass
class TestReport:
    metrics: dict[str, float] = field(default_factory=dict)
    ced: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    predictions: dict[tuple[str, str], Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def report_tests(model: torch.nn.Module, head: str, data: RunData, device: torch.device,
                 out_dir: Path | None = None, subsets: tuple[str, ...] | None = None) -> TestReport:
    """NME / FR@0.1 / AUC@0.1 on each test subset; CED and predictions written under out_dir."""
    rep = TestReport()
    for subset, ds in data.test_sets(head, subsets).items():
        ev = evaluate_head(model, head, ds, data, device)
        summary = metrics.summarize(ev.errors)
        for m, v in summary.items():
            rep.metrics[keys.test_metric(head, subset, m)] = float(v)
        curve = metrics.ced(ev.errors, CED_RANGE, steps=501)  # AUC/FR use 0.1; the curve shows more
        rep.ced[(head, subset)] = curve
        if out_dir is not None:
            ced_path = Path(out_dir) / keys.ced_artifact(head, subset)
            ced_path.parent.mkdir(parents=True, exist_ok=True)
            np.savetxt(ced_path, curve, delimiter=",", header="threshold,fraction", comments="", fmt="%.6f")
            pred_path = Path(out_dir) / keys.pred_artifact(head, subset)
            pred_path.parent.mkdir(parents=True, exist_ok=True)
            write_csv(dataclasses.replace(ds.aset, landmarks=ev.pred.astype(np.float32)), pred_path)
            rep.predictions[(head, subset)] = pred_path
    rep.notes.extend(data.notes)
    data.notes.clear()
    return rep


# -- atf-eval CHECKPOINT ---------------------------------------------------------------------------

def checkpoint_main(argv: list[str]) -> int:
    """`atf-eval CHECKPOINT [--dataset D] [--subsets a,b] [--data-root DIR] [--flip] [--json]`."""
    from atf.checkpoint import load_checkpoint
    from atf.config import from_dict, override
    from atf.models import build_model

    p = argparse.ArgumentParser(prog="atf-eval", description="Score a checkpoint on test subsets.")
    p.add_argument("checkpoint")
    p.add_argument("--dataset", help="head to evaluate (default: the run's target)")
    p.add_argument("--subsets", help="comma-separated test subsets (default: all present)")
    p.add_argument("--data-root", help="override data.root of the run")
    p.add_argument("--flip", action="store_true", help="test-time flip averaging")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    state = load_checkpoint(Path(a.checkpoint))
    cfg = from_dict(RunConfig, state["run_config"])
    upd: dict[str, Any] = {"eval.flip_test": a.flip or cfg.eval.flip_test, "device": a.device}
    if a.data_root:
        upd["data.root"] = a.data_root
    cfg = override(cfg, upd)
    head = a.dataset or cfg.target
    if head not in state["heads"]:
        print(f"atf-eval: {a.checkpoint}: no head {head!r}; heads: {sorted(state['heads'])}", file=sys.stderr)
        return 2
    from atf.train import pick_device
    device = pick_device(cfg.device)
    model = build_model(cfg.model, state["heads"], cfg.input_size, cfg.heatmap_size)
    model.load_state_dict(state["model"])
    model.to(device)
    data = _EvalData(cfg)
    subsets = tuple(a.subsets.split(",")) if a.subsets else None
    rep = report_tests(model, head, data, device, subsets=subsets)
    rows = {}
    for name, v in rep.metrics.items():
        _, subset, m = keys.parse_test_metric(name)
        rows.setdefault(subset, {})[m] = v
    if a.json:
        print(json.dumps({"checkpoint": a.checkpoint, "dataset": head, "subsets": rows, "notes": rep.notes}))
    else:
        print(f"{head} ({a.checkpoint})")
        print(f"{'subset':<14}{'NME %':>8}{'FR@0.1 %':>10}{'AUC@0.1':>9}")
        for subset, r in rows.items():
            print(f"{subset:<14}{r[keys.NME]:>8.3f}{r[keys.FR]:>10.2f}{r[keys.AUC]:>9.4f}")
        for n in rep.notes:
            print(f"note: {n}")
    return 0


class _EvalData(RunData):
    """RunData without training splits (evaluation needs test files only)."""

    def __init__(self, cfg: RunConfig) -> None:
        datasets.apply_registry(cfg.data)
        self.cfg, self.notes, self.skipped = cfg, [], 0
        self._train, self._val, self._sets = {}, {}, {}
