"""Shape statistics shared by calibration and its test: Procrustes means and pose/expression proxies.

Why here: the same functions summarise the real annotation files (in `tools/calibrate_synth.py`) and
the synthetic landmarks (in the calibration test), so the two sides are measured identically.
Shapes are `[N, K, 2]` arrays in pixels, y pointing down.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from atf import keys
from atf.datasets import csv_name

__all__ = [
    "SCHEMES", "SIMILAR", "EYE_OUTER", "INNER_LIPS", "REAL_FILES",
    "landmark_columns", "canonical", "align_to", "procrustes_mean", "mean_nme",
    "yaw_proxy", "mouth_proxy", "summarise_real", "PERCENTILES",
]

# scheme name -> number of points (names as in atf/schemes)
SCHEMES = {"wflw98": 98, "300w68": 68, "cofw29": 29, "aflw19": 19}

# similar points (REFERENCE.md order): brow outer L/R, eye corners outer L, inner L, inner R, outer R,
# nose tip, mouth corner L/R, chin
SIMILAR = {
    "wflw98": (33, 46, 60, 64, 68, 72, 54, 76, 82, 16),
    "300w68": (17, 26, 36, 39, 42, 45, 30, 48, 54, 8),
    "cofw29": (0, 1, 8, 10, 11, 9, 20, 22, 23, 28),
    "aflw19": (0, 5, 6, 8, 9, 11, 13, 15, 17, 18),
}
EYE_OUTER = {s: (v[2], v[5]) for s, v in SIMILAR.items()}
# (upper inner lip centre, lower inner lip centre) where the scheme has an inner lip
INNER_LIPS = {"wflw98": (90, 94), "300w68": (62, 66), "cofw29": (25, 26)}

REAL_FILES = {
    "wflw98": [f"wflw/{csv_name('wflw', 'test', s, True)}" for s in keys.WFLW_ATTRIBUTES],
    "300w68": [f"300w/{csv_name('300w', 'test', s, True)}" for s in ("full", "test")],
    "cofw29": [f"cofw/{csv_name('cofw', split, 'full', True)}" for split in ("train", "test")],
    "aflw19": [f"aflw/{csv_name('aflw', 'test', 'full', True)}"],
}
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)


def landmark_columns(columns: Sequence[str], k: int) -> list[str]:
    """The 2K landmark column names of a real CSV (`original_i_x` or COFW's `landmark_i_x`)."""
    prefix = "landmark" if "landmark_0_x" in columns else "original"
    return [f"{prefix}_{i}_{a}" for i in range(k) for a in ("x", "y")]


def _eye_frame(shapes: np.ndarray, scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eye midpoint [N,2], unit eye axis [N,2] and inter-ocular distance [N] per face."""
    a, b = EYE_OUTER[scheme]
    d = shapes[:, b] - shapes[:, a]
    iod = np.linalg.norm(d, axis=1)
    return (shapes[:, a] + shapes[:, b]) / 2, d / np.maximum(iod, 1e-9)[:, None], iod


def canonical(shapes: np.ndarray, scheme: str) -> np.ndarray:
    """Similarity-normalise: outer eye corners at (-0.5, 0) and (0.5, 0)."""
    mid, ex, iod = _eye_frame(shapes, scheme)
    ey = np.stack([-ex[:, 1], ex[:, 0]], axis=1)
    rel = shapes - mid[:, None]
    x = (rel * ex[:, None]).sum(-1)
    y = (rel * ey[:, None]).sum(-1)
    return np.stack([x, y], -1) / iod[:, None, None]


def align_to(shapes: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Procrustes, no reflection) of each shape [N,K,2] onto ref [K,2]."""
    src = shapes - shapes.mean(1, keepdims=True)
    dst = ref - ref.mean(0)
    # complex-number form: dst ~ c * src, c = sum(conj(s) d) / sum(|s|^2)
    s = src[..., 0] + 1j * src[..., 1]
    d = dst[:, 0] + 1j * dst[:, 1]
    c = (np.conj(s) * d[None]).sum(1) / (np.abs(s) ** 2).sum(1)
    out = c[:, None] * s + (ref.mean(0)[0] + 1j * ref.mean(0)[1])
    return np.stack([out.real, out.imag], -1)


def procrustes_mean(shapes: np.ndarray, scheme: str, iters: int = 4) -> np.ndarray:
    """Generalised Procrustes mean [K,2], expressed in the canonical eye frame."""
    mean = np.median(canonical(shapes, scheme), axis=0)
    for _ in range(iters):
        mean = align_to(shapes, mean).mean(0)
        mean = canonical(mean[None], scheme)[0]
    return mean


def mean_nme(pred: np.ndarray, ref: np.ndarray, norm: float = 1.0) -> float:
    """Mean point distance between shape `pred` (aligned onto `ref` first) and `ref`, over `norm`."""
    aligned = align_to(pred[None], ref)[0]
    return float(np.linalg.norm(aligned - ref, axis=1).mean() / norm)


def yaw_proxy(shapes: np.ndarray, scheme: str) -> np.ndarray:
    """Signed horizontal offset of the nose tip from the eye midpoint, in inter-ocular units [N]."""
    mid, ex, iod = _eye_frame(shapes, scheme)
    nose = shapes[:, SIMILAR[scheme][6]]
    return ((nose - mid) * ex).sum(1) / iod


def mouth_proxy(shapes: np.ndarray, scheme: str) -> np.ndarray:
    """Mouth opening: inner-lip gap (or mouth-to-chin distance for AFLW) over the eye-to-mouth distance [N].

    Dividing by the eye-mouth distance rather than the inter-ocular distance keeps the proxy
    insensitive to yaw, which shrinks the inter-ocular distance.
    """
    sim = SIMILAR[scheme]
    mouth = (shapes[:, sim[7]] + shapes[:, sim[8]]) / 2
    eyes = (shapes[:, sim[2]] + shapes[:, sim[5]]) / 2
    scale = np.linalg.norm(mouth - eyes, axis=1)
    if scheme in INNER_LIPS:
        up, lo = INNER_LIPS[scheme]
        gap = np.linalg.norm(shapes[:, lo] - shapes[:, up], axis=1)
    else:
        gap = np.linalg.norm(shapes[:, sim[9]] - mouth, axis=1)
    return gap / np.maximum(scale, 1e-9)


def _pct(v: np.ndarray) -> list[float]:
    return [round(float(x), 4) for x in np.percentile(v[np.isfinite(v)], PERCENTILES)]


def summarise_real(scheme: str, frames: Sequence) -> dict:
    """Compact statistics of real annotation frames (pandas DataFrames) of one scheme."""
    k = SCHEMES[scheme]
    shapes_l, box_l, scale_l, size_l, ctr_l = [], [], [], [], []
    for df in frames:
        cols = landmark_columns(list(df.columns), k)
        shapes_l.append(df[cols].to_numpy(float).reshape(len(df), k, 2))
        box_l.append(df[["left", "top", "right", "bottom"]].to_numpy(float))
        scale_l.append(df["scale"].to_numpy(float) if "scale" in df else np.full(len(df), np.nan))
        size_l.append(df["box_size"].to_numpy(float) if "box_size" in df else np.full(len(df), np.nan))
        ctr_l.append(df[["center_w", "center_h"]].to_numpy(float) if "center_w" in df
                     else np.full((len(df), 2), np.nan))
    shapes = np.concatenate(shapes_l)
    boxes, scales, sizes = np.concatenate(box_l), np.concatenate(scale_l), np.concatenate(size_l)
    centres = np.concatenate(ctr_l)
    ok = np.isfinite(shapes).all((1, 2))
    shapes, boxes, scales, sizes, centres = shapes[ok], boxes[ok], scales[ok], sizes[ok], centres[ok]
    mean = procrustes_mean(shapes, scheme)
    lo, hi = shapes.min(1), shapes.max(1)
    side = (hi - lo).max(1)
    centre = (lo + hi) / 2
    rel_box = np.concatenate([(boxes[:, :2] - centre) / side[:, None], (boxes[:, 2:] - centre) / side[:, None]], 1)
    iod = _eye_frame(shapes, scheme)[2]
    out = {
        "n": int(len(shapes)),
        "mean": np.round(mean, 4).tolist(),
        # detector box (left, top, right, bottom) relative to the landmark box centre, in landmark-box sides
        "box_rel_median": np.round(np.nanmedian(rel_box, 0), 4).tolist(),
        "box_rel_std": np.round(np.nanstd(rel_box, 0), 4).tolist(),
        "yaw": _pct(yaw_proxy(shapes, scheme)),
        "mouth": _pct(mouth_proxy(shapes, scheme)),
    }
    if np.isfinite(scales).any():
        out["scale200_over_side"] = round(float(np.nanmedian(scales * 200 / side)), 4)
        # HRNet centre relative to the landmark box centre, in landmark-box sides
        rel_c = (centres - centre) / side[:, None]
        out["center_rel_median"] = np.round(np.nanmedian(rel_c, 0), 4).tolist()
        out["center_rel_std"] = np.round(np.nanstd(rel_c, 0), 4).tolist()
    if np.isfinite(sizes).any():
        out["box_size_over_side"] = round(float(np.nanmedian(sizes / side)), 4)
        out["box_size_over_iod"] = round(float(np.nanmedian(sizes / iod)), 4)
    return out
