"""Face-alignment metrics as pure functions on arrays, plus a thin accumulator.

NME is the mean point-to-point error divided by a per-image normaliser that the CALLER supplies
(`atf.datasets.normalizers`: eye corners or box size), so no metric hides a dataset rule.
FR@t and AUC@t follow the paper: FR is the percentage of images with NME > t; AUC is the area
under the cumulative error distribution (CED) from 0 to t divided by t. Because the CED of N
errors is a step function, that area is computed exactly: AUC = mean(max(0, t - e_i)) / t.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atf import keys

__all__ = ["MetricError", "nme", "failure_rate", "auc", "ced", "write_ced", "read_ced", "summarize",
           "MetricAccumulator"]


class MetricError(ValueError):
    """Arrays of the wrong shape or with non-finite values."""


def nme(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """Per-image NME as a fraction.

    pred, gt: [N, K, 2] landmark coordinates (same units); norm: [N] positive normalisers.
    Returns [N] float64: mean_k ||pred[n, k] - gt[n, k]|| / norm[n].
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    norm = np.asarray(norm, np.float64).reshape(-1)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[2] != 2:
        raise MetricError(f"nme: pred {pred.shape} and gt {gt.shape} must both be [N, K, 2]")
    if norm.shape[0] != pred.shape[0]:
        raise MetricError(f"nme: {norm.shape[0]} normalisers for {pred.shape[0]} images")
    if not np.isfinite(pred).all() or not np.isfinite(gt).all():
        raise MetricError("nme: non-finite landmark coordinates")
    if not (norm > 0).all():
        raise MetricError(f"nme: normaliser of image {int(np.flatnonzero(~(norm > 0))[0])} is not positive")
    return np.linalg.norm(pred - gt, axis=2).mean(axis=1) / norm


def _errors(errors: np.ndarray) -> np.ndarray:
    e = np.asarray(errors, np.float64).reshape(-1)
    if e.size == 0:
        raise MetricError("no errors to summarise (empty set)")
    if not np.isfinite(e).all() or (e < 0).any():
        raise MetricError("errors must be finite and non-negative")
    return e


def failure_rate(errors: np.ndarray, threshold: float = keys.FAIL_THRESHOLD) -> float:
    """errors: [N] NME fractions. Percentage of images with error > threshold."""
    return float((_errors(errors) > threshold).mean() * 100.0)


def auc(errors: np.ndarray, threshold: float = keys.FAIL_THRESHOLD) -> float:
    """errors: [N]. Exact area under the CED on [0, threshold] divided by threshold, in [0, 1]."""
    return float(np.clip(threshold - _errors(errors), 0.0, None).mean() / threshold)


def ced(errors: np.ndarray, threshold: float = keys.FAIL_THRESHOLD, steps: int = 101) -> np.ndarray:
    """errors: [N]. Returns [steps, 2]: threshold t in [0, threshold], fraction of errors <= t."""
    e = np.sort(_errors(errors))
    t = np.linspace(0.0, threshold, steps)
    return np.stack([t, np.searchsorted(e, t, side="right") / e.size], axis=1)


def write_ced(path: str | Path, curve: np.ndarray) -> Path:
    """Write a CED curve [T, 2] as the CSV of `keys.ced_artifact`: header `keys.CED_COLUMNS`,
    six significant digits. The one writer, so the trainer's and the sweep's files are identical."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.asarray(curve, np.float64).reshape(-1, 2), delimiter=",",
               header=",".join(keys.CED_COLUMNS), comments="", fmt="%.6g")
    return path


def read_ced(path: str | Path) -> np.ndarray:
    """[T, 2] (threshold, fraction) from a CSV of `write_ced`; a MetricError naming the file else."""
    path = Path(path)
    try:
        with path.open() as f:
            header = f.readline().strip()
            data = np.loadtxt(f, delimiter=",", ndmin=2)
    except (OSError, ValueError) as e:
        raise MetricError(f"{path}: unreadable CED CSV ({e})") from None
    if header.split(",") != list(keys.CED_COLUMNS) or data.shape[1:] != (2,) or not len(data):
        raise MetricError(f"{path}: a CED CSV has the columns {','.join(keys.CED_COLUMNS)} and at least "
                          f"one row; got header {header!r} and {data.shape[0]} row(s) of {data.shape[1]}")
    return data


def summarize(errors: np.ndarray, threshold: float = keys.FAIL_THRESHOLD) -> dict[str, float]:
    """{keys.NME: mean %, keys.FR: %, keys.AUC: fraction} of per-image errors [N]."""
    e = _errors(errors)
    return {keys.NME: float(e.mean() * 100.0), keys.FR: failure_rate(e, threshold), keys.AUC: auc(e, threshold)}


class MetricAccumulator:
    """Collects per-image NME over batches; `summary()` gives the table numbers."""

    def __init__(self, threshold: float = keys.FAIL_THRESHOLD) -> None:
        self.threshold = threshold
        self._chunks: list[np.ndarray] = []

    def add(self, pred: np.ndarray, gt: np.ndarray, norm: np.ndarray) -> np.ndarray:
        """Add a batch (shapes as `nme`); returns its per-image errors."""
        e = nme(pred, gt, norm)
        self._chunks.append(e)
        return e

    def add_errors(self, errors: np.ndarray) -> None:
        self._chunks.append(_errors(errors))

    @property
    def errors(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0)

    def __len__(self) -> int:
        return int(sum(c.size for c in self._chunks))

    def summary(self) -> dict[str, float]:
        return summarize(self.errors, self.threshold)

    def ced(self, steps: int = 101) -> np.ndarray:
        return ced(self.errors, self.threshold, steps)
