"""`atf-data cache`: build (or check) the face-crop caches a run or a table sweep will read.

    atf-data cache --data-root /data/real                     # the paper's OCN and HRNet protocols
    atf-data cache --data-root /data/real --config my.yaml    # what that run config reads
    atf-data cache --data-root /data/real --cache-dir /shared/atf-crops --workers 16

Without --config it caches, for every dataset found under the root, what the table sweeps' two
protocol blocks read (sweeps/base/protocol_ocn.yaml and protocol_hrnet.yaml: each training file in
its augmentation's margin, each test file as its exact evaluation crops). `atf-train` and
`atf-sweep` do the same on first use; this command does it ahead, e.g. on a node with many cores.
Exit codes: 0 done, 2 bad input (one line naming the file or key).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from atf.cli.common import add_data_root, make_parser

__all__ = ["cache_main", "DEFAULT_PROTOCOLS"]

DEFAULT_PROTOCOLS = ("protocol_ocn.yaml", "protocol_hrnet.yaml")   # under <repo>/sweeps/base/


def _protocols() -> list[Path]:
    base = Path(__file__).resolve().parents[2] / "sweeps" / "base"
    paths = [base / name for name in DEFAULT_PROTOCOLS]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"{missing[0]}: the table protocol block is not here (an installed copy of atf?); "
                         "pass --config FILE")
    return paths


def _configs(a: argparse.Namespace) -> list:
    """One baseline config per (config file, dataset found under the root), crop cache on."""
    from atf import datasets
    from atf.config import RunConfig, apply, parse_assignments, read_yaml
    names = [n.strip() for n in a.datasets.split(",") if n.strip()] if a.datasets else datasets.dataset_names()
    upd = {"data.crop_cache": True, **parse_assignments(a.sets)}
    if a.data_root:
        upd["data.root"] = str(a.data_root)
    if a.cache_dir:
        upd["data.cache_dir"] = str(a.cache_dir)
    out = []
    for path in a.config or _protocols():
        base = apply(RunConfig(), read_yaml(Path(path)))
        for name in names:
            datasets.get_dataset(name)
            cfg = apply(base, {"scenario": "baseline", "target": name, "aux": [], "novel": "", **upd})
            try:
                datasets.csv_path(name, "train", root=cfg.data)
            except datasets.DatasetError:
                if a.datasets:
                    raise
                continue   # a dataset this root does not hold
            out.append(cfg)
    if not out:
        raise ValueError(f"{a.data_root or 'the data root'}: no dataset with a training file here "
                         f"(looked for {', '.join(names)})")
    return out


def cache_main(argv: list[str] | None = None) -> int:
    p = make_parser("atf-data cache", "Build the face-crop caches (atf.cropcache) a run or the table sweeps "
                    "read, or check the ones present.", "\n".join(
                        "  " + ln.strip() for ln in __doc__.strip().splitlines()[2:5]))
    add_data_root(p, "data root (<root>/<dataset>/face_landmarks_*.csv)")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="a run config (atf-train's YAML) whose crops to cache; repeatable (default: the two "
                        "table protocols)")
    p.add_argument("--datasets", default="", metavar="A,B", help="only these datasets (default: all found)")
    p.add_argument("--cache-dir", default=None, metavar="DIR", help="where caches live (default: the config's "
                   "data.cache_dir, else ~/.cache/atf/crops)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="build processes (default: all CPUs)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set model.input_size=128")
    a = p.parse_args(argv)
    from atf.config import ConfigError
    from atf.cropcache import CacheError
    from atf.datasets import DatasetError
    from atf.readers import AnnotationError
    from atf.rundata import RunData
    t0 = time.perf_counter()
    try:
        caches: dict[str, dict] = {}
        for cfg in _configs(a):
            rd = RunData(cfg, cache_workers=max(1, a.workers))
            rd.prepare_crops()
            for cache in rd.crop_caches():
                caches[str(cache.folder)] = cache.manifest
    except (ConfigError, CacheError, DatasetError, AnnotationError, ValueError, OSError) as e:
        print(f"atf-data cache: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    for folder, m in sorted(caches.items()):
        print(f"{folder}  {m['faces']} faces, {m['pixel_bytes'] / 2**20:.0f} MiB, {m['geometry']['view']} view")
    mib = sum(m["pixel_bytes"] for m in caches.values()) / 2**20
    print(f"atf-data cache: {len(caches)} caches ready ({mib:.0f} MiB) in {time.perf_counter() - t0:.1f} s")
    return 0
