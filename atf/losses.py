"""Landmark losses and the paper's mixed branch loss L_MB (Lan et al., "ATF", sec. III-C, eq. 3-5).

Units. Coordinate losses take `[B, K, 2]` in crop units (0..1 spans the input crop), so an L1 loss
of 0.01 is about 1 pixel of a 112 px crop. Heatmap losses take `[B, K, H, W]`.

- `l1` (eq. 5): per point ||(dx, dy)||_1 = |dx| + |dy|, mean over images and points.
- `l2`: per point squared Euclidean distance dx^2 + dy^2 (the "2nd NF"), mean over images and points.
- `wing` (Feng et al., CVPR 2018): per coordinate w*ln(1 + |d|/eps) below w, |d| - C above, with
  w = 10 and eps = 2 in pixels of a `WING_REFERENCE` = 112 px crop (Feng's values for their input);
  summed over (x, y), mean over images and points, divided by the reference side so that for large
  errors it grows like `l1` in crop units.
- `heatmap_mse` (eq. 4): squared error summed over H x W, mean over images and landmarks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LOSS_KINDS", "WING_W", "WING_EPSILON", "WING_REFERENCE", "PART_OWN", "PART_PS", "PART_TOTAL",
           "landmark_loss", "similar_loss", "mixed_branch_terms", "mixed_branch_loss", "LossWeights"]

LOSS_KINDS = ("l1", "l2", "wing", "heatmap_mse")
WING_W = 10.0            # pixels of a WING_REFERENCE crop: width of the log (non-linear) region
WING_EPSILON = 2.0       # pixels: curvature of the log region
WING_REFERENCE = 112.0   # crop side the wing parameters are expressed in

PART_OWN = "own"         # the batch's own head against its ground truth (L_m or L_a, unweighted)
PART_PS = "ps"           # L_ps, the similar-point term (unweighted; 0 under L_AT)
PART_TOTAL = "total"     # the optimised value


def _check(kind: str, pred: Tensor, target: Tensor) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss kind {kind!r}; expected one of {LOSS_KINDS}")
    if pred.shape != target.shape:
        raise ValueError(f"loss {kind}: prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}")
    want = 4 if kind == "heatmap_mse" else 3
    if pred.dim() != want or (want == 3 and pred.shape[-1] != 2):
        expected = "[B, K, H, W]" if want == 4 else "[B, K, 2]"
        raise ValueError(f"loss {kind}: expected {expected}, got {tuple(pred.shape)}")


def landmark_loss(kind: str, pred: Tensor, target: Tensor) -> Tensor:
    """Scalar loss of one head: `pred`, `target` both [B, K, 2] (coords) or [B, K, H, W] (heatmap_mse)."""
    _check(kind, pred, target)
    d = pred - target
    if kind == "l1":
        return d.abs().sum(-1).mean()
    if kind == "l2":
        return d.pow(2).sum(-1).mean()
    if kind == "wing":
        x = d.abs() * WING_REFERENCE
        c = WING_W - WING_W * math.log(1.0 + WING_W / WING_EPSILON)
        per = torch.where(x < WING_W, WING_W * torch.log1p(x / WING_EPSILON), x - c)
        return per.sum(-1).mean() / WING_REFERENCE
    return d.pow(2).sum((-2, -1)).mean()   # heatmap_mse


def similar_loss(pred_a: Tensor, pred_b: Tensor, idx_a: Tensor, idx_b: Tensor, kind: str) -> Tensor:
    """L_ps between two heads' similar points: `pred_a[:, idx_a]` against `pred_b[:, idx_b]`.

    Coordinates for coordinate models, the corresponding heatmaps for heatmap models; the same norm
    as the landmark loss, averaged over images and pairs. Gradients flow into both heads.
    """
    if idx_a.shape != idx_b.shape or idx_a.dim() != 1:
        raise ValueError(f"similar_loss: index vectors must be 1-D and equal length, got "
                         f"{tuple(idx_a.shape)} and {tuple(idx_b.shape)}")
    if pred_a.shape[0] != pred_b.shape[0]:
        raise ValueError(f"similar_loss: batch sizes differ ({pred_a.shape[0]} vs {pred_b.shape[0]})")
    idx_a = idx_a.to(device=pred_a.device, dtype=torch.long)
    idx_b = idx_b.to(device=pred_b.device, dtype=torch.long)
    return landmark_loss(kind, pred_a.index_select(1, idx_a), pred_b.index_select(1, idx_b))


def mixed_branch_terms(outputs: dict[str, Tensor], batch_dataset: str, gt: Tensor,
                       pairs: dict[tuple[str, str], tuple[Tensor, Tensor]], kind: str,
                       mixed: bool) -> tuple[Tensor, Tensor]:
    """(own, L_ps) of one batch drawn from `batch_dataset`, unweighted.

    own: the batch's head against its ground truth. L_ps: the mean, over every other head h in
    `outputs`, of `similar_loss` between the batch's head and h with `pairs[(batch_dataset, h)]`;
    0 when `mixed` is False (L_AT).
    """
    if batch_dataset not in outputs:
        raise KeyError(f"mixed_branch_loss: no output for the batch's dataset {batch_dataset!r}; "
                       f"outputs: {list(outputs)}")
    own = landmark_loss(kind, outputs[batch_dataset], gt)
    if not mixed:
        return own, own.new_zeros(())
    terms = []
    for head, pred in outputs.items():
        if head == batch_dataset:
            continue
        if (batch_dataset, head) not in pairs:
            raise KeyError(f"mixed_branch_loss: no similar-point pairs for ({batch_dataset!r}, {head!r})")
        idx_a, idx_b = pairs[(batch_dataset, head)]
        terms.append(similar_loss(outputs[batch_dataset], pred, idx_a, idx_b, kind))
    return own, (torch.stack(terms).mean() if terms else own.new_zeros(()))


def mixed_branch_loss(outputs: dict[str, Tensor], batch_dataset: str, target: str, gt: Tensor,
                      pairs: dict[tuple[str, str], tuple[Tensor, Tensor]], kind: str, mixed: bool,
                      alpha: float, beta: float, gamma: float) -> tuple[Tensor, dict[str, float]]:
    """Eq. 3 for one batch drawn from `batch_dataset`; returns (loss, parts for logging).

    Target batch: L_m + alpha * L_ps. Auxiliary batch: beta * L_a + gamma * L_ps (see
    `mixed_branch_terms`). `mixed=False` is L_AT: the batch's own loss alone (the paper's
    alpha = 0, beta = 1, gamma = 0).
    """
    own, ps = mixed_branch_terms(outputs, batch_dataset, gt, pairs, kind, mixed)
    if not mixed:
        total = own
    else:
        total = own + alpha * ps if batch_dataset == target else beta * own + gamma * ps
    return total, {PART_OWN: own.detach().item(), PART_PS: ps.detach().item(), PART_TOTAL: total.detach().item()}


class LossWeights:
    """alpha, beta, gamma of eq. 3 for each batch: fixed, or rescaled from running loss means.

    "running" is the public HRNet ATF code's rule (the paper gives no formula): before each batch's
    weighted sum, alpha = a * mean(L_main) / mean(L_ps), beta = b * mean(L_main) / mean(L_aux),
    gamma = g * mean(L_main) / mean(L_ps), where a, b, g are the configured weights (the public code
    uses 0.2, 0.5, 0.1) and the means run over the epoch so far, this batch included (HRNet's
    per-epoch AverageMeters). L_main is the target head's own loss on target batches, L_aux the own
    loss on auxiliary batches, L_ps the similar-point term on any batch. A mean that is still empty
    (an auxiliary batch before any target batch) or zero leaves that ratio at 1. The sums are state:
    `state_dict` goes into the checkpoint so a resumed run continues with the same weights.
    """

    def __init__(self, mode: str, alpha: float, beta: float, gamma: float) -> None:
        if mode not in ("fixed", "running"):
            raise ValueError(f"loss.weighting: unknown {mode!r}; expected 'fixed' or 'running'")
        self.mode, self.base = mode, (float(alpha), float(beta), float(gamma))
        self.reset()

    def reset(self) -> None:
        """Start a new epoch's means."""
        self.sums = {"main": 0.0, "aux": 0.0, "ps": 0.0}
        self.counts = {"main": 0, "aux": 0, "ps": 0}

    def _mean(self, name: str) -> float:
        return self.sums[name] / self.counts[name] if self.counts[name] else float("nan")

    def step(self, is_target: bool, own: float, ps: float) -> tuple[float, float, float]:
        """Record one batch's unweighted losses; the (alpha, beta, gamma) to weight it with."""
        a, b, g = self.base
        if self.mode == "fixed":
            return a, b, g
        key = "main" if is_target else "aux"
        self.sums[key] += float(own)
        self.counts[key] += 1
        self.sums["ps"] += float(ps)
        self.counts["ps"] += 1

        def ratio(num: float, den: float) -> float:
            return num / den if math.isfinite(num) and math.isfinite(den) and num > 0 and den > 0 else 1.0
        main = self._mean("main")
        r_ps, r_aux = ratio(main, self._mean("ps")), ratio(main, self._mean("aux"))
        return a * r_ps, b * r_aux, g * r_ps

    def state_dict(self) -> dict:
        return {"mode": self.mode, "sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != self.mode:
            raise ValueError(f"loss weights: checkpoint has weighting {state.get('mode')!r}, config {self.mode!r}")
        self.sums = {k: float(v) for k, v in state["sums"].items()}
        self.counts = {k: int(v) for k, v in state["counts"].items()}
