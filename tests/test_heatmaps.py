"""Heatmap encode/decode round trips and pixel <-> crop-unit helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atf import heatmaps as H


def _random_maps(n: int, k: int, size: int, sigma: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, k, 2, generator=g) * (size - 8) + 4  # sub-pixel positions, off the border
    maps = torch.stack([H.encode(p, size, sigma) for p in pts])
    return pts, maps


def test_encode_shape_peak_and_outside_points():
    pts = np.array([[10.0, 20.0], [-3.0, 5.0], [5.0, 64.0], [np.nan, 1.0]], dtype=np.float32)
    m = H.encode(pts, 64, 1.5)
    assert m.shape == (4, 64, 64) and m.dtype == torch.float32
    assert m[0, 20, 10] == pytest.approx(1.0)
    assert m[0].argmax().item() == 20 * 64 + 10
    assert torch.all(m[1:] == 0)


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0])
def test_round_trip_argmax_shift_within_quarter_pixel(sigma):
    pts, maps = _random_maps(4, 98, 64, sigma, seed=0)
    err = (H.decode(maps, "argmax_shift") - pts).abs()
    assert err.max() <= 0.25 + 1e-4  # per axis: nearest pixel (|d| <= 0.5), then 0.25 toward the peak
    assert err.norm(dim=-1).mean() < 0.25


def test_round_trip_subpixel_clearly_better():
    pts, maps = _random_maps(4, 98, 64, 1.5, seed=1)
    e_shift = (H.decode(maps, "argmax_shift") - pts).norm(dim=-1).mean()
    e_sub = (H.decode(maps, "subpixel") - pts).norm(dim=-1)
    assert e_sub.max() < 0.01
    assert e_sub.mean() < 0.1 * e_shift


def test_subpixel_falls_back_on_border_and_flat_maps():
    flat = torch.zeros(1, 2, 16, 16)
    out = H.decode(flat, "subpixel")
    assert torch.isfinite(out).all()
    border = H.encode(torch.tensor([[0.2, 7.3]]), 16, 1.0)[None]
    out = H.decode(border, "subpixel")[0, 0]
    assert out[0].item() == 0.0 and abs(out[1].item() - 7.3) <= 0.25


def test_decode_is_batched_and_rejects_bad_input():
    pts, maps = _random_maps(3, 5, 32, 1.5, seed=2)
    one = torch.cat([H.decode(maps[i:i + 1], "subpixel") for i in range(3)])
    torch.testing.assert_close(H.decode(maps, "subpixel"), one)
    with pytest.raises(ValueError, match="expected heatmaps"):
        H.decode(maps[0], "subpixel")
    with pytest.raises(ValueError, match="unknown method"):
        H.decode(maps, "soft")


def test_hm_crop_helpers_invert_and_match_centres():
    u = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(H.crop_to_hm(u, 64), torch.tensor([-0.5, 31.5, 63.5]))
    torch.testing.assert_close(H.hm_to_crop(H.crop_to_hm(u, 64), 64), u)
