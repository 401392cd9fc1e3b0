"""MLflow -> tidy pandas frames: one row per reported run, one row per (run, test metric).

Why a separate step: the report reads MLflow once, then everything downstream (cells, tables,
figures) works on plain DataFrames, which keeps rendering testable and the store read cheap.
Only runs the sweep marks as reported table cells are read (kind=trial, role=cell,
status=finished); Optuna search samples and unfinished runs are left out on the server side.
"""

from __future__ import annotations

import os
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

    def filter_string(self) -> str:
        """MLflow search filter selecting only the runs a table may report."""
        wanted = {keys.TAG_KIND: "trial", keys.TAG_ROLE: keys.ROLE_CELL, keys.TAG_STATUS: "finished",
                  **({keys.TAG_SWEEP: self.sweep} if self.sweep else {}), **self.tags}
        parts = []
        for tag, value in wanted.items():
            if "'" in value or "`" in tag:
                raise ValueError(f"tag filter {tag}={value!r}: quotes are not supported")
            parts.append(f"tags.`{tag}` = '{value}'")
        return " AND ".join(parts)


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


def collect(uri: str, run_filter: RunFilter = RunFilter()) -> Runs:
    """Read the reported runs of `uri` into tidy frames; raises StoreError with a one-line cause."""
    _check_reachable(uri)
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
        run_rows.append({"run_id": info.run_id, "experiment_id": info.experiment_id,
                         "start_time": info.start_time, "artifact_uri": info.artifact_uri,
                         DATA_ROOT_PARAM: run.data.params.get(DATA_ROOT_PARAM, ""),
                         **{t: tags.get(t, "") for t in RUN_TAGS}})
        for name, value in run.data.metrics.items():
            parsed = keys.parse_test_metric(name)
            if parsed:
                metric_rows.append({"run_id": info.run_id, "name": name, "dataset": parsed[0],
                                    "subset": parsed[1], "metric": parsed[2], "value": float(value)})
    return Runs(uri, pd.DataFrame(run_rows, columns=list(RUN_COLUMNS)),
                pd.DataFrame(metric_rows, columns=list(METRIC_COLUMNS)))
