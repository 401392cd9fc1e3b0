"""Throughput of the augmentation pipeline alone: decode + affine + warp + colour + heatmap targets.

Why: on a small CPU box the data pipeline, not the network, can bound training speed. This measures
images/s of `atf.data.LandmarkDataset` through a DataLoader (with `atf.data.collate`) for the two
paper baselines' input pipelines, on generated JPEG photos of realistic sizes, with 0 and 2 workers,
decoding from disk (OS page cache warm) and (full mode) from the in-memory image cache. Prints a
Markdown table.

    .venv/bin/python bench/bench_augment.py [--quick] [--images N] [--sizes 256 512] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from _machine import cpu_model  # noqa: E402
from torch.utils.data import DataLoader

from atf.config import AugmentConfig
from atf.data import LandmarkDataset, collate
from atf.readers import AnnotationSet

K = 98  # WFLW points: the heaviest heatmap target of the paper
PERM = np.arange(K)  # throughput does not depend on which permutation; identity is a valid one


@dataclass(frozen=True)
class Pipeline:
    name: str
    input_size: int
    heatmap_size: int | None
    augment: AugmentConfig


PIPELINES = (
    # OCN baseline (paper IV-A): random crop 0.2, flip 0.5, rotation +-30; coordinates only
    Pipeline("OCN-112", 112, None, AugmentConfig(flip=0.5, rotation=30.0, rotation_prob=1.0, scale=0.0,
                                                 random_crop=0.2, color=0.2)),
    # HRNet face recipe: scale 0.25, rotation +-30 w.p. 0.6, flip 0.5; 64 px heatmaps, sigma 1.5
    Pipeline("HRNet-256", 256, 64, AugmentConfig(flip=0.5, rotation=30.0, rotation_prob=0.6, scale=0.25,
                                                 random_crop=0.0, color=0.2)),
    # the same, with heatmaps left to the trainer (heatmaps.encode_batch on the device): what the
    # loader then saves is the encoding and shipping 98 x 64 x 64 floats (1.6 MB) per sample
    Pipeline("HRNet-256, maps on device", 256, None, AugmentConfig(flip=0.5, rotation=30.0, rotation_prob=0.6,
                                                                   scale=0.25, random_crop=0.0, color=0.2)),
)




def make_images(root: Path, n: int, size: int, seed: int = 0) -> AnnotationSet:
    """n JPEG 'photos' (smooth noise + a bright ellipse face) with K landmarks around the face."""
    rng = np.random.default_rng(seed)
    names, lms, centers, scales = [], [], [], []
    for i in range(n):
        small = rng.integers(0, 255, (size // 16, size // 16, 3), dtype=np.uint8)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        c = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
        r = size * rng.uniform(0.2, 0.3)
        cv2.ellipse(img, (int(c[0]), int(c[1])), (int(r * 0.8), int(r)), 0, 0, 360, (200, 170, 150), -1)
        name = f"{size}_{i}.jpg"
        cv2.imwrite(str(root / name), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        ang = np.linspace(0, 2 * np.pi, K, endpoint=False)
        lms.append(np.stack([c[0] + r * 0.8 * np.cos(ang), c[1] + r * np.sin(ang)], axis=1))
        names.append(name)
        centers.append(c)
        scales.append(2 * r / 200)
    f32 = np.float32
    return AnnotationSet(dataset="bench", scheme="", source=f"<generated {size}px>", images=tuple(names),
                         landmarks=np.array(lms, f32), centers=np.array(centers, f32),
                         scales=np.array(scales, f32), boxes=np.full((n, 4), np.nan, f32),
                         box_sizes=np.full(n, np.nan, f32))


def measure(aset: AnnotationSet, images_dir: Path, p: Pipeline, workers: int, cached: bool, batch: int
            ) -> tuple[float, float | None]:
    """(images/s, CPU ms per image) of the second pass over the set.

    The first pass starts the (persistent) workers and, when cached, fills each worker's image
    cache, so neither start-up cost is counted. CPU time (all threads of this process) is given
    for 0 workers only; it is the intrinsic cost, robust to other load on the machine, while
    images/s is wall-clock and is not.
    """
    ds = LandmarkDataset(aset, images_dir, PERM, p.input_size, augment=p.augment, heatmap_size=p.heatmap_size,
                         sigma=1.5, seed=0, cache_images=cached)
    loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0)
    rate, cpu_ms = 0.0, None
    for _ in range(2):
        seen, t0, c0 = 0, time.perf_counter(), time.process_time()
        for b in loader:
            seen += len(b["index"])
        rate = seen / (time.perf_counter() - t0)
        cpu_ms = 1000.0 * (time.process_time() - c0) / seen if workers == 0 else None
    return rate, cpu_ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (32 images, disk only) for smoke tests")
    ap.add_argument("--images", type=int, default=0, help="images per size (default 256; quick 32)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args(argv)
    n = a.images or (32 if a.quick else 256)
    sources = ("disk",) if a.quick else ("disk", "cache")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; torch {torch.__version__} "
          f"({torch.get_num_threads()} intra-op threads), OpenCV {cv2.__version__}; "
          f"{n} JPEG images per size, batch {a.batch}, {K} points; "
          f"load average at start {os.getloadavg()[0]:.1f} (other processes share these cores)\n")
    print("| pipeline | photo px | workers | decode from | images/s (wall) | CPU ms/image |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sets = {s: make_images(root, n, s) for s in a.sizes}
        for p in PIPELINES:
            for s in a.sizes:
                for w in a.workers:
                    for src in sources:
                        ips, cpu = measure(sets[s], root, p, w, src == "cache", a.batch)
                        cpu_txt = f"{cpu:.1f}" if cpu is not None else "-"
                        print(f"| {p.name} | {s} | {w} | {src} | {ips:.0f} | {cpu_txt} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
