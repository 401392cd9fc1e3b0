"""The Tune callback that writes MLflow from the driver (see orchestration.mlflow_log).

Each trial maps to one run: opened (or continued) on start, per-epoch metrics
on each result, test metrics and artifacts from the final result's bundle on
completion, failed on a terminal error. `record_result` does the completion
step from a Tune `Result` too, so the runner can reconcile after a killed
driver (a trial Tune finished but MLflow never heard of).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

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
    """Picklable (Tune stores callbacks with the experiment): the store reconnects lazily."""

    def __init__(self, uri: str, experiment: str, parent_id: str, sweep_name: str, rerun: bool = False,
                 store: TrackingStore | None = None) -> None:
        """`store`: an open store to write through (the driver's own, when it reconciles); else one is
        opened on first use (a callback travels to where Tune runs it without one)."""
        self.uri, self.experiment = uri, experiment
        self.parent_id, self.sweep_name, self.rerun = parent_id, sweep_name, rerun
        self.runs: dict[str, str] = {}   # trial id -> run id
        self.frozen: set[str] = set()    # trials whose run is already finished (a restored, done trial)
        self.logged: dict[str, int] = {}  # run id -> last step in its history (a step is logged once)
        self._store = store

    @property
    def store(self) -> TrackingStore:
        if self._store is None:
            self._store = TrackingStore(self.uri, self.experiment)
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "runs": {}, "frozen": set(), "logged": {}}

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
            self.runs[trial_id] = self.store.open_run(
                parent_id=self.parent_id, sweep_name=self.sweep_name, tags=trial_tags(payload, sampled),
                role=payload["role"], trial_id=trial_id, cfg=cfg, name=name)
        return self.runs[trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.run_for(trial.trial_id, trial.config)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self.run_for(trial.trial_id, trial.config)
        if result.get(FINAL) == 1.0 or result.get(FAILED) == 1.0 or trial.trial_id in self.frozen:
            return
        step = int(result.get(STEP, result.get("training_iteration", 0)))
        if run_id not in self.logged:  # a continued run (retry, resume, rerun) already has steps
            hist = with_retry(lambda: self.store.client.get_metric_history(run_id, keys.TRAIN_LOSS))
            self.logged[run_id] = max((m.step for m in hist), default=0)
        if step <= self.logged[run_id]:
            return  # re-trained from an older checkpoint (or from scratch): that step is in the history
        metrics = {k: v for k, v in result.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and (k.startswith((keys.TRAIN_PREFIX, keys.VAL_PREFIX, keys.TIME_PREFIX)) or k in (keys.EPOCH, keys.STAGE))}
        self.store.log_metrics(run_id, metrics, step=step)
        self.logged[run_id] = step

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if last.get(FAILED) == 1.0:  # a data/config error: failed once, not retried (trainable.py)
            self.store.fail(self.run_for(trial.trial_id, trial.config), str(last.get(ERROR, "failed")),
                            keys.FAILURE_DETERMINISTIC)
            return
        if last.get(FINAL) != 1.0 and trial.trial_id not in self.frozen:  # stopped (its search stopped early)
            self.store.fail(self.run_for(trial.trial_id, trial.config),
                            "stopped before it finished: the search was stopped", keys.FAILURE_STOPPED)
            return
        record_result(self.store, self.run_for(trial.trial_id, trial.config), trial.last_result or {},
                      trial.checkpoint, trial.config["cell"]["role"])

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = ""
        if getattr(trial, "error_file", None) and Path(trial.error_file).is_file():
            error = Path(trial.error_file).read_text()
        self.store.fail(self.run_for(trial.trial_id, trial.config), error or "trial failed", keys.FAILURE_CRASH)


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
        checkpoint.to_directory(tmp)
        for junk in Path(tmp).glob(".*"):  # Tune's own metadata files
            junk.unlink() if junk.is_file() else None
        store.finish(run_id, final_to_log(metrics, role), Path(tmp), step)
