"""Cells from a checked sweep file: grid point x variant x seed, each a resolved and validated
RunConfig with its id, tags, readable label and data provenance.

A profile's `set` applies after the file, `--set` last, both through `atf.config.apply` (the
engine `atf-train --set` uses); its `max_seeds` keeps each experiment's first seeds. The same run
reached twice is one cell with its tables merged.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

from atf import keys
from atf.config import ConfigError, DataConfig, RunConfig, apply, merge, nest, validate
from orchestration.cells import cell_tags, data_provenance, table_list
from orchestration.sweepread import Experiment, SweepDoc, fail
from orchestration.sweepspec import DEFAULT_SYNTH, Cell, Profile, Search, SweepError, SynthSpec

__all__ = ["expand", "synth_for", "synth_provenance"]


# -- data provenance (part of a cell's id) -----------------------------------------------------

def synth_for(cfg: RunConfig, synth: SynthSpec | None) -> SynthSpec | None:
    """How `cfg`'s data root is made when it is SynthFace: the sweep's `synth`, or the embedded
    default for the default root (data/synth); None for any other root (real data)."""
    if synth is not None:
        return synth
    default = DataConfig().root
    if Path(cfg.data.root) == Path(default) or Path(cfg.data.root) == Path(default).resolve():
        return DEFAULT_SYNTH
    return None


def synth_provenance(spec: SynthSpec) -> str:
    """The keys.TAG_DATA value of SynthFace made with `spec` (as atf.datasets writes it)."""
    return f"synthetic(scale={spec.scale:g},seed={spec.seed})"


def _has_files(root: str) -> bool:
    p = Path(root)
    return p.is_dir() and any(p.iterdir())


def _provenance(cfg: RunConfig, synth: SynthSpec | None) -> str:
    """The data's provenance; a SynthFace root not generated yet counts as what it will be, so a
    cell's id is the same before and after `atf-sweep` makes the data."""
    spec = synth_for(cfg, synth)
    if spec is not None and not (Path(cfg.data.root) / keys.SYNTH_MARKER).is_file() \
            and not _has_files(cfg.data.root):
        return synth_provenance(spec)
    return data_provenance(cfg)


# -- labels ------------------------------------------------------------------------------------

def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(_short(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={_short(v)}" for k, v in value.items())
    return f"{value:g}" if isinstance(value, float) else str(value)


def _label(name: str, point: dict[str, Any], variant: dict[str, Any], j: int, n_variants: int, seed: int) -> str:
    """`atf-3W hrnet_w18 s0`: what a person reads in the MLflow runs table instead of a hash."""
    parts = [name] + [f"{str(k).rsplit('.', 1)[-1]}={_short(v)}" for k, v in point.items()]
    if n_variants > 1:
        backbone = variant.get("model", {}).get("backbone") if variant else None
        parts.append(str(backbone) if backbone else f"v{j}")
    return " ".join([*parts, f"s{seed}"])


# -- one cell ----------------------------------------------------------------------------------

def _config(doc: SweepDoc, where: str, parts: list[dict[str, Any]], seed: int, profile: Profile | None,
            overrides: dict[str, Any]) -> RunConfig:
    """base <- parts (block, set, grid point, variant) <- seed <- profile.set <- --set, validated."""
    d = doc.base
    for part in parts:
        d = merge(d, nest(part))
    try:
        cfg = apply(d, {"seed": seed})
    except ConfigError as e:
        raise fail(doc.path, where, str(e)) from None
    if profile is not None:
        try:
            cfg = apply(cfg, profile.set)
        except ConfigError as e:
            raise SweepError(f"{profile.path}: set: {e} (applied to {doc.path} {where})") from None
    if overrides:
        try:
            cfg = apply(cfg, overrides)
        except ConfigError as e:
            raise SweepError(f"{doc.path}: --set: {e}") from None
    return cfg


def _search(cfg: RunConfig, search: Search | None, profile: Profile | None, path: Path, where: str) -> Search | None:
    """The search capped by the profile; every space bound must give a valid config."""
    if search is None:
        return None
    if profile is not None and profile.max_samples is not None:
        search = dataclasses.replace(search, num_samples=min(search.num_samples, profile.max_samples))
    try:
        for p in search.space:
            for v in p.bounds():
                apply(cfg, {p.path: v})
    except ConfigError as e:
        raise fail(path, where, str(e)) from None
    return search


def _cell(doc: SweepDoc, exp: Experiment, point: dict[str, Any], j: int, seed: int,
          profile: Profile | None, overrides: dict[str, Any]) -> Cell:
    where = (exp.where or "grid") + (f".variants[{j}]" if len(exp.variants) > 1 else "")
    variant = exp.variants[j]
    cfg = _config(doc, where, [exp.blocks[j], exp.set, point, variant], seed, profile, overrides)
    try:
        from atf.datasets import check_datasets  # lazy: numpy/pandas, not needed for --help
        validate(cfg, check_datasets)
    except ConfigError as e:
        raise fail(doc.path, where, str(e)) from None
    search = _search(cfg, exp.search, profile, doc.path, where)
    synth = profile.synth if profile is not None and profile.synth is not None else doc.synth
    tags = cell_tags(cfg, exp.tables, search.spec() if search else None, _provenance(cfg, synth))
    if profile is not None:
        tags[keys.TAG_PROFILE] = profile.name
    label = _label(exp.name, point, merge(exp.blocks[j], nest(variant)), j, len(exp.variants), seed)
    return Cell(cell_id=tags[keys.TAG_CELL], config=cfg, seed=seed, tables=table_list(exp.tables),
                tags=tags, experiment=exp.name, search=search, label=label)


def expand(doc: SweepDoc, profile: Profile | None = None, overrides: dict[str, Any] | None = None) -> list[Cell]:
    """Every cell of the sweep, in file order; a run reached twice is one cell, tables merged."""
    cells: dict[str, Cell] = {}
    cap = profile.max_seeds if profile is not None else None
    for exp in doc.experiments:
        for point, j, seed in itertools.product(exp.points, range(len(exp.variants)), exp.seeds[:cap]):
            cell = _cell(doc, exp, point, j, seed, profile, overrides or {})
            if cell.cell_id in cells:
                old = cells[cell.cell_id]
                merged = table_list((*old.tables, *cell.tables))
                cell = dataclasses.replace(old, tables=merged, tags={**old.tags, keys.TAG_TABLES: ",".join(merged)})
            cells[cell.cell_id] = cell
    return list(cells.values())
