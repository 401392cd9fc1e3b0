"""Table cells from tidy runs: seeds -> mean/std, paper value, relative change, best per column.

Why here and not in the renderer: every number a reader sees is decided once, in plain data
(`TableResult`), so Markdown, LaTeX and the tests all see the same values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from atf import keys

from .collect import Runs
from .layouts import Column, Row, Section, Table

__all__ = ["NO_RUN", "Stat", "CellResult", "Comparison", "TableResult", "compute_table", "match_runs",
           "relative_change", "exceeds_spread"]

NO_RUN = "no finished run"


@dataclass(frozen=True)
class Stat:
    """One cell's value over its seeds (std is None with a single seed)."""
    mean: float
    std: float | None
    n: int
    seeds: tuple[str, ...]
    run_ids: tuple[str, ...]


@dataclass(frozen=True)
class CellResult:
    row: Row
    column: Column
    metric: str
    metric_name: str                   # keys.test_metric(...) the value was read from
    selector: dict[str, str]           # tags the runs matched ({} for reference rows)
    ours: Stat | None
    paper: float | None
    delta: float | None = None         # relative improvement (%) over the baseline row; + = better
    delta_exceeds_spread: bool | None = None  # None: a single seed somewhere, spread unknown
    best: bool = False
    problem: str = ""                  # why `ours` is missing, when runs exist
    ours_ocn: Stat | None = None       # the same runs in the public OCN code's NME protocol (OCN cells:
                                       # the protocol of the paper's OCN numbers), when they logged it


@dataclass(frozen=True)
class Comparison:
    """A row-vs-row comparison the table is about (wd vs wod, L_MB vs L_AT)."""
    metric: str
    column: str
    row: str
    versus: str
    diff: float                       # row - versus, in the metric's unit
    better: bool                      # row better than versus
    exceeds_spread: bool | None


@dataclass
class TableResult:
    table: Table
    cells: dict[tuple[int, str, str], CellResult]   # (section index, row key, column key)
    data: tuple[str, ...]                            # keys.TAG_DATA values of the runs used
    selection: tuple[str, ...]                       # keys.TAG_SELECTION values of the runs used
    run_ids: tuple[str, ...]
    comparisons: list[Comparison] = field(default_factory=list)
    backbone: str = ""                               # one-backbone tables: the backbone shown
    experiments: dict[str, str] = field(default_factory=dict)   # run id -> MLflow experiment id (links)
    protocols: tuple[str, ...] = ()                  # keys.PROTOCOLS our shown values are in

    def cell(self, section: int, row: str, column: str) -> CellResult:
        return self.cells[(section, row, column)]

    @property
    def missing(self) -> list[CellResult]:
        return [c for c in self.cells.values() if not c.row.reference and c.ours is None]


def relative_change(ours: float, base: float, higher_is_better: bool) -> float | None:
    """The paper's "relative ascension" in percent: positive when `ours` improves on `base`."""
    if base == 0 or math.isnan(base):
        return None
    gain = ours - base if higher_is_better else base - ours
    return 100.0 * gain / abs(base)


def exceeds_spread(a: Stat, b: Stat) -> bool | None:
    """Is |mean difference| larger than the combined seed spread? None when a side has 1 seed."""
    if a.std is None or b.std is None:
        return None
    return abs(a.mean - b.mean) > math.hypot(a.std, b.std)


def match_runs(runs: pd.DataFrame, selector: dict[str, str], table: str = "") -> tuple[pd.DataFrame, str]:
    """Runs carrying every tag of `selector` (a missing tag reads as ""), one per seed.

    Several runs of one seed: retries of one cell (same keys.TAG_CELL) keep the latest; distinct
    cells (configs that differ beyond the tags) prefer the one whose keys.TAG_TABLES names
    `table`, and the choice is reported rather than averaged as if they were seeds."""
    if runs.empty or not selector:
        return runs.iloc[0:0], ""
    mask = np.ones(len(runs), dtype=bool)
    for tag, value in selector.items():
        mask &= runs[tag].fillna("").astype(str).to_numpy() == value
    hit = runs[mask].copy()
    sources = sorted(set(hit[keys.TAG_DATA].fillna("")))
    mixed = ""
    if len(sources) > 1:   # never average real with synthetic: keep one source, prefer real data
        keep = "real" if "real" in sources else hit.sort_values("start_time")[keys.TAG_DATA].iloc[-1]
        hit = hit[hit[keys.TAG_DATA] == keep]
        mixed = (f"runs on {len(sources)} data sources ({', '.join(sources)}); used {keep} "
                 "(choose with --tag data=VALUE)")
    listed = hit[keys.TAG_TABLES].fillna("").astype(str).str.split(",")
    hit["_in_table"] = [table in names for names in listed]
    hit = hit.sort_values(["_in_table", "start_time"])
    cells = hit.drop_duplicates(subset=[keys.TAG_CELL], keep="last")
    clash = cells[keys.TAG_SEED].duplicated(keep=False)
    note = ""
    if clash.any():
        note = (f"{int(clash.sum())} distinct cells share seed(s) "
                f"{', '.join(sorted(set(cells.loc[clash, keys.TAG_SEED])))}; used the one listing "
                f"table {table} (else the latest): {', '.join(sorted(cells.loc[clash, keys.TAG_CELL]))}")
    note = "; ".join(filter(None, [mixed, note]))
    return cells.drop_duplicates(subset=[keys.TAG_SEED], keep="last").drop(columns="_in_table"), note


def _stat(runs: Runs, selector: dict[str, str], metric_name: str, table: str) -> tuple[Stat | None, str]:
    matched, clash = match_runs(runs.runs, selector, table)
    if matched.empty:
        return None, NO_RUN
    m = runs.metrics
    vals = m[(m["name"] == metric_name) & m["run_id"].isin(matched["run_id"]) & m["value"].notna()]
    if vals.empty:
        return None, f"{len(matched)} run(s) lack metric {metric_name}"
    by_run = dict(zip(vals["run_id"], vals["value"]))
    used = matched[matched["run_id"].isin(by_run)]
    values = np.array([by_run[r] for r in used["run_id"]], dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else None
    lacking = len(matched) - len(used)
    note = "; ".join(filter(None, [f"{lacking} run(s) lack metric {metric_name}" if lacking else "", clash]))
    return Stat(float(values.mean()), std, len(values), tuple(used[keys.TAG_SEED]),
                tuple(used["run_id"])), note


def _best(cells: list[CellResult], higher: bool) -> set[str]:
    vals = {c.row.key: c.ours.mean for c in cells if c.ours is not None}
    if len(vals) < 2:   # a lone value is not "best" of anything
        return set()
    target = max(vals.values()) if higher else min(vals.values())
    return {k for k, v in vals.items() if math.isclose(v, target, rel_tol=1e-12, abs_tol=1e-12)}


def _section_cells(table: Table, index: int, section: Section, runs: Runs, used: set[str],
                   backbone: str) -> dict[tuple[int, str, str], CellResult]:
    raw: dict[tuple[str, str], CellResult] = {}
    for row in section.rows:
        for ci, col in enumerate(table.columns):
            selector = table.selector(row, col, backbone)
            name = table.metric_name(section, col)
            ours, problem = (None, "") if row.reference else _stat(runs, selector, name, table.id)
            ours_ocn = None
            if ours:
                used.update(ours.run_ids)
                parsed = keys.parse_test_metric(name)
                if parsed:
                    ours_ocn, _ = _stat(runs, selector, keys.test_metric(*parsed, keys.PROTOCOL_OCN), table.id)
            raw[row.key, col.key] = CellResult(row, col, section.metric, name, selector, ours,
                                               section.paper[row.key][ci], problem=problem, ours_ocn=ours_ocn)
    out = {}
    for col in table.columns:
        column_cells = [raw[r.key, col.key] for r in section.rows]
        best = _best(column_cells, section.higher_is_better)
        for cell in column_cells:
            delta = spread = None
            base = raw[cell.row.baseline, col.key].ours if cell.row.baseline else None
            if cell.ours and base:
                delta = relative_change(cell.ours.mean, base.mean, section.higher_is_better)
                spread = exceeds_spread(cell.ours, base)
            out[index, cell.row.key, col.key] = CellResult(
                cell.row, col, cell.metric, cell.metric_name, cell.selector, cell.ours, cell.paper,
                delta, spread, cell.row.key in best, cell.problem, cell.ours_ocn)
    return out


def _comparisons(table: Table, cells: dict[tuple[int, str, str], CellResult]) -> list[Comparison]:
    out = []
    for si, section in enumerate(table.sections):
        for row in (r for r in section.rows if r.versus):
            for col in table.columns:
                a, b = cells[si, row.key, col.key].ours, cells[si, row.versus, col.key].ours
                if a and b:
                    diff = a.mean - b.mean
                    better = diff > 0 if section.higher_is_better else diff < 0
                    out.append(Comparison(section.metric, col.label, row.label,
                                          section.row(row.versus).label, diff, better,
                                          exceeds_spread(a, b)))
    return out


def _compute(table: Table, runs: Runs, backbone: str) -> TableResult:
    used: set[str] = set()
    cells: dict[tuple[int, str, str], CellResult] = {}
    for index, section in enumerate(table.sections):
        cells.update(_section_cells(table, index, section, runs, used, backbone))
    picked = runs.runs[runs.runs["run_id"].isin(used)]
    experiments = dict(zip(picked["run_id"], picked["experiment_id"].astype(str))) \
        if "experiment_id" in picked else {}
    protocols = ((keys.PROTOCOL_BENCHMARK,) if used else ()) + (
        (keys.PROTOCOL_OCN,) if any(c.ours_ocn for c in cells.values()) else ())
    return TableResult(table, cells, tuple(sorted(set(picked[keys.TAG_DATA]))),
                       tuple(sorted(set(picked[keys.TAG_SELECTION]))), tuple(sorted(used)),
                       _comparisons(table, cells), backbone, experiments, protocols)


def compute_table(table: Table, runs: Runs) -> TableResult:
    """Fill every cell of `table` from `runs` (cells without runs stay empty, never guessed).

    A one-backbone table (VII-X) uses the paper's backbone when it has runs, else the first
    other candidate that has some; the result names it so the reader is told."""
    if not table.backbones:
        return _compute(table, runs, "")
    results = [_compute(table, runs, b) for b in table.backbones]
    return next((r for r in results if r.run_ids), results[0])
