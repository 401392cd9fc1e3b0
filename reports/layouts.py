"""The paper's table layouts and published numbers, loaded from data files and checked.

Why data: the rows, columns and selectors of tables I-X are facts about the paper, not logic;
keeping them in `tables.yaml` / `paper.yaml` lets a test compare them with the paper's text,
and lets the renderer stay generic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from atf import keys

__all__ = ["Column", "Row", "Section", "Table", "TAG_BY_SHORT", "TABLE_IDS", "LayoutError",
           "load_tables", "parse_table_ids"]

HERE = Path(__file__).parent
TABLES_FILE = HERE / "tables.yaml"
PAPER_FILE = HERE / "paper.yaml"

# YAML writes tag names short ("backbone"); the real names come from keys, never spelled here.
TAG_BY_SHORT: dict[str, str] = {tag.split(".", 1)[1]: tag for tag in keys.CELL_TAGS}
# Values a selector may use for the enumerated tags (anything else is a typo in tables.yaml).
ALLOWED_VALUES: dict[str, tuple[str, ...]] = {
    keys.TAG_LOSS: (keys.LOSS_AT, keys.LOSS_MB, ""),
    keys.TAG_PROPORTIONS: (keys.PROPORTIONS_WD, keys.PROPORTIONS_WOD, ""),
    keys.TAG_SCENARIO: keys.SCENARIOS,
}
TABLE_IDS = keys.TABLES              # the paper's tables, in order
# A higher value is better for these metrics (bold = max); lower for the others (bold = min).
HIGHER_IS_BETTER = frozenset({keys.AUC})
METRIC_LABEL = {keys.NME: "NME (lower is better)", keys.FR: "FR@0.1 (%, lower is better)",
                keys.AUC: "AUC@0.1 (higher is better)"}


class LayoutError(ValueError):
    """tables.yaml / paper.yaml disagree with each other or with keys.py."""


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    dataset: str
    subset: str
    select: dict[str, str] = field(default_factory=dict)   # full tag name -> value


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    select: dict[str, str] | None       # None: a published reference row (paper value only)
    group: str = ""                      # "OCN" / "HRNET" blocks of tables III and IV
    baseline: str | None = None          # row the relative change is measured against
    versus: str | None = None            # row this one is compared with (wd vs wod, L_MB vs L_AT)

    @property
    def reference(self) -> bool:
        return self.select is None


@dataclass(frozen=True)
class Section:
    metric: str                                      # keys.NME | keys.FR | keys.AUC
    rows: tuple[Row, ...]
    paper: dict[str, tuple[float | None, ...]]       # row key -> values in column order

    @property
    def higher_is_better(self) -> bool:
        return self.metric in HIGHER_IS_BETTER

    def row(self, key: str) -> Row:
        for row in self.rows:
            if row.key == key:
                return row
        raise KeyError(key)


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    caption: str
    columns: tuple[Column, ...]
    sections: tuple[Section, ...]
    decimals: int = 2              # NME/FR digits as the paper prints them (AUC: always 4)
    backbones: tuple[str, ...] = ()  # one-backbone tables: candidates, the paper's first

    def decimals_for(self, metric: str) -> int:
        return 4 if metric == keys.AUC else self.decimals

    @property
    def grouped(self) -> bool:
        """Rows in named blocks (OCN / HRNET), as tables III and IV print them."""
        return any(r.group for s in self.sections for r in s.rows)

    def selector(self, row: Row, column: Column, backbone: str = "") -> dict[str, str]:
        """Tags a run must carry to fill (row, column): the column's, overlaid by the row's
        (and the table's chosen backbone for one-backbone tables)."""
        if row.select is None:
            return {}
        return {**column.select, **row.select, **({keys.TAG_BACKBONE: backbone} if backbone else {})}

    def metric_name(self, section: Section, column: Column) -> str:
        return keys.test_metric(column.dataset, column.subset, section.metric)


def _tags(raw: dict | None, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for short, value in (raw or {}).items():
        if short not in TAG_BY_SHORT:
            raise LayoutError(f"{where}: unknown tag {short!r}; expected one of {sorted(TAG_BY_SHORT)}")
        tag, text = TAG_BY_SHORT[short], "" if value is None else str(value)
        if tag in ALLOWED_VALUES and text not in ALLOWED_VALUES[tag]:
            raise LayoutError(f"{where}: {short}={text!r} is not one of {ALLOWED_VALUES[tag]}")
        out[tag] = text
    return out


def _table(tid: str, raw: dict, paper: dict) -> Table:
    columns = tuple(Column(c["key"], str(c["label"]), c["dataset"], c["subset"],
                           _tags(c.get("select"), f"table {tid} column {c['key']}"))
                    for c in raw["columns"])
    rows = {key: Row(key, str(r["label"]), None if r.get("reference") else
                     _tags(r.get("select"), f"table {tid} row {key}"),
                     r.get("group", ""), r.get("baseline"), r.get("versus"))
            for key, r in raw["rows"].items()}
    sections = []
    for s in raw["sections"]:
        metric = s["metric"]
        if metric not in keys.TEST_METRICS:
            raise LayoutError(f"table {tid}: unknown metric {metric!r}")
        published = paper.get(tid, {}).get(metric, {})
        values: dict[str, tuple[float | None, ...]] = {}
        for key in s["rows"]:
            if key not in rows:
                raise LayoutError(f"table {tid} section {metric}: row {key!r} is not defined")
            vals = published.get(key)
            if vals is None:
                raise LayoutError(f"paper.yaml: table {tid} {metric} has no row {key!r}")
            if len(vals) != len(columns):
                raise LayoutError(f"paper.yaml: table {tid} {metric} {key} has {len(vals)} values, "
                                  f"the table has {len(columns)} columns")
            values[key] = tuple(None if v is None else float(v) for v in vals)
        for ref in (r for k in s["rows"] for r in (rows[k].baseline, rows[k].versus) if r):
            if ref not in s["rows"]:
                raise LayoutError(f"table {tid} section {metric}: baseline/versus row {ref!r} missing")
        sections.append(Section(metric, tuple(rows[k] for k in s["rows"]), values))
    return Table(tid, raw["title"], " ".join(raw["caption"].split()), columns, tuple(sections),
                 int(raw.get("decimals", 2)), tuple(raw.get("backbones", ())))


@cache
def load_tables() -> dict[str, Table]:
    """All ten tables in paper order, validated against keys.py and paper.yaml."""
    raw = yaml.safe_load(TABLES_FILE.read_text())
    paper = yaml.safe_load(PAPER_FILE.read_text())
    return {tid: _table(tid, raw[tid], paper) for tid in TABLE_IDS}


def parse_table_ids(text: str | None) -> list[str]:
    """`"IV,vii"` -> `["IV", "VII"]` in paper order; an unknown id is a one-line error."""
    if not text:
        return list(TABLE_IDS)
    wanted = [t.strip().upper() for t in text.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in TABLE_IDS]
    if unknown:
        raise LayoutError(f"unknown table(s) {', '.join(unknown)}; choose from {','.join(TABLE_IDS)}")
    return [t for t in TABLE_IDS if t in wanted]
