"""Gaussian heatmap targets and their decoding, batched torch on CPU or CUDA.

Heatmap pixel convention (matches transforms.py): the centre of heatmap pixel j is at crop unit
(j + 0.5) / h, so `hm = u * h - 0.5`. The Gaussian is drawn at the exact sub-pixel position (not
rounded to a pixel as the HRNet code does), so a decoder can recover the sub-pixel location; like
HRNet's, it is cut to zero beyond 3 sigma on each axis.

Decoders:
- "argmax_shift": argmax, then a quarter pixel toward the larger neighbour on each axis (the HRNet
  face convention; no shift on an axis where the peak sits on the border).
- "subpixel": second-order Taylor expansion of the log-heatmap at the argmax (as in DARK): offset =
  -H^-1 g with central differences. Exact for a clean Gaussian; the offset is clamped to +-1 px and
  falls back to the quarter shift where the peak is on the border or the Hessian is not negative
  definite (flat or noisy peaks).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

__all__ = ["encode", "encode_axes", "expand_axes", "window", "pack_axes", "unpack_axes", "encode_batch", "decode", "hm_to_crop", "crop_to_hm"]

Decode = Literal["argmax_shift", "subpixel"]


def hm_to_crop(p: torch.Tensor | np.ndarray, size: int) -> torch.Tensor | np.ndarray:
    """Heatmap pixel coordinates -> crop units (0..1)."""
    return (p + 0.5) / size


def crop_to_hm(u: torch.Tensor | np.ndarray, size: int) -> torch.Tensor | np.ndarray:
    """Crop units (0..1) -> heatmap pixel coordinates."""
    return u * size - 0.5


def encode_batch(points: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """[..., K, 2] heatmap-pixel points -> [..., K, size, size] unnormalised Gaussians (peak 1).

    The Gaussian is cut to zero beyond 3 sigma on each axis, as the HRNet targets are; this also
    keeps denormal floats (very slow on CPUs) out of the maps. A point outside the heatmap area
    (or NaN) gets an all-zero map: it carries no target.
    """
    pts = torch.as_tensor(points)
    if not pts.is_floating_point():
        pts = pts.float()
    grid = torch.arange(size, dtype=pts.dtype, device=pts.device)
    x, y = pts[..., 0:1], pts[..., 1:2]                                 # [..., K, 1]
    inside = (x >= -0.5) & (x < size - 0.5) & (y >= -0.5) & (y < size - 0.5)  # NaN compares False
    zero = torch.zeros((), dtype=pts.dtype, device=pts.device)

    def axis(c: torch.Tensor) -> torch.Tensor:
        d = (grid - c).abs()
        g = torch.exp(-(torch.clamp(d, max=3.0 * sigma + 1.0) ** 2) / (2.0 * sigma * sigma))
        return torch.where(inside & (d <= 3.0 * sigma), g, zero)       # [..., K, size]

    return axis(y)[..., :, None] * axis(x)[..., None, :]


def encode_axes(points: np.ndarray | torch.Tensor, size: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """[K, 2] heatmap-pixel points -> (gx, gy), each [K, size] float32: the two 1-D factors of the
    separable targets, heatmap[k] = gy[k][:, None] * gx[k][None, :] (`expand_axes`; zero rows when
    the point is outside). The loader ships these (2K x size floats, not K x size^2) and the
    heatmaps are expanded where the model runs.

    Computed in numpy, single-threaded, because torch's thread pool and OpenCV's contend badly for
    cores when small ops interleave in a loader (measured ~15x slower on 2 cores).
    """
    pts = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    pts = pts.astype(np.float32, copy=False)
    if pts.ndim != 2 or pts.shape[-1] != 2:
        raise ValueError(f"encode: expected points [K, 2], got {tuple(pts.shape)}")
    grid = np.arange(size, dtype=np.float32)
    x, y = pts[:, 0:1], pts[:, 1:2]
    with np.errstate(invalid="ignore"):
        inside = (x >= -0.5) & (x < size - 0.5) & (y >= -0.5) & (y < size - 0.5)

    def axis(c: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            d = np.abs(grid - c)
            g = np.exp(-(np.minimum(d, 3.0 * sigma + 1.0) ** 2) / np.float32(2.0 * sigma * sigma))
            return np.where(inside & (d <= 3.0 * sigma), g, np.float32(0.0)).astype(np.float32)

    return axis(x), axis(y)


def expand_axes(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """[..., K, size] factors -> [..., K, size, size] heatmaps (the same float32 products as `encode`)."""
    return gy[..., :, None] * gx[..., None, :]


def window(sigma: float, size: int) -> int:
    """Width of the span that holds every non-zero value of an axis factor (`encode_axes`)."""
    return min(size, 2 * math.ceil(3.0 * sigma) + 2)


def pack_axes(g: np.ndarray, centres: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """[N, size] axis factors -> (start [N] int16, values [N, W]): each row's non-zero span only
    (W = `window`, a sixth of a 64 px row at sigma 1.5), so a loader ships 2K x W floats a sample."""
    n, size = g.shape
    w = window(sigma, size)
    with np.errstate(invalid="ignore"):
        first = np.ceil(np.nan_to_num(centres, nan=0.0) - 3.0 * sigma)
    start = np.clip(first, 0, size - w).astype(np.int64)
    values = np.take_along_axis(g, start[:, None] + np.arange(w), axis=1)
    return start.astype(np.int16), values


def unpack_axes(start: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    """(start [..., K], values [..., K, W]) -> [..., K, size] factors: `pack_axes` undone, exactly."""
    out = torch.zeros((*values.shape[:-1], size), dtype=values.dtype, device=values.device)
    cols = start.to(torch.long).unsqueeze(-1) + torch.arange(values.shape[-1], device=values.device)
    return out.scatter_(-1, cols, values)


def encode(points: np.ndarray | torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """[K, 2] heatmap-pixel points -> [K, size, size] float32 Gaussians (zero map if outside).

    Same numbers as `encode_batch`, and as `expand_axes` of `encode_axes` (which it is).
    """
    gx, gy = encode_axes(points, size, sigma)
    return torch.from_numpy(gy[:, :, None] * gx[:, None, :])


def decode(heatmaps: torch.Tensor, method: Decode = "argmax_shift") -> torch.Tensor:
    """[B, K, h, w] heatmaps -> [B, K, 2] (x, y) in heatmap pixels (float32)."""
    if heatmaps.ndim != 4:
        raise ValueError(f"decode: expected heatmaps [B, K, h, w], got {tuple(heatmaps.shape)}")
    if method not in ("argmax_shift", "subpixel"):
        raise ValueError(f"decode: unknown method {method!r}; expected 'argmax_shift' or 'subpixel'")
    hm = heatmaps.detach().float()
    b, k, h, w = hm.shape
    flat = hm.reshape(b, k, h * w)
    idx = flat.argmax(dim=-1)
    px, py = idx % w, torch.div(idx, w, rounding_mode="floor")
    coords = torch.stack([px, py], dim=-1).float()

    pad = torch.nn.functional.pad(hm, (1, 1, 1, 1), mode="replicate").reshape(b, k, (h + 2) * (w + 2))
    stride = w + 2

    def at(src: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
        """Value at (argmax + (dx, dy)) of a padded [B, K, (h+2)(w+2)] map."""
        return src.gather(-1, ((py + 1 + dy) * stride + (px + 1 + dx)).unsqueeze(-1)).squeeze(-1)

    # quarter-pixel shift toward the larger neighbour; none on an axis where the peak is on the border
    inner_x = ((px > 0) & (px < w - 1)).float()
    inner_y = ((py > 0) & (py < h - 1)).float()
    shift = torch.stack([torch.sign(at(pad, 1, 0) - at(pad, -1, 0)) * inner_x,
                         torch.sign(at(pad, 0, 1) - at(pad, 0, -1)) * inner_y], dim=-1) * 0.25
    if method == "argmax_shift":
        return coords + shift

    lg = torch.log(torch.clamp(pad, min=1e-10))
    c = at(lg, 0, 0)
    dx = 0.5 * (at(lg, 1, 0) - at(lg, -1, 0))
    dy = 0.5 * (at(lg, 0, 1) - at(lg, 0, -1))
    dxx = at(lg, 1, 0) - 2 * c + at(lg, -1, 0)
    dyy = at(lg, 0, 1) - 2 * c + at(lg, 0, -1)
    dxy = 0.25 * (at(lg, 1, 1) - at(lg, 1, -1) - at(lg, -1, 1) + at(lg, -1, -1))
    det = dxx * dyy - dxy * dxy
    ok = (inner_x * inner_y > 0) & (dxx < 0) & (det > 1e-12)
    safe = torch.where(ok, det, torch.ones_like(det))
    off_x = -(dyy * dx - dxy * dy) / safe
    off_y = -(dxx * dy - dxy * dx) / safe
    off = torch.stack([off_x, off_y], dim=-1).clamp(-1.0, 1.0)
    return coords + torch.where(ok.unsqueeze(-1), off, shift)
