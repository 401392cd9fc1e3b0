"""MLflow -> tidy pandas frames: one row per reported run, one row per (run, test metric).

Why a separate step: the report reads MLflow once, then everything downstream (cells, tables,
figures) works on plain DataFrames, which keeps rendering testable and the store read cheap.
Only runs the sweep marks as reported table cells are read (kind=trial, role=cell,
status=finished); Optuna search samples and unfinished runs are left out on the server side.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from atf import keys

__all__ = ["StoreError", "RunFilter", "Runs", "collect", "parse_tag_filters", "DATA_ROOT_PARAM",
           "RUN_COLUMNS"]

DATA_ROOT_PARAM = "data.root"       # RunConfig field path, logged as a param by the sweep
RUN_TAGS = (*keys.CELL_TAGS, keys.TAG_SWEEP)
RUN_COLUMNS = ("run_id", "experiment_id", "start_time", "artifact_uri", DATA_ROOT_PARAM, *RUN_TAGS)
METRIC_COLUMNS = ("run_id", "name", "dataset", "subset", "metric", "value")


class StoreError(RuntimeError):
    """The MLflow store cannot be read (missing file, unreachable server)."""


@dataclass(frozen=True)
class RunFilter:
    sweep: str | None = None                               # keys.TAG_SWEEP value
    tags: dict[str, str] = field(default_factory=dict)     # full tag name -> value

    def wanted(self) -> dict[str, str]:
        """Tag -> value every reported run must carry."""
        return {keys.TAG_KIND: "trial", keys.TAG_ROLE: keys.ROLE_CELL, keys.TAG_STATUS: "finished", **self.tags}

    def filter_string(self) -> str:
        """MLflow search filter selecting only the runs a table may report."""
        parts = []
        for tag, value in self.wanted().items():
            if "'" in value or "`" in tag:
                raise ValueError(f"tag filter {tag}={value!r}: quotes are not supported")
            parts.append(f"tags.`{tag}` = '{value}'")
        if self.sweep:  # a run several sweeps share lists them all ("a,b"): LIKE here, exact in `keeps`
            if "'" in self.sweep or "%" in self.sweep:
                raise ValueError(f"--sweep {self.sweep!r}: quotes and % are not supported")
            parts.append(f"tags.`{keys.TAG_SWEEP}` LIKE '%{self.sweep}%'")
        return " AND ".join(parts)

    def keeps(self, tags: dict[str, str]) -> bool:
        """This sweep is one of the run's sweeps (the exact test the store's LIKE approximates)."""
        return not self.sweep or self.sweep in tags.get(keys.TAG_SWEEP, "").split(",")


@dataclass(frozen=True)
class Runs:
    """What the report read: runs (one row each) and their test metrics (long form)."""
    uri: str
    runs: pd.DataFrame       # RUN_COLUMNS
    metrics: pd.DataFrame    # METRIC_COLUMNS

    @property
    def empty(self) -> bool:
        return self.runs.empty


def parse_tag_filters(items: list[str]) -> dict[str, str]:
    """`["backbone=ocn", "atf.data=real"]` -> full tag names; short names are keys.CELL_TAGS'."""
    known = {t: t for t in RUN_TAGS} | {t.split(".", 1)[1]: t for t in RUN_TAGS}
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in known:
            raise ValueError(f"--tag {item!r}: expected KEY=VALUE with KEY one of {sorted(known)}")
        out[known[name.strip()]] = value.strip()
    return out


def _check_reachable(uri: str) -> None:
    """Fail fast with one line instead of MLflow's minutes of HTTP retries."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.exists():
            raise StoreError(f"MLflow store {uri} does not exist (run atf-sweep first, or pass --mlflow-uri)")
        try:  # a report only reads: never let MLflow turn an empty or foreign file into a database
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError as exc:
            raise StoreError(f"MLflow store {uri} cannot be read ({exc.strerror})") from None
        if head != b"SQLite format 3\x00":
            what = "an empty file" if not head else "not a SQLite database"
            raise StoreError(f"MLflow store {uri}: {path} is {what}, not an MLflow store; refusing to touch it")
    elif uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as resp:
                resp.read()
        except urllib.error.HTTPError:
            pass   # it answered (a proxy without /health): reachable; the search decides the rest
        except (urllib.error.URLError, OSError) as exc:
            raise StoreError(f"MLflow server {uri} is unreachable: {exc}") from None
    elif uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
        if not path.exists():
            raise StoreError(f"MLflow store {uri} does not exist")


def _search(uri: str, filter_string: str) -> list:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    client = MlflowClient(tracking_uri=uri)
    experiments, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, page_token=token)
        experiments += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    runs, token = [], None
    while experiments:
        page = client.search_runs(experiments, filter_string, ViewType.ACTIVE_ONLY,
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    return runs


_SQL_TABLES = {"experiments": {"experiment_id", "lifecycle_stage"},
               "runs": {"run_uuid", "experiment_id", "start_time", "artifact_uri", "lifecycle_stage"},
               "tags": {"key", "value", "run_uuid"}, "params": {"key", "value", "run_uuid"},
               "latest_metrics": {"key", "value", "is_nan", "run_uuid"}}


def _read_sqlite(uri: str, run_filter: RunFilter) -> tuple[list[dict], list[dict]] | None:
    """Run and metric rows straight from a SQLite store's tables; None when its schema is not the
    one expected (then MLflow's client reads it).

    Why: MLflow's search builds an entity per param, tag and metric of every run (~100 params a
    run here), which took 4-6 s per 1000 runs before anything was drawn; the report needs a dozen
    tags, the test metrics and one param. Read-only, the same selection as `filter_string`
    (active runs of active experiments carrying every wanted tag); the latest value of a metric,
    as MLflow reports it, is its `latest_metrics` row."""
    path = Path(uri.removeprefix("sqlite:///"))
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return None
    try:
        if not _sql_schema_ok(con):
            return None
        found = _sql_runs(con, run_filter)
        tags, roots, metric_rows = _sql_details(con, [r[0] for r in found])
    except sqlite3.Error:
        return None
    finally:
        con.close()
    run_rows = [_run_row(rid, str(exp), start, art or "", roots.get(rid, ""), tags[rid])
                for rid, exp, start, art in found]
    return run_rows, metric_rows


def _sql_schema_ok(con: sqlite3.Connection) -> bool:
    """Does the store have every table and column `_read_sqlite` reads?"""
    for table, cols in _SQL_TABLES.items():
        if not cols <= {r[1] for r in con.execute(f"PRAGMA table_info({table})")}:
            return False
    return True


def _sql_runs(con: sqlite3.Connection, run_filter: RunFilter) -> list[tuple]:
    """(run id, experiment id, start time, artifact uri) of the runs `run_filter` keeps, newest first."""
    wanted = run_filter.wanted()
    where = " ".join("AND r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)"
                     for _ in wanted)
    args = [x for kv in wanted.items() for x in kv]
    if run_filter.sweep:  # one of the run's sweeps: its per-sweep key (orchestration.mlflow_log.join), or
        where += (" AND r.run_uuid IN (SELECT run_uuid FROM tags WHERE (key = ? AND value = '1') "
                  "OR (key = ? AND value = ?))")  # the single sweep tag of runs made before it
        args += [f"{keys.TAG_IN_SWEEP}{run_filter.sweep}", keys.TAG_SWEEP, run_filter.sweep]
    return con.execute(
        "SELECT r.run_uuid, r.experiment_id, r.start_time, r.artifact_uri FROM runs r "
        "JOIN experiments e ON e.experiment_id = r.experiment_id "
        f"WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active' {where} "
        "ORDER BY r.start_time DESC", args).fetchall()


def _sql_details(con: sqlite3.Connection, ids: list[str]) -> tuple[dict[str, dict[str, str]], dict[str, str], list[dict]]:
    """(RUN_TAGS per run, data root per run, metric rows) of `ids`, read 500 runs at a time."""
    tags: dict[str, dict[str, str]] = {i: {} for i in ids}
    roots: dict[str, str] = {}
    metric_rows = []
    tag_marks = ",".join("?" * len(RUN_TAGS))
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        marks = ",".join("?" * len(chunk))
        for rid, key, value in con.execute(
                f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks}) AND key IN ({tag_marks})",
                [*chunk, *RUN_TAGS]):
            tags[rid][key] = value or ""
        roots.update(con.execute(f"SELECT run_uuid, value FROM params WHERE key = ? AND run_uuid IN ({marks})",
                                 [DATA_ROOT_PARAM, *chunk]).fetchall())
        for rid, name, value, is_nan in con.execute(
                f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({marks})", chunk):
            row = _metric_row(rid, name, float("nan") if is_nan else float(value))
            if row:
                metric_rows.append(row)
    return tags, roots, metric_rows


def _run_row(run_id: str, experiment_id: str, start_time: int, artifact_uri: str, data_root: str,
             tags: dict[str, str]) -> dict:
    """One row of `Runs.runs` (RUN_COLUMNS)."""
    return {"run_id": run_id, "experiment_id": experiment_id, "start_time": start_time,
            "artifact_uri": artifact_uri, DATA_ROOT_PARAM: data_root, **{t: tags.get(t, "") for t in RUN_TAGS}}


def _metric_row(run_id: str, name: str, value: float) -> dict | None:
    """One row of `Runs.metrics` (METRIC_COLUMNS) for a test metric of either NME protocol (test/*,
    test_ocn/*); None for any other metric."""
    parsed = keys.parse_protocol_metric(name)
    if not parsed:
        return None
    return {"run_id": run_id, "name": name, "dataset": parsed[1], "subset": parsed[2], "metric": parsed[3],
            "value": value}


def collect(uri: str, run_filter: RunFilter = RunFilter()) -> Runs:
    """Read the reported runs of `uri` into tidy frames; raises StoreError with a one-line cause."""
    _check_reachable(uri)
    run_filter.filter_string()  # the same checks of the filter on both paths
    fast = _read_sqlite(uri, run_filter) if uri.startswith("sqlite:///") else None
    if fast is not None:
        return Runs(uri, pd.DataFrame(fast[0], columns=list(RUN_COLUMNS)),
                    pd.DataFrame(fast[1], columns=list(METRIC_COLUMNS)))
    try:
        found = _search(uri, run_filter.filter_string())
    except StoreError:
        raise
    except Exception as exc:  # mlflow raises many types; the user needs the store and the cause
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"cannot read MLflow store {uri}: {first}") from None
    run_rows, metric_rows = [], []
    for run in found:
        tags, info = run.data.tags, run.info
        if not run_filter.keeps(tags):
            continue
        run_rows.append(_run_row(info.run_id, info.experiment_id, info.start_time, info.artifact_uri,
                                 run.data.params.get(DATA_ROOT_PARAM, ""), tags))
        metric_rows += filter(None, (_metric_row(info.run_id, name, float(value))
                                     for name, value in run.data.metrics.items()))
    return Runs(uri, pd.DataFrame(run_rows, columns=list(RUN_COLUMNS)),
                pd.DataFrame(metric_rows, columns=list(METRIC_COLUMNS)))
