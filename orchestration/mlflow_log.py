"""MLflow layout of a sweep, written from the driver only.

One parent run per sweep launch (keys.TAG_KIND "sweep"); one child run per
cell (role cell) or per Optuna sample (role search), with the resolved config
as flattened params, the keys.CELL_TAGS tags, per-epoch metrics (step = epoch
across stages), the final test metrics and the artifacts (config, CED curves,
predictions, pruned model).

Readable by a person: runs are named after the experiment, variant and seed
(`atf-W3-wod s0`; search samples `... #3`), Optuna samples are nested under
their tuned cell's run, the sweep file (and profile) are artifacts of the
parent run, CED curves are PNG figures (one per dataset) beside their CSVs, and the experiment
is marked as model training so MLflow 3 opens it on the runs table
(`runs_url`), not on its GenAI pages.

Why the driver: SQLite wants one writer, and a Tune callback sees every trial.
Several sweeps may still share one store, so every call retries on "database
is locked". A resumed or retried trial continues its own run, found by the
cell-hash tag (and the Tune trial id for search samples).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

from atf import keys
from atf.config import RunConfig, to_dict

__all__ = ["TrackingStore", "flat_params", "with_retry", "TAG_ERROR", "TAG_CHOSEN_FROM",
           "runs_url", "ui_command", "ced_figure", "preload_figures", "join"]

TAG_ERROR = keys.TAG_ERROR           # last error of a failed trial (one line)
TAG_CHOSEN_FROM = keys.TAG_CHOSEN_FROM  # tuned cell: run id of the search sample it reports
_PARENT = "mlflow.parentRunId"
_RUN_NAME = "mlflow.runName"
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # MLflow 3: the training-runs UI
_UI_PORT = 5000
T = TypeVar("T")

if TYPE_CHECKING:
    from mlflow.entities import Metric
# mlflow itself (a second to import) is imported where a store is opened: `atf-sweep` opens its
# store in a thread while Ray starts, so the import overlaps ray.init instead of preceding it.


def runs_url(uri: str, experiment_id: str, port: int = _UI_PORT) -> str:
    """URL of the experiment's runs table in MLflow 3's model-training view (its route
    #/experiments/<id>/runs; workflowType picks the view, else the UI may open its GenAI pages)."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{port}"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def ui_command(uri: str, port: int = _UI_PORT) -> str | None:
    """The command that serves `uri` in the MLflow UI; None for a server (it is already one)."""
    if uri.startswith(("http://", "https://")):
        return None
    return f"mlflow ui --backend-store-uri {uri} --port {port}"


def preload_figures() -> None:
    """Import pyplot (Agg) now: a driver calls this in a thread while Ray starts, so the import
    (0.3 s) does not land on the first finished trial, when every CPU is training."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def ced_figure(curves: dict[str, Path], title: str) -> Any:
    """CED curves (threshold, fraction CSVs of keys.ced_artifact), one line per label, as a figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atf.metrics import read_ced
    fig, ax = plt.subplots(figsize=(4.5, 3.4), dpi=100)
    for label, csv_path in curves.items():
        data = read_ced(csv_path)
        ax.plot(data[:, 0] * (100 if data[-1, 0] <= 1 else 1), data[:, 1], lw=1.6, label=label)
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("fraction of images")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _transient(e: BaseException) -> bool:
    """SQLite busy, or another process creating/migrating the same fresh database right now."""
    text = f"{type(e).__module__} {type(e).__name__} {e}".lower()
    return any(s in text for s in ("database is locked", "database table is locked", "sqlite_busy",
                                   "alembic", "already exists", "no such table", "duplicate column"))


def with_retry(fn: Callable[[], T], attempts: int = 30, what: str = "mlflow") -> T:
    """Call `fn`, retrying with jittered backoff while SQLite is busy (several writers)."""
    delay = 0.05
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - only lock errors are retried, others re-raised
            if not _transient(e) or i == attempts - 1:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    raise RuntimeError(f"{what}: unreachable")


def flat_params(cfg: RunConfig) -> dict[str, str]:
    """Resolved config as dotted keys -> strings (MLflow params)."""
    out: dict[str, str] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict) and v:
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        else:
            out[prefix] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    walk("", to_dict(cfg))
    return out


@contextlib.contextmanager
def _init_lock(uri: str) -> Iterator[None]:
    """Exclusive file lock beside a SQLite store while it is opened (no-op for servers)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.init-lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _now_ms() -> int:
    return int(time.time() * 1000)


class TrackingStore:
    """Thin, retrying wrapper over MlflowClient with the sweep's run layout."""

    def __init__(self, uri: str, experiment: str = "atf") -> None:
        self.uri = uri
        with _init_lock(uri):  # the first contact creates/migrates a fresh SQLite file: one process at a time
            from mlflow.tracking import MlflowClient
            self.client = with_retry(lambda: MlflowClient(tracking_uri=uri))
            self.experiment_id = with_retry(lambda: self._experiment(experiment))

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.tags.get(_EXPERIMENT_KIND[0]) is None:
                with contextlib.suppress(Exception):  # cosmetic (the UI's landing page): never fatal
                    self.client.set_experiment_tag(exp.experiment_id, *_EXPERIMENT_KIND)
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # artifacts beside the database, wherever cwd is
            location = (Path(self.uri[len("sqlite:///"):]).parent / "mlruns").resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={_EXPERIMENT_KIND[0]: _EXPERIMENT_KIND[1]})
        except Exception as e:  # noqa: BLE001 - another sweep created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise e
            return exp.experiment_id

    # -- queries ---------------------------------------------------------------------------------
    def runs(self, filter_string: str) -> list[Any]:
        out, token = [], None
        while True:
            page = with_retry(lambda: self.client.search_runs(
                [self.experiment_id], filter_string, max_results=1000, page_token=token))
            out.extend(page)
            token = page.token
            if not token:
                return out

    def cell_runs(self, role: str = keys.ROLE_CELL, cells: Iterable[str] | None = None) -> dict[str, list[Any]]:
        """Trial runs of one role, by cell id (newest first).

        With `cells`: one query per cell id, filtered on the cell-hash tag in the store, so the cost
        follows the runs of those cells, not the size of the store (a team's store holds tens of
        thousands of runs). Without: every trial run of the role (whole-store scan; tests, tools)."""
        if cells is None:
            found: dict[str, list[Any]] = {}
            for r in self.runs(f"tags.`{keys.TAG_KIND}` = 'trial' AND tags.`{keys.TAG_ROLE}` = '{role}'"):
                found.setdefault(r.data.tags.get(keys.TAG_CELL, ""), []).append(r)
        else:
            found = {}
            for cid in dict.fromkeys(cells):
                mine = [r for r in self._of_cell(cid)
                        if r.data.tags.get(keys.TAG_KIND) == "trial" and r.data.tags.get(keys.TAG_ROLE) == role]
                if mine:
                    found[cid] = mine
        for v in found.values():
            v.sort(key=lambda r: r.info.start_time or 0, reverse=True)
        return found

    def _of_cell(self, cell: str, trial_id: str | None = None) -> list[Any]:
        """Runs carrying cell tag `cell` (and trial tag `trial_id`): one filtered, paged query."""
        for v in (cell, trial_id or ""):
            if "'" in v or "\\" in v:
                raise ValueError(f"cell/trial id {v!r}: quotes and backslashes are not allowed")
        f = f"tags.`{keys.TAG_CELL}` = '{cell}'"
        if trial_id is not None:
            f += f" AND tags.`{keys.TAG_TRIAL}` = '{trial_id}'"
        return self.runs(f)

    def finished_cells(self, cells: Iterable[str] | None = None) -> dict[str, Any]:
        """cell id -> its finished reported run (keys.TAG_STATUS finished, role cell).

        Pass the launch's cell ids (`cells`): one filtered query per cell, flat in the store's size;
        the runner does this once per launch and the callback once per trial for its own cell."""
        out = {}
        for cid, runs in self.cell_runs(keys.ROLE_CELL, cells).items():
            done = [r for r in runs if r.data.tags.get(keys.TAG_STATUS) == "finished"]
            if done:
                out[cid] = done[0]
        return out

    def trial_run(self, cell: str, role: str, trial_id: str) -> Any | None:
        """The run of one Tune trial (any status), or None (filtered on its cell and trial tags)."""
        runs = [r for r in self._of_cell(cell, trial_id)
                if r.data.tags.get(keys.TAG_KIND) == "trial" and r.data.tags.get(keys.TAG_ROLE) == role]
        runs.sort(key=lambda r: r.info.start_time or 0, reverse=True)
        return runs[0] if runs else None

    # -- parent ----------------------------------------------------------------------------------
    def parent(self, sweep_name: str, sweep_file: str, run_id: str | None = None,
               files: Iterable[Path] = ()) -> str:
        """The sweep's parent run: `run_id` when it still exists (resume), else a new one with
        `files` (the sweep file, its profile) as artifacts under sweep/."""
        if run_id:
            try:
                tags = with_retry(lambda: self.client.get_run(run_id)).data.tags
            except Exception:  # noqa: BLE001 - deleted or another store: start a new parent
                tags = {}
            # only this sweep's parent is reopened (the id comes from a file on shared storage)
            if tags.get(keys.TAG_KIND) == "sweep" and tags.get(keys.TAG_SWEEP) == sweep_name:
                with_retry(lambda: self.client.update_run(run_id, status="RUNNING"))
                return run_id
        tags = {keys.TAG_KIND: "sweep", keys.TAG_SWEEP: sweep_name, keys.TAG_STATUS: "running",
                keys.TAG_SWEEP_FILE: sweep_file}
        run = with_retry(lambda: self.client.create_run(self.experiment_id, tags=tags, run_name=sweep_name))
        for f in files:
            if Path(f).is_file():
                with_retry(lambda: self.client.log_artifact(run.info.run_id, str(f), "sweep"))
        return run.info.run_id

    def close_parent(self, run_id: str, ok: bool, counts: dict[str, int], status: str | None = None,
                     error: str = "") -> None:
        """End the parent run: FINISHED/FAILED by `ok`, or `status` (KILLED: interrupted, resumable)."""
        status = status or ("FINISHED" if ok else "FAILED")
        self.log_metrics(run_id, {f"sweep/{k}": float(v) for k, v in counts.items()}, step=0)
        self.set_tags(run_id, {keys.TAG_STATUS: status.lower() if status != "FINISHED" else "finished",
                               **({TAG_ERROR: error[:500]} if error else {})})
        with_retry(lambda: self.client.set_terminated(run_id, status))

    # -- trial runs ------------------------------------------------------------------------------
    def open_run(self, *, parent_id: str, sweep_name: str, tags: dict[str, str], role: str,
                 trial_id: str, cfg: RunConfig, name: str, params: bool = True) -> str:
        """Continue this cell's unfinished run (or this sample's run), else create one (with the
        config as params unless `params` is False: a tuned cell logs its chosen config later)."""
        cid = tags[keys.TAG_CELL]
        existing = None
        for r in self.cell_runs(role, [cid]).get(cid, []):
            status = r.data.tags.get(keys.TAG_STATUS)
            if role == keys.ROLE_SEARCH and r.data.tags.get(keys.TAG_TRIAL) != trial_id:
                continue
            if status != "finished":
                existing = r.info.run_id
                break
        all_tags = {**tags, keys.TAG_KIND: "trial", keys.TAG_ROLE: role, keys.TAG_SWEEP: sweep_name,
                    keys.TAG_TRIAL: trial_id, keys.TAG_STATUS: "running"}
        if existing is None:
            run = with_retry(lambda: self.client.create_run(
                self.experiment_id, tags={**all_tags, _PARENT: parent_id}, run_name=name))
            existing = run.info.run_id
            if params:
                self.log_params(existing, flat_params(cfg))
        else:
            with_retry(lambda: self.client.update_run(existing, status="RUNNING"))
            self.set_tags(existing, all_tags)
        join(self, existing, sweep_name, [t for t in tags.get(keys.TAG_TABLES, "").split(",") if t])
        return existing

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param
        items = [Param(k, v[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            chunk = items[i:i + 100]
            with_retry(lambda: self.client.log_batch(run_id, params=chunk))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        with_retry(lambda: self.client.log_batch(run_id, tags=items))

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        ts = _now_ms()
        from mlflow.entities import Metric
        items = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            chunk = items[i:i + 500]
            with_retry(lambda: self.client.log_batch(run_id, metrics=chunk))

    def log_history(self, run_id: str, history: Iterable[Metric]) -> None:
        items = list(history)
        for i in range(0, len(items), 500):
            chunk = items[i:i + 500]
            with_retry(lambda: self.client.log_batch(run_id, metrics=chunk))

    def finish(self, run_id: str, metrics: dict[str, float], bundle: Path | None, step: int) -> None:
        self.log_metrics(run_id, metrics, step)
        if bundle is not None and bundle.is_dir() and any(bundle.iterdir()):
            with_retry(lambda: self.client.log_artifacts(run_id, str(bundle)))
            self.log_ced_figures(run_id, bundle)
        self.set_tags(run_id, {keys.TAG_STATUS: "finished"})
        stale = [t for t in (TAG_ERROR, keys.TAG_FAILURE)  # an earlier attempt's error: not this run's verdict
                 if t in with_retry(lambda: self.client.get_run(run_id)).data.tags]
        for t in stale:
            with_retry(lambda: self.client.delete_tag(run_id, t))
        with_retry(lambda: self.client.set_terminated(run_id, "FINISHED"))

    def log_ced_figures(self, run_id: str, bundle: Path) -> None:
        """ced/<dataset>.png beside the CSVs, one line per test subset (log_figure), for reading in
        the UI. One figure per dataset, not per subset: WFLW's seven took 1.2 s of the driver's time
        per trial, most of what a sweep of short trials spent between them."""
        import matplotlib.pyplot as plt
        by_dataset: dict[str, dict[str, Path]] = {}
        for csv in sorted((bundle / keys.ARTIFACT_CED_DIR).glob("*.csv")):
            dataset, _, subset = csv.stem.rpartition("_")
            by_dataset.setdefault(dataset or csv.stem, {})[subset] = csv
        for dataset, curves in by_dataset.items():
            try:
                fig = ced_figure(curves, f"CED {dataset}")
            except (OSError, ValueError, IndexError):
                continue  # an empty or odd curve: the CSVs are there, the picture is a nicety
            try:
                with_retry(lambda: self.client.log_figure(run_id, fig, f"{keys.ARTIFACT_CED_DIR}/{dataset}.png"))
            finally:
                plt.close(fig)

    def fail(self, run_id: str, error: str, kind: str = keys.FAILURE_CRASH) -> None:
        first = (error.strip().splitlines() or ["failed"])[-1][:500]
        self.set_tags(run_id, {keys.TAG_STATUS: "failed", TAG_ERROR: first, keys.TAG_FAILURE: kind})
        with_retry(lambda: self.client.set_terminated(run_id, "FAILED"))

    def stop_unfinished(self, cell: str, role: str, error: str, failed: dict[str, str] | None = None) -> int:
        """Close this cell's still-running runs of `role` (samples of a stopped search): those whose
        trial is in `failed` (trial id -> error) as deterministic failures, the rest as stopped."""
        running = [r for r in self.cell_runs(role, [cell]).get(cell, [])
                   if r.data.tags.get(keys.TAG_STATUS) == "running"]
        for r in running:
            err = (failed or {}).get(r.data.tags.get(keys.TAG_TRIAL, ""))
            self.fail(r.info.run_id, err or error, keys.FAILURE_DETERMINISTIC if err else keys.FAILURE_STOPPED)
        return len(running)

    def failure_reasons(self, cells: Iterable[str]) -> dict[str, str]:
        """cell id -> the one-line error of its newest failed reported run (cells that have one)."""
        out = {}
        for cid, runs in self.cell_runs(keys.ROLE_CELL, cells).items():
            failed = [r for r in runs if r.data.tags.get(keys.TAG_STATUS) == "failed"]
            if failed:
                out[cid] = failed[0].data.tags.get(TAG_ERROR, "failed")
        return out

    def status(self, run_id: str) -> str:
        return with_retry(lambda: self.client.get_run(run_id)).data.tags.get(keys.TAG_STATUS, "")

    def add_tables(self, run: Any, tables: Iterable[str]) -> None:
        """A reused cell also feeds this sweep's tables: unite its tables tag."""
        from orchestration.cells import table_tag
        old = [t for t in run.data.tags.get(keys.TAG_TABLES, "").split(",") if t]
        new = table_tag([*old, *tables])
        if new != run.data.tags.get(keys.TAG_TABLES):
            self.set_tags(run.info.run_id, {keys.TAG_TABLES: new})

    def copy_history(self, src_run_id: str, dst_run_id: str) -> None:
        """Per-epoch metric history of a search sample, onto the cell run that reports it."""
        run = with_retry(lambda: self.client.get_run(src_run_id))
        for key in run.data.metrics:
            hist = with_retry(lambda: self.client.get_metric_history(src_run_id, key))
            from mlflow.entities import Metric
            self.log_history(dst_run_id, [Metric(m.key, m.value, m.timestamp, m.step) for m in hist])


# -- membership: tags several sweeps share accumulate ------------------------------------------------

_IN_SWEEP = keys.TAG_IN_SWEEP  # + sweep name = "1": one key per sweep, so concurrent adds never collide
_IN_TABLE = keys.TAG_IN_TABLE  # + table = "1"


def join(store: TrackingStore, run_id: str, sweep_name: str, tables: Iterable[str]) -> None:
    """Add `sweep_name` and `tables` to a run's sweeps (keys.TAG_SWEEP) and tables (keys.TAG_TABLES).

    Why per-item keys: two sweeps adding to one comma-separated tag read-modify-write it and one
    loses. Adding a key of its own never collides; the comma tags (what reports filter and show)
    are then rewritten as the union of the keys, re-read and rewritten until they agree, so the
    last writer always leaves the full union (each writer verifies after its own write)."""
    from orchestration.cells import table_tag

    def union(tags: dict[str, str]) -> tuple[str, str]:
        sweeps = sorted({k[len(_IN_SWEEP):] for k in tags if k.startswith(_IN_SWEEP)})
        tabs = table_tag([k[len(_IN_TABLE):] for k in tags if k.startswith(_IN_TABLE)])
        return ",".join(sweeps), tabs

    tags = with_retry(lambda: store.client.get_run(run_id)).data.tags
    legacy_sweeps = [s for s in tags.get(keys.TAG_SWEEP, "").split(",") if s]
    legacy_tables = [t for t in tags.get(keys.TAG_TABLES, "").split(",") if t]
    items = {f"{_IN_SWEEP}{s}": "1" for s in {*legacy_sweeps, sweep_name}}
    items |= {f"{_IN_TABLE}{t}": "1" for t in {*legacy_tables, *tables}}
    store.set_tags(run_id, items)
    for _ in range(8):
        tags = with_retry(lambda: store.client.get_run(run_id)).data.tags
        sweeps, tabs = union(tags)
        if tags.get(keys.TAG_SWEEP) == sweeps and tags.get(keys.TAG_TABLES) == tabs:
            return
        store.set_tags(run_id, {keys.TAG_SWEEP: sweeps, keys.TAG_TABLES: tabs})
        time.sleep(0.02 * (1 + random.random()))

