"""Crop/augment affine: exact identity crop, flip involution, exact inverse, image/point agreement."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from atf import transforms as T
from atf.config import AugmentConfig

# 19-point (AFLW) flip permutation from the official ATF configs
PERM19 = np.array([5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18])
STRONG = AugmentConfig(flip=0.5, rotation=30.0, rotation_prob=0.6, scale=0.25, translate=0.05,
                       random_crop=0.2, color=0.3)


def test_identity_crop_maps_points_exactly():
    s = 64
    m = T.build_affine(100.0, 80.0, 128.0, s, T.AugmentParams.identity())
    pts = np.array([[36.0, 16.0], [164.0, 144.0], [100.0, 80.0]])  # box corners (edges) and centre
    out = T.transform_points(pts, m)
    np.testing.assert_allclose(out, [[-0.5, -0.5], [s - 0.5, s - 0.5], [(s - 1) / 2, (s - 1) / 2]], atol=1e-12)
    u = T.input_px_to_crop(out, s)
    np.testing.assert_allclose(u, [[0, 0], [1, 1], [0.5, 0.5]], atol=1e-12)


def test_identity_crop_of_whole_image_is_the_image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    m = T.build_affine(15.5, 15.5, 32.0, 32, T.AugmentParams.identity())
    np.testing.assert_array_equal(T.warp(img, m, 32), img)


def test_crop_box_modes():
    assert T.crop_box("center_scale", np.array([10.0, 20.0]), 1.0, None, 1.25) == (10.0, 20.0, 250.0)
    assert T.crop_box("box", None, None, np.array([0.0, 10.0, 40.0, 30.0]), 1.5) == (20.0, 20.0, 60.0)
    with pytest.raises(ValueError, match="needs left"):
        T.crop_box("box", None, None, np.array([np.nan] * 4), 1.0)


def test_flip_twice_is_identity_for_images_and_points():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    mirror = T.build_affine(11.5, 11.5, 24.0, 24, T.AugmentParams(flip=True))
    once = T.warp(img, mirror, 24)
    np.testing.assert_array_equal(once, img[:, ::-1])
    np.testing.assert_array_equal(T.warp(once, mirror, 24), img)
    pts = rng.uniform(0, 24, (19, 2))
    twice = T.flip_points(T.transform_points(T.flip_points(T.transform_points(pts, mirror), PERM19), mirror),
                          PERM19)
    np.testing.assert_allclose(twice, pts, atol=1e-12)


def test_mirror_is_one_minus_u_in_crop_units():
    m = T.build_affine(50.0, 50.0, 100.0, 16, T.AugmentParams(flip=True))
    m0 = T.build_affine(50.0, 50.0, 100.0, 16, T.AugmentParams.identity())
    p = np.array([[30.0, 40.0]])
    u_f = T.input_px_to_crop(T.transform_points(p, m), 16)
    u_0 = T.input_px_to_crop(T.transform_points(p, m0), 16)
    np.testing.assert_allclose(u_f[:, 0], 1 - u_0[:, 0], atol=1e-12)
    np.testing.assert_allclose(u_f[:, 1], u_0[:, 1], atol=1e-12)


def test_inverse_recovers_original_under_random_augment():
    rng = np.random.default_rng(2)
    n, k, s = 50, 19, 112
    pts = rng.uniform(50, 450, (n, k, 2))
    coords, invs, expected = [], [], []
    flips = 0
    for i in range(n):
        p = T.sample_params(STRONG, np.random.default_rng([0, 0, i]))
        flips += p.flip
        m = T.build_affine(250 + rng.normal() * 5, 250.0, 300.0, s, p)
        q = T.transform_points(pts[i], m)
        if p.flip:
            q = T.flip_points(q, PERM19)
        coords.append(T.input_px_to_crop(q.astype(np.float32), s))
        invs.append(T.invert_affine(m).astype(np.float32))
        expected.append(T.flip_points(pts[i], PERM19) if p.flip else pts[i])
    assert 0 < flips < n
    back = T.to_original(np.stack(coords), np.stack(invs), s)
    np.testing.assert_allclose(back, np.stack(expected), atol=1e-3)
    import torch
    back_t = T.to_original(torch.from_numpy(np.stack(coords)).double(), torch.from_numpy(np.stack(invs)), s)
    np.testing.assert_allclose(back_t.numpy(), np.stack(expected), atol=1e-3)


def test_sample_params_same_seed_same_numbers_and_ranges():
    a = T.sample_params(STRONG, np.random.default_rng(5))
    b = T.sample_params(STRONG, np.random.default_rng(5))
    assert a == b
    draws = [T.sample_params(STRONG, np.random.default_rng(i)) for i in range(300)]
    rot = np.array([d.rotation for d in draws])
    assert np.abs(rot).max() <= 30.0 and 0.45 < np.mean(rot != 0) < 0.75
    assert 0.35 < np.mean([d.flip for d in draws]) < 0.65
    assert T.sample_params(None, np.random.default_rng(5)) == T.AugmentParams.identity()


def test_point_on_a_drawn_dot_stays_on_the_dot():
    for seed in range(8):
        rng = np.random.default_rng(seed)
        img = np.zeros((300, 300, 3), np.uint8)
        pt = rng.uniform(110, 190, 2)
        shift = 4
        cv2.circle(img, (int(round(pt[0] * 2**shift)), int(round(pt[1] * 2**shift))), 6 * 2**shift,
                   (255, 255, 255), -1, lineType=cv2.LINE_AA, shift=shift)
        params = T.sample_params(STRONG, rng)
        m = T.build_affine(150.0, 150.0, 200.0, 128, params)
        out = T.warp(img, m, 128)[..., 0].astype(np.float64)
        ys, xs = np.mgrid[0:128, 0:128]
        centroid = np.array([(out * xs).sum(), (out * ys).sum()]) / out.sum()
        np.testing.assert_allclose(centroid, T.transform_points(pt, m), atol=0.15)


def test_color_jitter_identity_and_grayscale():
    rng = np.random.default_rng(3)
    img = rng.uniform(0, 1, (8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(T.color_jitter(img, T.AugmentParams.identity()), img, atol=1e-6)
    g = T.color_jitter(img, T.AugmentParams(grayscale=True))
    np.testing.assert_allclose(g[..., 0], g[..., 2])
    dark = T.color_jitter(img, T.AugmentParams(brightness=0.5))
    np.testing.assert_allclose(dark, img * 0.5, atol=1e-6)


def test_color_jitter_definitions():
    rng = np.random.default_rng(4)
    img = rng.uniform(0.3, 0.7, (8, 8, 3)).astype(np.float32)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    c = T.color_jitter(img, T.AugmentParams(contrast=1.3))
    assert cv2.cvtColor(c, cv2.COLOR_RGB2GRAY).mean() == pytest.approx(gray.mean(), abs=1e-5)
    assert cv2.cvtColor(c, cv2.COLOR_RGB2GRAY).std() == pytest.approx(1.3 * gray.std(), rel=1e-4)
    s0 = T.color_jitter(img, T.AugmentParams(saturation=0.0))
    np.testing.assert_allclose(s0, np.repeat(gray[..., None], 3, axis=2), atol=1e-6)
    s2 = T.color_jitter(img, T.AugmentParams(saturation=1.5))
    np.testing.assert_allclose(cv2.cvtColor(s2, cv2.COLOR_RGB2GRAY), gray, atol=1e-5)


def test_antialiased_shrink_averages_fine_patterns_and_keeps_geometry():
    checker = ((np.indices((400, 400)).sum(axis=0) % 2) * 255).astype(np.uint8)
    checker = np.repeat(checker[..., None], 3, axis=2)
    m = T.build_affine(200.0, 200.0, 400.0, 50, T.AugmentParams(rotation=10.0))
    inner = (slice(10, 40), slice(10, 40))
    smooth = T.warp(checker, m, 50)[inner].astype(float)
    aliased = T.warp(checker, m, 50, antialias=False)[inner].astype(float)
    assert abs(smooth.mean() - 127.5) < 3 and smooth.std() < 5
    assert aliased.std() > 4 * smooth.std()
    # a dot in a large photo stays where the affine puts its centre after the prefilter
    img = np.zeros((1200, 1200, 3), np.uint8)
    cv2.circle(img, (640 * 16, 520 * 16), 30 * 16, (255, 255, 255), -1, cv2.LINE_AA, 4)
    m = T.build_affine(600.0, 600.0, 900.0, 64, T.AugmentParams(rotation=-20.0, flip=True))
    out = T.warp(img, m, 64)[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0:64, 0:64]
    centroid = np.array([(out * xs).sum(), (out * ys).sum()]) / out.sum()
    np.testing.assert_allclose(centroid, T.transform_points(np.array([640.0, 520.0]), m), atol=0.1)


@pytest.mark.parametrize("border", ["constant", "replicate"])
def test_warp_reads_a_region_yet_equals_the_whole_image_warp(border):
    # warp() copies the region a crop reads before warping (faster from large sources): the
    # pixels must be exactly those of one warpAffine over the whole image, borders and flips included
    rng = np.random.default_rng(0)
    mode = cv2.BORDER_CONSTANT if border == "constant" else cv2.BORDER_REPLICATE
    copied = 0
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(40, 700, 2))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        size = int(rng.choice([32, 112, 256]))
        a, s = rng.uniform(-0.6, 0.6), size / rng.uniform(20, 1.3 * max(h, w))
        m = np.array([[s * np.cos(a), -s * np.sin(a), 0.0], [s * np.sin(a), s * np.cos(a), 0.0]])
        if rng.random() < 0.5:
            m[0, :2] *= -1
        m[:, 2] = size / 2 - m[:, :2] @ np.array([rng.uniform(-0.2, 1.2) * w, rng.uniform(-0.2, 1.2) * h])
        if s < 0.5:
            continue   # the antialias prefilter's own path (tested above)
        region, _ = T._read_region(image, m, size)
        copied += region.shape[:2] != image.shape[:2]
        want = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=0)
        assert np.array_equal(T.warp(image, m, size, border), want)
    assert copied > 50   # the region path was taken, not only the whole-image one
