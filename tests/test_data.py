"""LandmarkDataset: samples, determinism across workers, unreadable images, flip averaging."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from atf import heatmaps, transforms
from atf.config import AugmentConfig
from atf.data import LandmarkDataset, UnreadableImageError, batch_inputs, batch_targets, collate, flip_average
from atf.readers import AnnotationSet

PERM19 = np.array([5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18])
AUG = AugmentConfig(flip=0.5, rotation=30.0, rotation_prob=0.6, scale=0.25, translate=0.05, random_crop=0.2,
                    color=0.2)


def make_set(root: Path, n: int = 6, k: int = 19, size: int = 96, seed: int = 0) -> AnnotationSet:
    """Small noisy images with k landmarks inside a face box, written to root/images."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names, lms, centers, scales, boxes = [], [], [], [], []
    for i in range(n):
        img = rng.integers(0, 255, (size, size + 10, 3), dtype=np.uint8)
        name = f"img_{i}.png"
        cv2.imwrite(str(root / "images" / name), img)
        c = rng.uniform(40, 60, 2)
        names.append(name)
        lms.append(c + rng.uniform(-25, 25, (k, 2)))
        centers.append(c)
        scales.append(60 / 200)
        boxes.append([c[0] - 30, c[1] - 30, c[0] + 30, c[1] + 30])
    f32 = np.float32
    return AnnotationSet(dataset="aflw", scheme="aflw19", source=str(root / "face_landmarks_aflw_train.csv"),
                         images=tuple(names), landmarks=np.array(lms, f32), centers=np.array(centers, f32),
                         scales=np.array(scales, f32), boxes=np.array(boxes, f32),
                         box_sizes=np.full(n, np.nan, f32))


def test_eval_sample_fields_and_exact_inverse(tmp_path):
    aset = make_set(tmp_path)
    ds = LandmarkDataset(aset, tmp_path / "images", PERM19, 32, augment=None, heatmap_size=8, sigma=1.0)
    s = ds[2]
    assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
    assert s["coords"].shape == (19, 2) and s["heatmap"].shape == (19, 8, 8) and s["inverse"].shape == (2, 3)
    assert s["index"] == 2 and not s["flipped"]
    back = transforms.to_original(s["coords"][None].numpy(), s["inverse"][None].numpy(), 32)[0]
    np.testing.assert_allclose(back, aset.landmarks[2], atol=2e-3)
    inside = ((s["coords"] > 0) & (s["coords"] < 1)).all(dim=1)
    peak = heatmaps.decode(s["heatmap"][None], "subpixel")[0]
    torch.testing.assert_close(peak[inside], heatmaps.crop_to_hm(s["coords"], 8)[inside], atol=1e-3, rtol=0)
    # normalisation: a mid-gray pixel maps to (0.5 - mean) / std
    assert s["image"].abs().max() < 3.0


def test_box_crop_and_center_scale_agree_when_box_matches(tmp_path):
    aset = make_set(tmp_path, n=2)
    a = LandmarkDataset(aset, tmp_path / "images", PERM19, 32, crop="center_scale", crop_margin=1.25)[0]
    b = LandmarkDataset(aset, tmp_path / "images", PERM19, 32, crop="box", crop_margin=1.25)[0]
    torch.testing.assert_close(a["coords"], b["coords"])


def test_randomness_is_pure_function_of_seed_epoch_index_any_workers(tmp_path):
    aset = make_set(tmp_path, n=6)
    ds = LandmarkDataset(aset, tmp_path / "images", PERM19, 32, augment=AUG, heatmap_size=8, seed=3)
    ds.set_epoch(1)
    a = [ds[i]["coords"] for i in range(6)]
    ds.set_epoch(2)
    assert any(not torch.equal(x, ds[i]["coords"]) for i, x in enumerate(a))
    ds.set_epoch(1)
    for workers in (0, 2):
        batches = list(DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate))
        coords = torch.cat([b["coords"] for b in batches])
        for i in range(6):
            torch.testing.assert_close(coords[i], a[i], rtol=0, atol=0)


def test_augmented_inverse_is_exact_including_flip(tmp_path):
    aset = make_set(tmp_path, n=6)
    ds = LandmarkDataset(aset, tmp_path / "images", PERM19, 48, augment=AUG, seed=0)
    flips = 0
    for i in range(6):
        s = ds[i]
        back = transforms.to_original(s["coords"][None].double().numpy(), s["inverse"][None].numpy(), 48)[0]
        want = aset.landmarks[i][PERM19] if s["flipped"] else aset.landmarks[i]
        np.testing.assert_allclose(back, want, atol=5e-3)
        flips += s["flipped"]
    assert flips > 0


def test_unreadable_image_error_names_image_and_row(tmp_path):
    aset = make_set(tmp_path, n=3)
    (tmp_path / "images" / "img_1.png").write_bytes(b"not a png")
    ds = LandmarkDataset(aset, tmp_path / "images", PERM19, 32)
    with pytest.raises(UnreadableImageError) as e:
        ds[1]
    msg = str(e.value)
    assert "img_1.png" in msg and "face_landmarks_aflw_train.csv row 2" in msg and "\n" not in msg


def test_skip_unreadable_drops_and_counts(tmp_path):
    aset = make_set(tmp_path, n=4)
    (tmp_path / "images" / "img_3.png").unlink()
    ds = LandmarkDataset(aset, tmp_path / "images", PERM19, 32, skip_unreadable=True)
    batches = list(DataLoader(ds, batch_size=4, collate_fn=collate))
    assert batches[0]["image"].shape[0] == 3
    assert batches[0]["skipped"].tolist() == [3] and batches[0]["index"].tolist() == [0, 1, 2]
    only = collate([ds[3]])
    assert "image" not in only and only["skipped"].tolist() == [3]


@pytest.mark.parametrize("augment", [None, AUG, dataclasses.replace(AUG, color=0.0)], ids=["eval", "jitter", "u8"])
def test_batched_layout_finishes_into_the_per_sample_numbers(tmp_path, augment):
    """__getitems__ (uint8 images or jittered floats, heatmap factors) + batch_inputs/batch_targets give
    bit for bit what collate() of __getitem__ gives: the loader's lean layout changes no number."""
    aset = make_set(tmp_path, n=5)
    ds = LandmarkDataset(aset, tmp_path / "images", PERM19, 32, augment=augment, heatmap_size=16, seed=1)
    ds.set_epoch(2)
    lean = ds.__getitems__([4, 0, 2])
    ref = collate([ds[4], ds[0], ds[2]])
    assert lean["image"].dtype == (torch.float32 if augment is AUG else torch.uint8)
    assert "heatmap" not in lean and lean["heatmap_x"].shape == (3, 19, 12)   # the 12-wide span of 16
    assert torch.equal(batch_inputs(lean), ref["image"])
    assert torch.equal(batch_targets(lean, "heatmap"), ref["heatmap"])
    for key in ("coords", "inverse", "index", "flipped"):
        assert torch.equal(lean[key], ref[key]), key
    # the DataLoader fetches whole batches through __getitems__, with workers too
    got = next(iter(DataLoader(ds, batch_size=3, num_workers=1, collate_fn=collate)))
    assert got["image"].dtype == lean["image"].dtype and torch.equal(got["index"], torch.tensor([0, 1, 2]))


def test_packed_heatmap_factors_unpack_exactly():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-6, 70, (300, 2)), [[np.nan, 3.0], [0.0, -0.5], [63.4, 63.6]]])
    pts = pts.astype(np.float32)
    for sigma in (1.0, 1.5, 2.5):
        gx, gy = heatmaps.encode_axes(pts, 64, sigma)
        for g, c in ((gx, pts[:, 0]), (gy, pts[:, 1])):
            start, values = heatmaps.pack_axes(g, c, sigma)
            assert values.shape == (len(pts), heatmaps.window(sigma, 64)) and start.dtype == np.int16
            assert np.array_equal(heatmaps.unpack_axes(torch.from_numpy(start), torch.from_numpy(values), 64).numpy(), g)


def test_batched_layout_skips_unreadable_images(tmp_path):
    aset = make_set(tmp_path, n=3)
    (tmp_path / "images" / "img_1.png").unlink()
    ds = LandmarkDataset(aset, tmp_path / "images", PERM19, 32, skip_unreadable=True)
    b = ds.__getitems__([0, 1, 2])
    assert b["skipped"].tolist() == [1] and b["index"].tolist() == [0, 2] and b["image"].shape[0] == 2
    assert "img_1.png" in b["skipped_reasons"][0]
    assert "image" not in ds.__getitems__([1])


def test_bad_flip_perm_is_refused(tmp_path):
    aset = make_set(tmp_path, n=1)
    with pytest.raises(ValueError, match="involution"):
        LandmarkDataset(aset, tmp_path / "images", np.arange(18), 32)


def _mirror_symmetric_coords(x: torch.Tensor) -> torch.Tensor:
    """A 'model' equivariant to mirroring: points from column means, partners placed symmetrically."""
    b = x.shape[0]
    m = x.mean(dim=(1, 2))  # [B, W]
    left = (m[:, : m.shape[1] // 2].mean(dim=1) + 3) / 10
    right = (m[:, m.shape[1] // 2:].mean(dim=1) + 3) / 10
    pts = torch.zeros(b, 19, 2)
    for i, j in enumerate(PERM19):
        if i < j:
            pts[:, i, 0], pts[:, j, 0] = left * 0.4, 1 - right * 0.4
            pts[:, i, 1] = pts[:, j, 1] = 0.1 + 0.04 * i
        elif i == j:
            pts[:, i, 0], pts[:, i, 1] = 0.5, 0.9
    return pts


def test_flip_average_of_an_equivariant_model_is_its_prediction():
    x = torch.randn(2, 3, 16, 16)
    out = flip_average(_mirror_symmetric_coords, x, PERM19, "coords")
    torch.testing.assert_close(out, _mirror_symmetric_coords(x))
    # heatmaps: encode the same points and compare the averaged maps
    def hm_model(img: torch.Tensor) -> torch.Tensor:
        return heatmaps.encode_batch(heatmaps.crop_to_hm(_mirror_symmetric_coords(img), 8), 8, 1.0)
    torch.testing.assert_close(flip_average(hm_model, x, PERM19, "heatmap"), hm_model(x), atol=1e-5, rtol=0)
    # a model that ignores the mirror is pulled to the middle: flip averaging does un-mirror x
    const = torch.full((2, 19, 2), 0.2)
    avg = flip_average(lambda img: const, x, PERM19, "coords")
    torch.testing.assert_close(avg[..., 0], torch.full((2, 19), 0.5))


@pytest.mark.parametrize("name", ["wflw", "300w", "cofw", "aflw"])
def test_synth_dataset_with_real_scheme_round_trips(synth_root, name):
    """Real reader + scheme + rendered images: the HRNet crop puts the landmarks' box at 0.1..0.9
    (scale*200 = landmark box side, margin 1.25), and flipped samples map back to permuted points."""
    from atf import datasets
    from atf.schemes import get_scheme
    aset = datasets.load_split(name, "train", root=synth_root).subset(np.arange(3))
    perm = get_scheme(aset.scheme).flip_perm
    images = datasets.images_dir(name, root=synth_root)
    plain = LandmarkDataset(aset, images, perm, 64, augment=None, heatmap_size=16)[0]
    lo, hi = plain["coords"].min(0).values, plain["coords"].max(0).values
    assert torch.all(lo > 0.0) and torch.all(hi < 1.0) and float((hi - lo).max()) > 0.5
    ds = LandmarkDataset(aset, images, perm, 64, augment=AugmentConfig(flip=1.0), seed=0)
    for i in range(3):
        s = ds[i]
        assert s["flipped"]
        back = transforms.to_original(s["coords"][None].double().numpy(), s["inverse"][None].numpy(), 64)[0]
        np.testing.assert_allclose(back, aset.landmarks[i][perm], atol=5e-3)


def test_two_datasets_do_not_share_draws(tmp_path):
    a = make_set(tmp_path, n=2)
    b = dataclasses.replace(a, dataset="wflw")
    da = LandmarkDataset(a, tmp_path / "images", PERM19, 32, augment=AUG, seed=0)
    db = LandmarkDataset(b, tmp_path / "images", PERM19, 32, augment=AUG, seed=0)
    assert not torch.equal(da[0]["coords"], db[0]["coords"])


# -- paper-protocol switches (issue 9) --------------------------------------------------------------

def test_grayscale_is_its_own_switch_and_off_by_default(tmp_path):
    draws = [np.random.default_rng([0, i]) for i in range(200)]
    assert not any(transforms.sample_params(AugmentConfig(color=0.2), r).grayscale for r in draws)
    draws = [np.random.default_rng([0, i]) for i in range(20)]
    assert all(transforms.sample_params(AugmentConfig(grayscale=1.0), r).grayscale for r in draws)
    aset = make_set(tmp_path)
    s = LandmarkDataset(aset, tmp_path / "images", PERM19, 32, augment=AugmentConfig(grayscale=1.0))[0]
    img = s["image"] * torch.tensor(transforms.IMAGENET_STD)[:, None, None] + torch.tensor(
        transforms.IMAGENET_MEAN)[:, None, None]
    torch.testing.assert_close(img[0], img[1], atol=1e-5, rtol=0)   # gray: equal channels
    assert transforms.sample_params(AugmentConfig(), np.random.default_rng(0)).grayscale is False


def test_ocn_test_crop_spans_the_joined_box_anisotropically(tmp_path):
    aset = make_set(tmp_path)
    ds = LandmarkDataset(aset, tmp_path / "images", PERM19, 32, crop="ocn_test")
    s = ds[1]
    pts = np.concatenate([aset.landmarks[1], aset.boxes[1].reshape(2, 2)])
    lo, hi = pts.min(0), pts.max(0)
    crop_lo = transforms.input_px_to_crop(transforms.transform_points(lo[None], ds.affine(1, transforms.AugmentParams.identity()))[0], 32)
    crop_hi = transforms.input_px_to_crop(transforms.transform_points(hi[None], ds.affine(1, transforms.AugmentParams.identity()))[0], 32)
    half = 0.5 / transforms.OCN_TEST_ENLARGE      # the joined box fills 1/1.12 of the crop on BOTH axes
    np.testing.assert_allclose(crop_lo, [0.5 - half] * 2, atol=1e-9)
    np.testing.assert_allclose(crop_hi, [0.5 + half] * 2, atol=1e-9)
    back = transforms.to_original(s["coords"][None].numpy(), s["inverse"][None].numpy(), 32)[0]
    np.testing.assert_allclose(back, aset.landmarks[1], atol=2e-3)
