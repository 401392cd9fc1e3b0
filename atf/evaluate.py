"""Evaluation of a head: predictions, NME in one of two protocols, and the test report.

`evaluate_head` predicts a split and scores it; `report_tests` scores every test subset of a
dataset and writes the CED curves and predictions the report uses. Two NME protocols
(`eval.protocol`, names in `atf.keys`):

- benchmark (default): predictions mapped back to the original image, the dataset's own
  normaliser (eye corners or AFLW's box size);
- ocn: the public OCN code's, in which the paper's OCN numbers were measured: the test crop is
  the detector box joined with the ground-truth landmarks, x1.12, resized anisotropically
  (`transforms.ocn_test_affine`); errors and normaliser in crop units (0..1), AFLW's normaliser
  is 1 crop unit.

The run's data (`RunData`) lives in `atf.rundata`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from atf import datasets, keys, metrics, transforms
from atf.config import RunConfig
from atf.data import LandmarkDataset, batch_inputs, batch_targets, collate, flip_average
from atf.heatmaps import decode, hm_to_crop
from atf.losses import landmark_loss
from atf.progress import track
from atf.readers import write_csv
from atf.rundata import RunData
from atf.schemes import get_scheme
from atf.transforms import to_original

CED_RANGE = 0.5  # the CED artifact spans NME 0..0.5 so that weak models still show a curve

__all__ = ["HeadEval", "TestReport", "evaluate_head", "report_tests", "predict"]


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

    for batch in track(loader, "eval", head, items=lambda b: len(b["index"])):
        if "image" not in batch:  # all unreadable (skip mode): their rows stay NaN and are noted
            continue
        x = batch_inputs(batch, device)
        out = flip_average(run, x, ds.flip_perm, kind) if cfg.eval.flip_test else run(x)
        gt = batch_targets(batch, kind, device)
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
    if ds.crop == "ocn_test":
        errors = ocn_protocol_errors(pred[ok], ds, np.flatnonzero(ok))
    else:
        errors = metrics.nme(pred[ok], ds.aset.landmarks[ok], datasets.normalizers(ds.aset)[ok])
    return HeadEval(pred, errors, float(errors.mean() * 100.0), loss)


def ocn_protocol_errors(pred: np.ndarray, ds: LandmarkDataset, rows: np.ndarray) -> np.ndarray:
    """Per-image NME of the public OCN code: `pred` [N, K, 2] (original pixels) of dataset rows
    `rows`, measured in the units of each row's OCN test crop (0..1 across it, x and y scaled apart).

    Normaliser: the scheme's eye-corner distance measured in those crop units, or 1 crop unit where
    the benchmark uses the box size (AFLW), as the public code does.
    """
    aset, size = ds.aset, ds.input_size
    ident = transforms.AugmentParams.identity()
    norm = get_scheme(aset.scheme or datasets.get_dataset(aset.dataset).scheme).normalizer
    p_crop, g_crop = np.empty_like(pred, dtype=np.float64), np.empty(pred.shape, dtype=np.float64)
    for j, i in enumerate(rows):
        m = ds.affine(int(i), ident)
        p_crop[j] = transforms.input_px_to_crop(transforms.transform_points(pred[j].astype(np.float64), m), size)
        g_crop[j] = transforms.input_px_to_crop(
            transforms.transform_points(aset.landmarks[i].astype(np.float64), m), size)
    if norm.kind == "box":
        d = np.ones(len(rows))
    else:
        a, b = norm.points
        d = np.linalg.norm(g_crop[:, a] - g_crop[:, b], axis=1)
    return metrics.nme(p_crop, g_crop, d)


@dataclass
class TestReport:
    metrics: dict[str, float] = field(default_factory=dict)
    ced: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    predictions: dict[tuple[str, str], Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def report_tests(model: torch.nn.Module, head: str, data: RunData, device: torch.device,
                 out_dir: Path | None = None, subsets: tuple[str, ...] | None = None,
                 protocol: str = keys.PROTOCOL_BENCHMARK) -> TestReport:
    """NME / FR@0.1 / AUC@0.1 on each test subset in one NME protocol (metric names carry it);
    CED and predictions (benchmark protocol only) written under out_dir."""
    rep = TestReport()
    for subset, ds in data.test_sets(head, subsets, protocol=protocol).items():
        ev = evaluate_head(model, head, ds, data, device)
        summary = metrics.summarize(ev.errors)
        for m, v in summary.items():
            rep.metrics[keys.test_metric(head, subset, m, protocol)] = float(v)
        if protocol != keys.PROTOCOL_BENCHMARK:
            continue
        curve = metrics.ced(ev.errors, CED_RANGE, steps=501)  # AUC/FR use 0.1; the curve shows more
        rep.ced[(head, subset)] = curve
        if out_dir is not None:
            metrics.write_ced(Path(out_dir) / keys.ced_artifact(head, subset), curve)
            pred_path = Path(out_dir) / keys.pred_artifact(head, subset)
            pred_path.parent.mkdir(parents=True, exist_ok=True)
            write_csv(dataclasses.replace(ds.aset, landmarks=ev.pred.astype(np.float32)), pred_path)
            rep.predictions[(head, subset)] = pred_path
    rep.notes.extend(data.notes)
    data.notes.clear()
    return rep
