"""Run a sweep: skip finished cells, launch the rest through Ray Tune, log to MLflow.

Order of work: (1) cells MLflow already has finished are reused (their tables
tag gains this sweep's tables) unless --rerun; (2) plain cells run as one
Tuner over a grid of cell payloads; (3) each tuned cell runs its own Tuner
with OptunaSearch, then the sample with the lowest validation NME is
recorded as the cell's reported run; (4) whatever Tune finished but MLflow
missed (a killed driver) is reconciled from the result grid.

A launch record (`<storage>/<sweep>-<key>.launch.json`) names the Tune
experiment folders and the parent run, so `--resume` restores exactly those
experiments (`Tuner.restore(..., resume_errored=True)`): finished trials are
neither lost nor run twice, unfinished ones continue from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atf import keys
from orchestration.mlflow_log import TAG_CHOSEN_FROM, TrackingStore, default_uri
from orchestration.sweepfile import Cell, Resources, Sweep, resolve_paths
from orchestration.trainable import FINAL, build_config, cell_trainable, payload

__all__ = ["SweepOptions", "SweepSummary", "run_sweep", "parse_faults", "FAULT_ENV"]

_QUIET_ENV = {  # our progress line replaces Tune's tables; per-epoch checkpoints are intended
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "1",
}
_SPEED_ENV = {  # MLflow records everything: Tune's CSV/JSON/TensorBoard loggers only cost time (2.4 s,
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # 237 MiB: TensorBoard imports torch in the driver)
    "OMP_WAIT_POLICY": "PASSIVE",  # trials' idle OpenMP threads sleep, not spin (local Ray's workers inherit it)
}
FAULT_ENV = "ATF_SWEEP_FAULT"  # "raise@2:CELLPREFIX,kill@1" (drills and tests; see trainable.py)


@dataclass(frozen=True)
class SweepOptions:
    address: str | None = None      # Ray cluster address; None = local Ray started here
    num_cpus: int | None = None     # local Ray CPUs (None = all of the machine)
    mlflow_uri: str | None = None   # None = sqlite:///<cwd>/mlflow.db
    experiment: str = "atf"
    storage: str | None = None      # Tune storage_path (None = <cwd>/ray_results)
    resume: bool = False
    rerun: bool = False
    max_failures: int | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    progress: bool = True
    progress_every: float = 30.0    # seconds between progress blocks (orchestration.progress)
    checkpoint_every: int = 1       # epochs between trial checkpoints (what a retry resumes from); 0 = none
    base_dir: str | None = None     # relative paths resolve here (None = cwd); `submit` sets the submitter's


@dataclass
class SweepSummary:
    name: str
    total: int
    reused: int = 0
    finished: int = 0
    failed: int = 0
    parent_run_id: str = ""
    failed_cells: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.reused + self.finished == self.total

    def line(self) -> str:
        return (f"sweep {self.name}: {self.total} cells, {self.reused} reused, {self.finished} run, "
                f"{self.failed} failed" + (f" ({', '.join(self.failed_cells)})" if self.failed_cells else "")
                + f"; MLflow parent run {self.parent_run_id}")


def parse_faults(spec: str) -> list[tuple[str, int, str]]:
    """`mode@epoch[:cell-prefix]` items, comma separated -> (mode, epoch, prefix)."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        head, _, prefix = item.partition(":")
        mode, _, epoch = head.partition("@")
        if mode not in ("raise", "kill") or not epoch.isdigit():
            raise ValueError(f"{FAULT_ENV}: bad item {item!r}; expected raise@K[:cell] or kill@K[:cell]")
        out.append((mode, int(epoch), prefix))
    return out


def _fault_for(cell_id: str, faults: list[tuple[str, int, str]], marker_dir: Path) -> dict[str, Any] | None:
    for mode, epoch, prefix in faults:
        if cell_id.startswith(prefix):
            return {"mode": mode, "epoch": epoch, "marker": str(marker_dir / f"{cell_id}.{mode}")}
    return None


def _sweep_key(sweep: Sweep) -> str:
    return hashlib.sha256(",".join(sorted(c.cell_id for c in sweep.cells())).encode()).hexdigest()[:8]


def _is_uri(s: str) -> bool:
    return "://" in s


def _init_ray(opts: SweepOptions) -> bool:
    """Join `address` or start a local Ray; True when this call started it (and must stop it)."""
    import ray
    if ray.is_initialized():
        return False
    quiet = os.environ.get("ATF_SWEEP_VERBOSE", "") == ""
    if opts.address:
        ray.init(address=opts.address, log_to_driver=not quiet)
    else:
        # address="local": always a fresh in-process instance, never a `ray start` cluster that
        # happens to run on this machine (plain ray.init() would join that one)
        ray.init(address="local", num_cpus=opts.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=not quiet)
    return True


def _resources(sweep: Sweep, opts: SweepOptions) -> Resources:
    import ray
    res = Resources(cpu=opts.cpus_per_trial or sweep.resources.cpu,
                    gpu=sweep.resources.gpu if opts.gpus_per_trial is None else opts.gpus_per_trial)
    if res.gpu > 0 and ray.cluster_resources().get("GPU", 0) == 0:
        print(f"[{sweep.name}] no GPU in this Ray cluster: trials run on CPU", file=sys.stderr)
        res = dataclasses.replace(res, gpu=0.0)
    return res


def _dirname(trial: Any) -> str:
    return f"{trial.config['cell']['cell_id']}_{trial.trial_id}"


class _Launch:
    """The launch record: Tune experiment names and the parent run of one sweep launch."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = path, data

    @classmethod
    def open(cls, folder: Path, sweep: Sweep, resume: bool) -> "_Launch":
        path = folder / f"{sweep.name}-{_sweep_key(sweep)}.launch.json"
        if resume and path.is_file():
            return cls(path, json.loads(path.read_text()))
        if resume:
            print(f"[{sweep.name}] nothing to resume ({path.name} not found): starting a new launch")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return cls(path, {"stamp": stamp, "grid": f"{sweep.name}-{_sweep_key(sweep)}-{stamp}",
                          "search": {}, "parent_run_id": None, "resumed": False})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1))


def run_sweep(sweep: Sweep, opts: SweepOptions) -> SweepSummary:
    """Run every unfinished cell of `sweep`; see the module docstring."""
    import ray
    from ray import tune

    from orchestration.progress import ProgressCallback
    from orchestration.tune_logging import MlflowCallback

    for k, v in {**_QUIET_ENV, **_SPEED_ENV}.items():
        os.environ.setdefault(k, v)
    cwd = Path(opts.base_dir).resolve() if opts.base_dir else Path.cwd().resolve()
    storage = opts.storage or str(cwd / "ray_results")
    if not _is_uri(storage):
        storage = str((cwd / storage).resolve())
    local_dir = Path(storage) if not _is_uri(storage) else cwd / "ray_results"
    uri = opts.mlflow_uri or default_uri(cwd)
    cells = sweep.cells()
    # A fresh SQLite store (create + migrate: seconds) holds no finished cell, so Ray is needed:
    # start both at once. An existing store opens quickly and may make Ray unnecessary.
    fresh = uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists() and bool(cells)
    with ThreadPoolExecutor(1) as pool:
        opening = pool.submit(TrackingStore, uri, opts.experiment)
        started = _init_ray(opts) if fresh else False
        try:
            store = opening.result()
        except BaseException:
            if started:
                ray.shutdown()
            raise
    summary = SweepSummary(sweep.name, len(cells))

    launch = _Launch.open(local_dir, sweep, opts.resume)
    launch.data["parent_run_id"] = store.parent(
        sweep.name, str(sweep.path.resolve()), launch.data.get("parent_run_id"),
        files=[sweep.path, *([sweep.profile.path] if sweep.profile else [])])
    launch.data["resumed"] = opts.resume
    launch.save()
    parent = summary.parent_run_id = launch.data["parent_run_id"]

    finished = {} if opts.rerun else store.finished_cells(c.cell_id for c in cells)
    for c in cells:
        if c.cell_id in finished:
            store.add_tables(finished[c.cell_id], c.tables)
    summary.reused = sum(c.cell_id in finished for c in cells)
    todo = [c for c in cells if c.cell_id not in finished]
    if summary.reused:
        print(f"[{sweep.name}] {summary.reused} cell(s) already finished in MLflow: reused")
    if not todo:
        store.close_parent(parent, True, {"cells": summary.total, "reused": summary.reused})
        if started:
            ray.shutdown()
        return summary

    started = _init_ray(opts) or started
    try:
        res = _resources(sweep, opts)
        faults = parse_faults(os.environ.get(FAULT_ENV, ""))
        marker_dir = local_dir / "faults" / launch.data["stamp"]
        max_failures = sweep.max_failures if opts.max_failures is None else opts.max_failures

        def cell_payload(c: Cell, role: str) -> dict[str, Any]:
            p = payload(c.cell_id, resolve_paths(c.config, cwd), role, res.cpu,
                        _fault_for(c.cell_id, faults, marker_dir))
            p["tags"] = c.tags
            p["checkpoint_every"] = opts.checkpoint_every
            p["label"] = c.label  # the MLflow run name
            return p

        def callbacks(label: str, n_trials: int, parent_id: str) -> list[Any]:
            cbs: list[Any] = [MlflowCallback(uri, opts.experiment, parent_id, sweep.name, opts.rerun)]
            if opts.progress:
                cbs.append(ProgressCallback(label, n_trials, every=opts.progress_every))
            return cbs

        def run_config(name: str, label: str, n_trials: int, parent_id: str = parent, stop: Any = None) -> Any:
            return tune.RunConfig(
                name=name, storage_path=storage, verbose=0, callbacks=callbacks(label, n_trials, parent_id),
                stop=stop,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1))

        trainable = tune.with_resources(cell_trainable, res.as_tune())

        def fit(name: str, build: Any) -> Any:
            path = f"{storage.rstrip('/')}/{name}"
            if opts.resume and tune.Tuner.can_restore(path):
                print(f"[{sweep.name}] resuming Tune experiment {name}")
                tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
            else:
                tuner = build()
            return tuner.fit()

        plain = [c for c in todo if c.search is None]
        if plain:
            payloads = [cell_payload(c, keys.ROLE_CELL) for c in plain]
            grid = fit(launch.data["grid"], lambda: tune.Tuner(
                trainable, param_space={"cell": tune.grid_search(payloads)},
                tune_config=tune.TuneConfig(max_concurrent_trials=opts.max_concurrent or sweep.max_concurrent
                                            or None, trial_dirname_creator=_dirname, reuse_actors=True),
                run_config=run_config(launch.data["grid"], f"{sweep.name} cells", len(plain))))
            _reconcile(store, grid, parent, sweep.name)

        from orchestration.search import SameFailureStop, choose, search_space, searcher
        for c in (c for c in todo if c.search is not None):
            name = launch.data["search"].setdefault(c.cell_id, f"{launch.data['grid']}-search-{c.cell_id}")
            launch.save()
            # the tuned cell's run first, so its Optuna samples nest under it (params: the chosen config, later)
            cell_run = store.open_run(parent_id=parent, sweep_name=sweep.name, tags=c.tags, role=keys.ROLE_CELL,
                                      trial_id="", cfg=c.config, name=c.label, params=False)
            stopper = SameFailureStop(c.search.num_samples)
            p = cell_payload(c, keys.ROLE_SEARCH)
            results = fit(name, lambda: tune.Tuner(
                trainable, param_space={"cell": p, "search": search_space(c.search)},
                tune_config=tune.TuneConfig(
                    search_alg=searcher(c.search), num_samples=c.search.num_samples, metric=keys.VAL_NME,
                    mode="min", max_concurrent_trials=opts.max_concurrent or sweep.max_concurrent or None,
                    trial_dirname_creator=_dirname, reuse_actors=True),
                run_config=run_config(name, f"{sweep.name} search {c.cell_id}", c.search.num_samples,
                                      cell_run, stopper)))
            _reconcile(store, results, cell_run, sweep.name)
            if stopper.stop_all():
                store.stop_unfinished(c.cell_id, keys.ROLE_SEARCH, "stopped before it finished: the search "
                                      "was stopped (its first samples failed alike)")
            best = choose(list(results))
            if best is not None:
                _promote(store, c, best, parent, sweep.name, opts.rerun)
            elif store.status(cell_run) != "finished":
                store.fail(cell_run, stopper.reason(list(results)), stopper.kind(list(results)))
    finally:
        if started:
            ray.shutdown()

    done = store.finished_cells(c.cell_id for c in todo)
    summary.finished = sum(c.cell_id in done for c in todo)
    summary.failed_cells = tuple(c.cell_id for c in todo if c.cell_id not in done)
    summary.failed = len(summary.failed_cells)
    store.close_parent(parent, summary.ok, {"cells": summary.total, "reused": summary.reused,
                                            "finished": summary.finished, "failed": summary.failed})
    return summary


def _reconcile(store: TrackingStore, results: Any, parent: str, sweep_name: str) -> None:
    """Record in MLflow every trial Tune finished whose run is not finished (killed driver)."""
    from orchestration.tune_logging import MlflowCallback, record_result
    log = MlflowCallback(store.uri, "", parent, sweep_name)
    log._store = store
    for r in results:
        m = r.metrics or {}
        if r.error is not None or m.get(FINAL) != 1.0:
            continue
        p = r.config["cell"]
        run = store.trial_run(p["cell_id"], p["role"], m["trial_id"])
        if run is not None and run.data.tags.get(keys.TAG_STATUS) == "finished":
            continue
        run_id = run.info.run_id if run is not None else log.run_for(m["trial_id"], r.config)
        record_result(store, run_id, m, r.checkpoint, p["role"])


def _promote(store: TrackingStore, cell: Cell, best: Any, parent: str, sweep_name: str, rerun: bool) -> None:
    """The chosen sample becomes the tuned cell's reported run (role cell, test metrics)."""
    from orchestration.tune_logging import record_result
    done = store.finished_cells([cell.cell_id]).get(cell.cell_id)
    if done is not None and (not rerun or done.data.tags.get(keys.TAG_TRIAL) == best.metrics["trial_id"]):
        return
    from orchestration.mlflow_log import flat_params
    cfg = build_config(best.config["cell"], best.config.get("search"))
    run_id = store.open_run(parent_id=parent, sweep_name=sweep_name, tags=cell.tags, role=keys.ROLE_CELL,
                            trial_id=best.metrics["trial_id"], cfg=cfg, name=cell.label or cell.cell_id,
                            params=False)
    store.log_params(run_id, flat_params(cfg))
    samples = store.cell_runs(keys.ROLE_SEARCH, [cell.cell_id]).get(cell.cell_id, [])
    src = next((r for r in samples if r.data.tags.get(keys.TAG_TRIAL) == best.metrics["trial_id"]), None)
    if src is not None:
        store.copy_history(src.info.run_id, run_id)
        store.set_tags(run_id, {TAG_CHOSEN_FROM: src.info.run_id})
    store.log_params(run_id, {f"search.{k.replace('[', '.').rstrip(']')}": str(v)
                              for k, v in (best.config.get("search") or {}).items()})
    record_result(store, run_id, best.metrics, best.checkpoint, keys.ROLE_CELL)
