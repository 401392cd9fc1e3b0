"""The face-crop cache: its margin covers every augmentation draw, evaluation through it is exact,
training from it keeps the draws, and a stale, torn, foreign or raced cache is never read."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from atf import cropcache, keys, transforms
from atf.config import AugmentConfig, RunConfig, apply, load_config
from atf.data import LandmarkDataset, batch_inputs
from atf.datasets import load_split
from atf.evaluate import report_tests
from atf.models import build_model
from atf.rundata import RunData
from atf.schemes import get_scheme

ROOT = Path(__file__).resolve().parents[1]
OCN_AUG = AugmentConfig(random_crop=0.2, flip=0.5, rotation=30.0, rotation_prob=1.0)   # the paper's
HRNET_AUG = AugmentConfig(random_crop=0.0, flip=0.5, rotation=30.0, rotation_prob=0.6, scale=0.25)
WIDE_AUG = AugmentConfig(random_crop=0.3, flip=0.5, rotation=90.0, scale=0.3, translate=0.1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """SynthFace WFLW at 384 px: faces large enough that the crops are area-filtered (as real photos)."""
    from atf.synth import generate
    root = tmp_path_factory.mktemp("photos384")
    generate(root, scale=0.003, seed=1, presets=["wflw"], workers=1, image_size=384)
    return root


def _ds(root: Path, split: str = "train", subset: str = "full", size: int = 64, crop: str = "center_scale",
        augment: AugmentConfig | None = None, crops=None) -> LandmarkDataset:
    aset = load_split("wflw", split, subset, root=root)
    return LandmarkDataset(aset, root / "wflw" / "images", get_scheme("wflw98").flip_perm, size, augment=augment,
                           crop=crop, crop_margin=1.25, crops=crops)


def _extreme_draws(aug: AugmentConfig) -> list[transforms.AugmentParams]:
    """The corners of the augmentation's ranges: smallest and largest crop, the furthest shifts,
    the largest rotations either way (and 45 degrees, the widest a square gets), mirrored or not."""
    rc = aug.random_crop
    scales = ((1 - aug.scale) * (1 - rc / 2), (1 + aug.scale) * (1 + rc / 2))
    shift = aug.translate + rc / 2
    rots = sorted({-aug.rotation, 0.0, aug.rotation, *([-45.0, 45.0] if aug.rotation >= 45 else [])})
    return [transforms.AugmentParams(scale=s, shift_x=sx, shift_y=sy, rotation=r, flip=f)
            for s in scales for sx in (-shift, shift) for sy in (-shift, shift) for r in rots for f in (False, True)]


@pytest.mark.parametrize("aug", [OCN_AUG, HRNET_AUG, WIDE_AUG], ids=["ocn", "hrnet", "wide"])
def test_margin_holds_every_augmented_crop(photos, aug):
    """Every pixel an augmented crop reads (its four corners, plus a bilinear tap) lies inside the
    cached square: at the corners of the ranges and for 100 draws of the trainer's sampler per face."""
    ds = _ds(photos, size=64, augment=aug)
    g = cropcache.augment_geometry(aug, "center_scale", 1.25, 64)
    to_cache, side = cropcache.plan_rows(ds, g)
    corners = np.array([[-0.5, -0.5], [63.5, -0.5], [-0.5, 63.5], [63.5, 63.5]])
    worst = np.inf
    for i in range(len(ds)):
        draws = _extreme_draws(aug) + [transforms.sample_params(aug, np.random.default_rng([i, d])) for d in range(100)]
        for p in draws:
            inv = transforms.invert_affine(ds.affine(i, p))
            c = transforms.transform_points(transforms.transform_points(corners, inv), to_cache[i])
            worst = min(worst, c.min() + 0.5, side[i] - 0.5 - c.max())
    assert worst >= 1.0, f"a crop reaches {worst:.2f} px from the cached square's edge"
    assert worst < 3 * cropcache.PAD + 2, "the margin is far wider than any draw needs"


def test_evaluation_through_the_cache_is_exact(photos, tmp_path):
    """The exact view holds the very crops the photos give: NME, FR and AUC are equal, not close,
    in both NME protocols (the bound is 0; any pixel difference would move a random model's output)."""
    cfg = apply(RunConfig(), {"target": "wflw", "data.root": str(photos), "data.cache_dir": str(tmp_path),
                              "model.width_mult": 0.25, "model.input_size": 64, "eval.protocol": "both",
                              "device": "cpu"})
    torch.manual_seed(0)
    model = build_model(cfg.model, {"wflw": 98}, cfg.input_size, cfg.heatmap_size).eval()
    got = {}
    for on in (False, True):
        data = RunData(apply(cfg, {"data.crop_cache": on}), splits=False)
        for protocol in keys.PROTOCOLS:
            got[(on, protocol)] = report_tests(model, "wflw", data, torch.device("cpu"), protocol=protocol).metrics
        assert len(data.crop_caches()) == (14 if on else 0)   # 7 test files x 2 crops
    for protocol in keys.PROTOCOLS:
        assert got[(True, protocol)] == got[(False, protocol)] and len(got[(True, protocol)]) == 21


def test_training_samples_keep_their_draws(photos, tmp_path):
    """Cached training samples: the same landmarks (exactly), flips and inverse affines as from the
    photos; pixels differ only by resampling (measured bound: mean < 2.5 of 255, 99th pct < 20)."""
    g = cropcache.augment_geometry(OCN_AUG, "center_scale", 1.25, 64)
    cache = cropcache.ensure(_ds(photos), g, tmp_path)
    direct, cached = _ds(photos, augment=OCN_AUG), _ds(photos, augment=OCN_AUG, crops=cache)
    assert cache.manifest["faces"] == len(direct) and cache.ok.all()
    diffs = []
    for epoch in (0, 3):
        direct.set_epoch(epoch)
        cached.set_epoch(epoch)
        a, b = direct.__getitems__(range(len(direct))), cached.__getitems__(range(len(direct)))
        for k in ("coords", "inverse", "flipped", "index"):
            assert torch.equal(a[k], b[k]), k
        diffs.append((a["image"].float() - b["image"].float()).abs())
    d = torch.cat(diffs)
    assert d.mean() < 2.5 and torch.quantile(d.flatten()[::7], 0.99) < 20, (d.mean(), d.max())


def test_cached_sets_are_shared_not_copied(photos, tmp_path):
    """A cache pickles without its pixels (a worker maps the same file) and reads them back."""
    g = cropcache.augment_geometry(HRNET_AUG, "center_scale", 1.25, 64)
    cache = cropcache.ensure(_ds(photos), g, tmp_path)
    first = np.array(cache.crop(0))
    blob = pickle.dumps(cache)
    assert len(blob) < cache.manifest["pixel_bytes"] / 4
    again = pickle.loads(blob)
    assert again._pixels is None and np.array_equal(again.crop(0), first)
    assert isinstance(again.pixels, np.memmap)


def _only_folder(cache_dir: Path) -> Path:
    found = [p for p in (cache_dir / "wflw").iterdir() if not p.name.startswith(".")]
    assert len(found) == 1, found
    return found[0]


def test_stale_torn_and_foreign_caches_are_rebuilt(photos, tmp_path):
    g = cropcache.exact_geometry("center_scale", 1.25, 64)
    ds = _ds(photos, split="test")
    lines: list[str] = []
    first = cropcache.ensure(ds, g, tmp_path, log=lines.append)
    folder = first.folder
    assert len(lines) == 1 and cropcache.ensure(ds, g, tmp_path, log=lines.append).folder == folder
    assert len(lines) == 1   # opened, not rebuilt
    with (folder / "pixels.npy").open("r+b") as f:   # torn: a truncated pixels file
        f.truncate(folder.joinpath("pixels.npy").stat().st_size - 100)
    cropcache.ensure(ds, g, tmp_path, log=lines.append)
    assert "torn" in lines[-2] and "rebuilding" in lines[-2]
    index = folder / "index.npz"   # torn: the index no longer matches its checksum
    index.write_bytes(index.read_bytes()[:-10] + b"0123456789")
    cropcache.ensure(ds, g, tmp_path, log=lines.append)
    assert "checksum" in lines[-2]
    # foreign: another file's index (other faces, or as many faces placed elsewhere), made to look right
    shifted = LandmarkDataset(ds.aset.with_landmarks(ds.aset.landmarks + 5.0), ds.images_dir, ds.flip_perm, 64,
                              crop_margin=1.25)
    for other_ds, why in ((_ds(photos), "shape"), (shifted, "map back")):
        other = cropcache.build(other_ds, g, tmp_path / "other" / why, "k")
        m = json.loads((folder / "cache.json").read_text())
        (folder / "index.npz").write_bytes((other / "index.npz").read_bytes())
        m["index_sha256"] = cropcache._sha256(folder / "index.npz")
        (folder / "cache.json").write_text(json.dumps(m))
        cropcache.ensure(ds, g, tmp_path, log=lines.append)
        assert why in lines[-2] and "another file" in lines[-2], lines[-2]
    # stale: an image changes, so does the key; the new cache lives beside the old one
    img = ds.image_path(0)
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    assert cropcache.ensure(ds, g, tmp_path).folder != folder
    assert not list((tmp_path / "wflw").glob(".*tmp-*"))   # no temporary left behind


def test_a_linked_cache_is_not_read(photos, tmp_path):
    g = cropcache.exact_geometry("center_scale", 1.25, 64)
    ds = _ds(photos, split="test")
    real = cropcache.ensure(ds, g, tmp_path / "elsewhere").folder
    key = cropcache.cache_key(ds, g)
    planted = cropcache.cache_folder(tmp_path / "mine", ds, g, key)
    planted.parent.mkdir(parents=True)
    planted.symlink_to(real, target_is_directory=True)
    lines: list[str] = []
    got = cropcache.ensure(ds, g, tmp_path / "mine", log=lines.append)
    assert "not a plain folder" in lines[0] and not got.folder.is_symlink() and got.folder == planted


def _race(root: str, cache_dir: str, barrier) -> str:
    """One of two builders: both compute the key, then build the same cache at the same moment."""
    ds = _ds(Path(root), split="test")
    g = cropcache.exact_geometry("center_scale", 1.25, 64)
    barrier.wait(timeout=120)
    return str(cropcache.ensure(ds, g, Path(cache_dir)).folder)


def test_two_builders_at_once_leave_one_good_copy(photos, tmp_path):
    """Two processes build the same cache into one folder at the same moment: both succeed with the
    same folder, one copy, nothing temporary left, and it reads back without a rebuild."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_race, args=(str(photos), str(tmp_path), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    folders = sorted((tmp_path / "wflw").iterdir())
    assert len(folders) == 1 and not folders[0].name.startswith("."), folders
    lines: list[str] = []
    again = cropcache.ensure(_ds(photos, split="test"), cropcache.exact_geometry("center_scale", 1.25, 64), tmp_path,
                             log=lines.append)
    assert again.folder == folders[0] and lines == []


def test_unwritable_cache_folder_is_one_line(photos, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(cropcache.CacheError, match="data.cache_dir") as e:
        cropcache.ensure(_ds(photos, split="test"), cropcache.exact_geometry("center_scale", 1.25, 64),
                         tmp_path / "a-file" / "crops")
    assert "\n" not in str(e.value) and "a-file" in str(e.value)


def test_auto_is_on_for_real_data_only(photos, tmp_path):
    from atf.config import crop_cache_on
    from orchestration.cells import cell_id
    assert crop_cache_on("auto", "real") and not crop_cache_on("auto", "synthetic(scale=0.02,seed=0)")
    assert crop_cache_on(True, "synthetic(scale=0.02,seed=0)") and not crop_cache_on(False, "real")
    cfg = apply(RunConfig(), {"data.root": str(photos)})
    # SynthFace cells keep their ids (the cache is off there); switching it on is another experiment
    assert cell_id(cfg) == cell_id(apply(cfg, {"data.crop_cache": False}))
    assert cell_id(cfg) != cell_id(apply(cfg, {"data.crop_cache": True}))
    assert cell_id(cfg) == cell_id(apply(cfg, {"data.cache_dir": str(tmp_path)}))   # where, not what


def test_retired_cache_images_key_is_read_and_ignored(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("target: wflw\ndata: {root: data/synth, cache_images: true}\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import atf.config as config
        config._WARNED.discard("data.cache_images")
        cfg = load_config(p)
    assert cfg == apply(RunConfig(), {"data.root": "data/synth"})
    assert any("data.cache_images" in str(w.message) and "crop_cache" in str(w.message) for w in caught)


def test_uint8_batches_normalise_like_the_float_path():
    """batch_inputs' device-side normalisation is transforms.normalize bit for bit."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    want = np.stack([transforms.normalize(i.astype(np.float32) * (1.0 / 255.0)) for i in img])
    got = batch_inputs({"image": torch.from_numpy(img)})
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), want)


def test_atf_data_cache_command(photos, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: {input_size: 32}\neval: {protocol: benchmark}\n")
    cmd = [sys.executable, "-m", "atf.cli.data", "cache", "--data-root", str(photos), "--cache-dir", str(tmp_path),
           "--datasets", "wflw", "--config", str(cfg), "--workers", "1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].startswith("atf-data cache: 8 caches ready")   # train + 7 test files
    assert out.stderr.count("crop cache:") == 8
    bad = subprocess.run(cmd[:5] + [str(tmp_path / "absent")] + cmd[6:], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "absent" in bad.stderr


def test_a_cached_training_run_matches_itself_and_reads_the_cache(photos, tmp_path):
    """atf-train with the cache on builds it on first use and the same seed gives the same numbers."""
    from atf.train import train
    cfg = apply(RunConfig(), {"target": "wflw", "data.root": str(photos), "data.crop_cache": True,
                              "data.cache_dir": str(tmp_path / "crops"), "data.max_test": 4, "data.max_train": 16,
                              "model.width_mult": 0.25, "model.input_size": 32, "optim.epochs": 1,
                              "optim.batch_size": 8, "device": "cpu"})
    a = train(cfg, tmp_path / "a").metrics
    b = train(dataclasses.replace(cfg), tmp_path / "b").metrics
    assert {k: v for k, v in a.items() if not k.startswith("time/")} == \
        {k: v for k, v in b.items() if not k.startswith("time/")}
    assert any(p.name.startswith("face_landmarks_wflw_train") for p in (tmp_path / "crops" / "wflw").iterdir())
