"""The Tune callback that writes MLflow from the driver (see orchestration.mlflow_log).

Each trial maps to one run: opened (or continued) on start, per-epoch metrics
on each result, test metrics and artifacts from the final result's bundle on
completion, failed on a terminal error. `record_result` does the completion
step from a Tune `Result` too, so the runner can reconcile after a killed
driver (a trial Tune finished but MLflow never heard of).
"""

from __future__ import annotations

import math
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback

from atf import keys
from orchestration.cells import cell_tags
from orchestration.mlflow_log import TrackingStore, with_retry
from orchestration.trainable import ERROR, FAILED, FINAL, STEP, build_config

__all__ = ["MlflowCallback", "trial_tags", "final_to_log", "run_name"]


def trial_tags(payload: dict[str, Any], sampled: dict[str, Any] | None) -> dict[str, str]:
    """Tags of a trial's run: the cell's tags, or a search sample's own (no tables: not reported)."""
    if not sampled:
        return dict(payload["tags"])
    cfg = build_config(payload, sampled)
    tags = cell_tags(cfg, [], provenance=payload["tags"][keys.TAG_DATA])
    tags[keys.TAG_CELL] = payload["cell_id"]
    if keys.TAG_PROFILE in payload["tags"]:
        tags[keys.TAG_PROFILE] = payload["tags"][keys.TAG_PROFILE]
    return tags


def final_to_log(metrics: dict[str, Any], role: str) -> dict[str, float]:
    """Final metrics worth logging; a search sample keeps its test metrics out of MLflow."""
    out = {}
    for k, v in metrics.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or k in (FINAL, STEP):
            continue
        is_test = keys.parse_protocol_metric(k) is not None   # test/* and test_ocn/*
        if is_test and role == keys.ROLE_SEARCH:
            continue
        if is_test or k.startswith((keys.VAL_PREFIX, keys.TIME_PREFIX)):
            out[k] = float(v)
    return out


class MlflowCallback(Callback):
    """Picklable (Tune stores callbacks with the experiment): the store reconnects lazily.

    Writes go through one background thread, in the order Tune called the hooks: Tune's event
    loop only queues them, so a trial's completion (artifacts, figures: most of a second) no longer
    holds back the start of the next trial. A run's epoch metrics go out in batches, at most every
    `flush_every` seconds (and at its end), not one store round trip per epoch. `drain()` waits for the queue (the runner calls it after
    every fit, before it reads the store) and raises the first write that failed. A driver killed
    outright loses what was still queued; `_reconcile` restores finished trials from Tune's results.
    """

    def __init__(self, uri: str, experiment: str, parent_id: str, sweep_name: str, rerun: bool = False,
                 store: TrackingStore | None = None, background: bool = True, flush_every: float = 5.0) -> None:
        """`store`: an open store to write through (the driver's own, when it reconciles); else one is
        opened on first use (a callback travels to where Tune runs it without one). `background`:
        False writes in the calling thread. `flush_every`: seconds a run's epoch metrics may wait to
        go out together (its first epoch, its end and `drain` flush at once)."""
        self.uri, self.experiment = uri, experiment
        self.parent_id, self.sweep_name, self.rerun = parent_id, sweep_name, rerun
        self.background = background
        self.flush_every = flush_every
        self.runs: dict[str, str] = {}   # trial id -> run id
        self.frozen: set[str] = set()    # trials whose run is already finished (a restored, done trial)
        self.logged: dict[str, int] = {}  # run id -> last step in its history (a step is logged once)
        self._store = store
        self._pending: dict[str, list[tuple[str, float, int, int]]] = {}  # run id -> (key, value, ms, step)
        self._flushed: dict[str, float] = {}  # run id -> when its metrics last went out (monotonic)
        self._queue: queue.Queue | None = None
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def store(self) -> TrackingStore:
        if self._store is None:
            self._store = TrackingStore(self.uri, self.experiment)
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "runs": {}, "frozen": set(), "logged": {},
                "_pending": {}, "_flushed": {}, "_queue": None, "_writer": None, "_error": None}

    # -- the writer ------------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        if not self.background:
            fn(*args)
            return
        if self._writer is None or not self._writer.is_alive():
            self._queue = self._queue or queue.Queue()
            self._writer = threading.Thread(target=self._write, name="atf-mlflow-writer", daemon=True)
            self._writer.start()
        self._queue.put((fn, args))

    def _write(self) -> None:
        assert self._queue is not None
        while True:
            fn, args = self._queue.get()
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - kept for drain(); the next writes still go out
                self._error = self._error or e
                print(f"atf-sweep: MLflow write failed ({type(e).__name__}: {e})", file=sys.stderr, flush=True)
            finally:
                self._queue.task_done()

    def drain(self, raise_error: bool = True) -> None:
        """Wait until every queued write is done (waiting epoch metrics included); raise the first
        one that failed."""
        self._submit(self._flush)
        if self._queue is not None:
            self._queue.join()
        if raise_error and self._error is not None:
            error, self._error = self._error, None
            raise error

    # -- Tune's hooks (queue only) ---------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit(self.run_for, trial.trial_id, trial.config)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._submit(self._result, trial.trial_id, trial.config, dict(result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit(self._complete, trial.trial_id, trial.config, dict(trial.last_result or {}),
                     trial.checkpoint)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = ""
        if getattr(trial, "error_file", None) and Path(trial.error_file).is_file():
            error = Path(trial.error_file).read_text()
        self._submit(self._error_run, trial.trial_id, trial.config, error)

    # -- the writes ------------------------------------------------------------------------------
    def run_for(self, trial_id: str, config: dict[str, Any]) -> str:
        if trial_id not in self.runs:
            payload, sampled = config["cell"], config.get("search")
            done = (self.store.trial_run(payload["cell_id"], keys.ROLE_SEARCH, trial_id) if sampled
                    else None if self.rerun
                    else self.store.finished_cells([payload["cell_id"]]).get(payload["cell_id"]))
            if done is not None and done.data.tags.get(keys.TAG_STATUS) == "finished":
                self.runs[trial_id] = done.info.run_id
                self.frozen.add(trial_id)
                return done.info.run_id
            cfg = build_config(payload, sampled)
            name = run_name(payload, self.store, trial_id if sampled else None)
            self.runs[trial_id] = self.store.open_run(  # a search sample nests under its tuned cell's run
                parent_id=payload.get("parent_run") or self.parent_id, sweep_name=self.sweep_name,
                tags=trial_tags(payload, sampled),
                role=payload["role"], trial_id=trial_id, cfg=cfg, name=name)
        return self.runs[trial_id]

    def _result(self, trial_id: str, config: dict[str, Any], result: dict) -> None:
        run_id = self.run_for(trial_id, config)
        if result.get(FINAL) == 1.0 or result.get(FAILED) == 1.0 or trial_id in self.frozen:
            return
        step = int(result.get(STEP, result.get("training_iteration", 0)))
        if run_id not in self.logged:  # a continued run (retry, resume, rerun) already has steps
            hist = with_retry(lambda: self.store.client.get_metric_history(run_id, keys.TRAIN_LOSS))
            self.logged[run_id] = max((m.step for m in hist), default=0)
        if step <= self.logged[run_id]:
            return  # re-trained from an older checkpoint (or from scratch): that step is in the history
        now = int(time.time() * 1000)
        self._pending.setdefault(run_id, []).extend(
            (k, float(v), now, step) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and (k.startswith((keys.TRAIN_PREFIX, keys.VAL_PREFIX, keys.TIME_PREFIX)) or k in (keys.EPOCH, keys.STAGE)))
        self.logged[run_id] = step
        if time.monotonic() - self._flushed.get(run_id, -math.inf) >= self.flush_every:
            self._flush(run_id)

    def _flush(self, run_id: str | None = None) -> None:
        """Send the epoch metrics waiting for `run_id` (every run's when None) in one batch."""
        from mlflow.entities import Metric
        for rid in [run_id] if run_id is not None else list(self._pending):
            items = self._pending.pop(rid, [])
            if items:
                self.store.log_history(rid, [Metric(k, v, ts, step) for k, v, ts, step in items])
            self._flushed[rid] = time.monotonic()

    def _complete(self, trial_id: str, config: dict[str, Any], last: dict, checkpoint: Any) -> None:
        self._flush(self.run_for(trial_id, config))
        if last.get(FAILED) == 1.0:  # a data/config error: failed once, not retried (trainable.py)
            self.store.fail(self.run_for(trial_id, config), str(last.get(ERROR, "failed")),
                            keys.FAILURE_DETERMINISTIC)
            return
        if last.get(FINAL) != 1.0 and trial_id not in self.frozen:  # stopped (its search stopped early)
            self.store.fail(self.run_for(trial_id, config),
                            "stopped before it finished: the search was stopped", keys.FAILURE_STOPPED)
            return
        record_result(self.store, self.run_for(trial_id, config), last, checkpoint, config["cell"]["role"])

    def _error_run(self, trial_id: str, config: dict[str, Any], error: str) -> None:
        self._flush(self.run_for(trial_id, config))
        self.store.fail(self.run_for(trial_id, config), error or "trial failed", keys.FAILURE_CRASH)


def run_name(payload: dict[str, Any], store: TrackingStore, trial_id: str | None) -> str:
    """`atf-W3-wod s0` for a cell; `atf-WA-tuned s0 #3` for its third search sample."""
    label = payload.get("label") or payload["cell_id"]
    if trial_id is None:
        return label
    n = len(store.cell_runs(keys.ROLE_SEARCH, [payload["cell_id"]]).get(payload["cell_id"], []))
    return f"{label} #{n + 1}"


def record_result(store: TrackingStore, run_id: str, metrics: dict[str, Any], checkpoint: Any,
                  role: str) -> None:
    """Final metrics + artifacts from the result bundle; finished. Idempotent."""
    if store.status(run_id) == "finished":
        return
    step = int(metrics.get(STEP, 0))
    if checkpoint is None:
        store.finish(run_id, final_to_log(metrics, role), None, step)
        return
    with tempfile.TemporaryDirectory(prefix="atf-bundle-") as tmp:
        copy_bundle(checkpoint, Path(tmp))
        for junk in Path(tmp).glob(".*"):  # Tune's own metadata files
            junk.unlink() if junk.is_file() else None
        store.finish(run_id, final_to_log(metrics, role), Path(tmp), step)


def copy_bundle(checkpoint: Any, dest: Path) -> list[str]:
    """A trial's result bundle into `dest`, for upload to the shared store; returns what was left out.

    On a local or mounted storage path (shared with others) a symbolic link in the bundle is left
    out with one line: Tune's own copy follows links, so a planted link to a private file of the
    driver's user would end up as an artifact everyone can read. Remote stores hold no links."""
    import shutil

    import pyarrow.fs
    if not isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        checkpoint.to_directory(str(dest))
        return []
    src, skipped = Path(checkpoint.path), []

    def links(folder: str, names: list[str]) -> list[str]:
        out = [n for n in names if (Path(folder) / n).is_symlink()]
        skipped.extend(str((Path(folder) / n).relative_to(src)) for n in out)
        return out
    if src.is_symlink():
        skipped.append(".")
    else:
        shutil.copytree(src, dest, ignore=links, dirs_exist_ok=True)
    if skipped:
        print(f"atf-sweep: result bundle {src}: left out {len(skipped)} symbolic link(s) ({', '.join(skipped[:3])})",
              file=sys.stderr, flush=True)
    return skipped
