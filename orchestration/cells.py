"""Cell identity and tags: what makes two runs "the same experiment".

A cell is one training run a table reports. Its id is a hash of the resolved
config in canonical form plus the seed (plus the search spec for a tuned cell),
so the same experiment written in two sweep files (Tables III and VII share
runs) gets the same id, and a finished cell is found and reused instead of
being trained twice.

Left out of the hash, because they do not change results:
- `device`, `data.num_workers`, `data.cache_dir`: where/how fast, not what;
- `data.root`, `data.paths`, `data.registry`: file locations differ per machine;
  the data itself is identified by its provenance string (`atf.data` tag),
  e.g. "real" or "synthetic(scale=0.02,seed=0)".
Canonicalised, so equivalent spellings hash alike:
- derived values replace their "auto"/empty defaults (ratios, decays,
  input/heatmap size, loss kind);
- a baseline drops the knobs it never uses (atdp, similar-point loss weights,
  fine-tuning, novel).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

from atf import keys
from atf.config import RunConfig, crop_cache_on, to_dict

__all__ = [
    "TABLES", "ID_LENGTH", "identity_dict", "cell_id", "cell_tags", "table_list", "table_tag",
    "data_provenance", "loss_tag", "proportions_tag",
]

TABLES = keys.TABLES
ID_LENGTH = 12

_RUNTIME_ONLY = ("device",)
_DATA_RUNTIME_ONLY = ("num_workers", "cache_dir", "root", "paths", "registry")


def data_provenance(cfg: RunConfig) -> str:
    """Where the data comes from ("real" or "synthetic(...)"), from the data registry."""
    try:
        from atf.datasets import data_provenance as provenance
    except ImportError:  # the data registry is not installed: say so rather than guess
        return "unknown"
    return str(provenance(cfg.data))


def loss_tag(cfg: RunConfig) -> str:
    if cfg.scenario == keys.SCENARIO_BASELINE:
        return ""
    return keys.LOSS_MB if cfg.loss.mixed else keys.LOSS_AT


def proportions_tag(cfg: RunConfig) -> str:
    if cfg.scenario == keys.SCENARIO_BASELINE:
        return ""
    return keys.PROPORTIONS_WD if cfg.atdp.decreasing else keys.PROPORTIONS_WOD


def identity_dict(cfg: RunConfig, provenance: str | None = None) -> dict[str, Any]:
    """Canonical mapping of everything in `cfg` that can change a result."""
    d = to_dict(cfg)
    for k in _RUNTIME_ONLY:
        d.pop(k)
    for k in _DATA_RUNTIME_ONLY:
        d["data"].pop(k)
    if d["data"].get("bad_rows") == "refuse":  # the default: clean data trains alike; "skip" may drop rows
        d["data"].pop("bad_rows")
    d["data"]["provenance"] = data_provenance(cfg) if provenance is None else provenance
    # the crop cache changes resampling, so it is part of a result; resolved ("auto" follows the
    # provenance), and left out when off: cells trained from the photos keep their ids
    if crop_cache_on(cfg.data.crop_cache, d["data"]["provenance"]):
        d["data"]["crop_cache"] = "on"
    else:
        d["data"].pop("crop_cache")
    d["model"]["input_size"] = cfg.input_size
    d["model"]["heatmap_size"] = cfg.heatmap_size
    d["loss"]["kind"] = cfg.loss_kind
    d["loss"]["sigma"] = {name: cfg.sigma(name) for name in sorted({*cfg.datasets, cfg.novel} - {""})}
    if cfg.scenario == keys.SCENARIO_BASELINE:
        for k in ("mixed", "alpha", "beta", "gamma", "pairs"):
            d["loss"].pop(k)
        d.pop("atdp")
        d.pop("finetune")
        d.pop("novel")
    else:
        d["atdp"]["ratios"] = list(cfg.ratios)
        d["atdp"]["decays"] = list(cfg.decays)
        if cfg.scenario == keys.SCENARIO_ATF:
            d.pop("finetune")
    return d


def cell_id(cfg: RunConfig, search: dict[str, Any] | None = None, provenance: str | None = None) -> str:
    """Content hash of the canonical config + seed (+ search spec for a tuned cell)."""
    payload = {"config": identity_dict(cfg, provenance), "seed": cfg.seed, "search": search}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:ID_LENGTH]


def table_list(tables: Iterable[str]) -> tuple[str, ...]:
    """Tables de-duplicated, in paper order."""
    return tuple(t for t in TABLES if t in set(tables))


def table_tag(tables: Iterable[str]) -> str:
    return ",".join(table_list(tables))


def cell_tags(cfg: RunConfig, tables: Iterable[str], search: dict[str, Any] | None = None,
              provenance: str | None = None) -> dict[str, str]:
    """The keys.CELL_TAGS values of a cell (pure: from the config and the tables only)."""
    prov = data_provenance(cfg) if provenance is None else provenance
    tags = {
        keys.TAG_TABLES: table_tag(tables),
        keys.TAG_CELL: cell_id(cfg, search, prov),
        keys.TAG_BACKBONE: cfg.model.backbone,
        keys.TAG_TARGET: cfg.target,
        keys.TAG_AUX: ",".join(sorted(cfg.aux)),
        keys.TAG_LOSS: loss_tag(cfg),
        keys.TAG_PROPORTIONS: proportions_tag(cfg),
        keys.TAG_SCENARIO: cfg.scenario,
        keys.TAG_SEED: str(cfg.seed),
        keys.TAG_DATA: prov,
        keys.TAG_SELECTION: cfg.eval.selection,
    }
    assert set(tags) == set(keys.CELL_TAGS)
    return tags
