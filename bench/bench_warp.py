"""Where a cached HRNet-256 sample's loader time goes: the warp, and a batch's shared memory.

Why: the crop-cache loader (bench_loader.py) spends most of a sample in two places, measured here
alone, one thread:
  - the warp: a rotated warp from a large source (a crop cache's 589 px HRNet face, augmented as
    the HRNet protocol does: scale +-0.25, rotation +-30) read straight from the source
    (`cv2.warpAffine` on it), through `atf.transforms.warp` (which copies the region the crop reads
    first), and from a source already in the CPU caches (the same face every time: the floor);
  - a batch of 32 uint8 crops in a DataLoader worker: fresh shared memory (`share_memory_`), which
    the kernel must allocate page by page, against plain memory written once.
Sources are N random faces, together larger than the CPU caches, as a training epoch reads them.

    python bench/bench_warp.py            # 256 faces of 589 px (266 MB), 256 px crops
    python bench/bench_warp.py --quick    # smoke: 32 faces
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _machine import machine_line  # noqa: E402

from atf import transforms  # noqa: E402


def _affines(rng: np.random.Generator, n: int, side: int, out: int) -> list[np.ndarray]:
    """HRNet-protocol draws around the face centre: the crop covers side / 1.71 x scale."""
    ms = []
    for _ in range(n):
        s = out / (side / 1.71) / rng.uniform(0.75, 1.25)
        a = math.radians(rng.uniform(-30, 30)) if rng.random() < 0.6 else 0.0
        m = np.array([[s * math.cos(a), -s * math.sin(a), 0.0], [s * math.sin(a), s * math.cos(a), 0.0]])
        m[:, 2] = out / 2 - m[:, :2] @ np.array([side / 2, side / 2])
        ms.append(m)
    return ms


def _per_call(fn, items, repeats: int) -> float:
    """Fastest pass over `items`, in ms per item."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for it in items:
            fn(*it)
        best = min(best, time.perf_counter() - t)
    return 1e3 * best / len(items)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 faces, one pass (smoke test)")
    ap.add_argument("--faces", type=int, default=256)
    ap.add_argument("--side", type=int, default=589, help="cached face side in px (HRNet-256's augment view)")
    ap.add_argument("--size", type=int, default=256, help="crop side in px")
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args(argv)
    n, repeats = (32, 1) if a.quick else (a.faces, 5)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (a.side, a.side, 3), dtype=np.uint8) for _ in range(n)]
    ms = _affines(rng, n, a.side, a.size)
    pairs = list(zip(faces, ms))
    whole = _per_call(lambda f, m: cv2.warpAffine(f, m, (a.size, a.size), flags=cv2.INTER_LINEAR), pairs, repeats)
    region = _per_call(lambda f, m: transforms.warp(f, m, a.size), pairs, repeats)
    hot = _per_call(lambda f, m: transforms.warp(f, m, a.size), [(faces[0], m) for m in ms], repeats)
    shape = (a.batch, a.size, a.size, 3)
    fill = np.full(shape, 7, dtype=np.uint8)
    keep: list[torch.Tensor] = []

    def batch(shared: bool) -> None:
        t = torch.empty(shape, dtype=torch.uint8)
        t = t.share_memory_() if shared else t
        np.copyto(t.numpy(), fill)
        keep.append(t)            # held, as the main process holds a batch in flight
        del keep[:-4]
    plain = _per_call(batch, [(False,)] * 16, repeats)
    shm = _per_call(batch, [(True,)] * 16, repeats)

    print(machine_line())
    print(f"{n} faces of {a.side} px ({n * a.side * a.side * 3 / 1e6:.0f} MB), {a.size} px crops, one thread; "
          f"fastest of {repeats}\n")
    print("| step | ms |")
    print("|---|---:|")
    print(f"| warp, straight from the face (cv2.warpAffine) | {whole:.3f} |")
    print(f"| warp, region copied first (transforms.warp) | {region:.3f} |")
    print(f"| warp, source already in cache (floor) | {hot:.3f} |")
    print(f"| batch of {a.batch} crops, plain memory, written once | {plain:.2f} |")
    print(f"| batch of {a.batch} crops, fresh shared memory (a worker's), written once | {shm:.2f} |")
    print(f"\nwarp per crop: {whole:.3f} ms straight, {region:.3f} ms with the region copy")
    print(f"shared memory per sample: {shm / a.batch:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
