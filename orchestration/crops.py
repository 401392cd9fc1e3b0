"""The driver builds every face-crop cache a sweep will read before any trial starts.

Why here: a table sweep starts many trials at once over the same files; each would otherwise
decode every photo of WFLW or AFLW itself, all at the same time, on the cores its GPU trial needs
for loading. Built once by the driver (with all its CPUs), the trials only open them. Trials on
other nodes share them when `data.cache_dir` is on shared storage, else build their own on first
use (docs/cluster.md). Cells whose data settings agree share one pass.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from atf.config import RunConfig, crop_cache_on, to_dict

__all__ = ["crop_signature", "prepare_crops", "prepare_sweep"]


def crop_signature(cfg: RunConfig) -> str:
    """What decides the crop caches a cell reads: its data, model input, augmentation and heads."""
    data = to_dict(cfg.data)
    for k in ("num_workers", "max_train", "val_fraction", "bad_rows", "skip_unreadable"):
        data.pop(k, None)
    return json.dumps({"data": data, "input": cfg.input_size, "augment": to_dict(cfg.augment),
                       "protocols": cfg.protocols, "heads": [*cfg.datasets, cfg.novel], "tests": cfg.selected_heads},
                      sort_keys=True, default=str)


def prepare_crops(configs: list[RunConfig], workers: int | None = None,
                  log: Callable[[str], None] | None = None) -> int:
    """Open or build the crop caches of every config that reads through one; returns how many
    caches were checked. A problem (unwritable cache folder, unreadable file) raises CacheError."""
    from atf import datasets
    from atf.rundata import RunData
    workers = workers or os.cpu_count() or 1
    done: set[str] = set()
    count = 0
    for cfg in configs:
        if not crop_cache_on(cfg.data.crop_cache, datasets.data_provenance(cfg.data)):
            continue
        sig = crop_signature(cfg)
        if sig in done:
            continue
        done.add(sig)
        count += RunData(cfg, cache_workers=workers).prepare_crops()
    if count and log is not None:
        log(f"crop caches: {count} ready for {len(done)} data setting(s)")
    return count


def _log(msg: str) -> None:
    print(f"atf-sweep: {msg}", file=sys.stderr, flush=True)


def prepare_sweep(cells: list, cwd: Path) -> None:
    """`atf-sweep`'s step between the preflight and Ray: the caches of every cell."""
    from orchestration.sweepfile import resolve_paths
    prepare_crops([resolve_paths(c.config, cwd) for c in cells], log=_log)
