"""Run a sweep: skip finished cells, launch the rest through Ray Tune, log to MLflow.

Order of work: (1) cells MLflow already has finished are reused (their tables
tag gains this sweep's tables) unless --rerun; (2) the rest run as one Tune
experiment (orchestration.search.CellSearch): each plain cell once, and each
tuned cell's Optuna samples, so one set of workers serves the whole launch;
(3) each tuned cell's sample with the lowest validation NME is recorded as the
cell's reported run; (4) whatever Tune finished but MLflow missed (a killed
driver) is reconciled from the result grid.

A launch record (`<storage>/<sweep>-<key>-<stamp>-<pid>-<rand>.launch.json`, one
per launch, so two drivers of one sweep never share one) names the Tune
experiment folders and the parent run, so `--resume` restores exactly those
experiments (`Tuner.restore(..., resume_errored=True)`): finished trials are
neither lost nor run twice, unfinished ones continue from their checkpoints.

Shared stores (several people's sweeps on one MLflow store): before training, a
driver claims its cells (orchestration.claims); a cell another live driver holds
is waited for and, once finished, linked into this sweep (its sweeps and tables
tags gain ours; our parent run gets atf.link.<cell>) instead of being trained
twice; a cell whose holder died is taken over. SIGTERM and Ctrl-C stop the
driver cleanly: Tune saves its state, running trial runs and the parent run are
marked KILLED, claims are released, and `--resume` continues.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atf import keys
from atf.cli.common import default_mlflow_uri
from orchestration.claims import ClaimBook
from orchestration.mlflow_log import TAG_CHOSEN_FROM, TrackingStore, join, preload_figures, with_retry
from orchestration.sweepfile import Cell, Resources, Sweep, resolve_paths
from orchestration.trainable import FINAL, build_config, cell_trainable, payload

__all__ = ["SweepOptions", "SweepSummary", "SweepError", "SweepInterrupted", "run_sweep", "parse_faults"]

_QUIET_ENV = {  # our progress line replaces Tune's tables; per-epoch checkpoints are intended
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "1",
}
_SPEED_ENV = {  # MLflow records everything: Tune's CSV/JSON/TensorBoard loggers only cost time (2.4 s,
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # 237 MiB: TensorBoard imports torch in the driver)
    "OMP_WAIT_POLICY": "PASSIVE",  # trials' idle OpenMP threads sleep, not spin (local Ray's workers inherit it)
}


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
    checkpoint_period: float = 60.0  # ... and at least this many seconds between them (0 = every N epochs)
    base_dir: str | None = None     # relative paths resolve here (None = cwd); `submit` sets the submitter's
    faults: str = ""                # fault drill: "kill@2:CELLPREFIX,raise@1" (tests, drills; see trainable.py)
    trainer: str = ""               # "module:function" in place of atf.train.train (tests, benchmarks)
    scratch: str | None = None      # trials' node-local working folder (None = <tmp>/atf-trials)
    worker_logs: bool = False       # show the Ray workers' own output here (debugging)
    connect_timeout: float = 60.0   # seconds to reach a Ray cluster (--address) before giving up
    claim_heartbeat: float = 30.0   # seconds between this driver's heartbeats (orchestration.claims)
    claim_stale: float = 180.0      # a claim holder silent this long is dead: its cells are taken over
    claim_poll: float = 5.0         # seconds between looks at cells another sweep is training


@dataclass
class SweepSummary:
    name: str
    total: int
    reused: int = 0
    finished: int = 0
    failed: int = 0
    linked: int = 0                 # trained meanwhile by another sweep on the same store, linked here
    parent_run_id: str = ""
    failed_cells: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.reused + self.finished + self.linked == self.total

    def line(self) -> str:
        return (f"sweep {self.name}: {self.total} cells, {self.reused} reused, {self.finished} run, "
                + (f"{self.linked} linked (trained by another sweep meanwhile), " if self.linked else "")
                + f"{self.failed} failed" + (f" ({', '.join(self.failed_cells)})" if self.failed_cells else "")
                + f"; MLflow parent run {self.parent_run_id}")


def parse_faults(spec: str) -> list[tuple[str, int, str]]:
    """`mode@epoch[:cell-prefix]` items, comma separated -> (mode, epoch, prefix)."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        head, _, prefix = item.partition(":")
        mode, _, epoch = head.partition("@")
        if mode not in ("raise", "kill") or not epoch.isdigit():
            raise ValueError(f"faults: bad item {item!r}; expected raise@K[:cell] or kill@K[:cell]")
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
    quiet = not opts.worker_logs
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
        """A new record per launch (two drivers never share one); --resume takes the newest record
        of this sweep whose launch did not finish."""
        prefix = f"{sweep.name}-{_sweep_key(sweep)}"
        if resume:
            found = sorted(folder.glob(f"{glob.escape(prefix)}*.launch.json"),
                           key=lambda p: p.stat().st_mtime, reverse=True)
            for path in found:
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                if isinstance(data, dict) and data.get("closed") == "FINISHED":
                    continue
                if why := _untrusted_record(path, data, prefix):
                    print(f"[{sweep.name}] {path}: not resumed ({why})", file=sys.stderr)
                    continue
                return cls(path, data)
            print(f"[{sweep.name}] nothing to resume (no unfinished launch {prefix}-*.launch.json in "
                  f"{folder}): starting a new launch")
        token = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(2)}"
        return cls(folder / f"{prefix}-{token}.launch.json",
                   {"stamp": token, "grid": f"{prefix}-{token}", "parent_run_id": None,
                    "resumed": False})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def _untrusted_record(path: Path, data: Any, prefix: str) -> str:
    """Why a launch record found in (shared) storage must not steer --resume; "" when it may.

    --resume restores the Tune experiment the record names, and restoring unpickles its state: a
    record must be this user's own, and name only folders of this sweep beside it (no path) and
    a parent run by its id."""
    if hasattr(os, "getuid") and path.stat().st_uid != os.getuid():
        return "another user's launch record"
    name = re.compile(re.escape(prefix) + r"-[\w.-]+")
    if not isinstance(data, dict) or not isinstance(data.get("stamp"), str) \
            or not re.fullmatch(r"[\w.-]+", data["stamp"]):
        return "not a launch record"
    if not isinstance(data.get("grid"), str) or not name.fullmatch(data["grid"]):
        return f"its experiment name is not one of this sweep's: {str(data.get('grid'))[:80]!r}"
    cells = data.get("cells", {})
    if not isinstance(cells, dict) or not all(
            isinstance(k, str) and name.fullmatch(k) and isinstance(v, list) and all(isinstance(c, str) for c in v)
            for k, v in cells.items()):
        return "its experiments list is malformed"
    run = data.get("parent_run_id")
    if run is not None and not (isinstance(run, str) and re.fullmatch(keys.RUN_ID_PATTERN, run)):
        return "its parent run id is malformed"
    return ""


def _foreign_experiment(path: str) -> str:
    """Why the Tune experiment folder at `path` must not be restored (restoring unpickles its state
    files); "" when it may. On a local or mounted path the folder and the files directly in it
    (the driver's state: tuner.pkl, experiment and searcher state) must be this user's; trial
    folders may be written by the workers' user, and their checkpoints load as tensors only.
    Remote storage (s3://, gs://) is left to its own access control."""
    if (_is_uri(path) and not path.startswith("file://")) or not hasattr(os, "getuid"):
        return ""
    folder = Path(path.removeprefix("file://"))
    for f in [folder, *(f for f in folder.iterdir() if not f.is_dir() or f.is_symlink())] if folder.is_dir() else []:
        st = f.lstat()
        if st.st_uid != os.getuid():
            return f"{f} belongs to another user"
        if f.is_symlink():
            return f"{f} is a symbolic link"
    return ""


class SweepError(RuntimeError):
    """A sweep that cannot start (storage, MLflow store or cluster unusable): one line, no traceback."""


class SweepInterrupted(RuntimeError):
    """SIGTERM or Ctrl-C stopped the driver; the parent run is KILLED and `--resume` continues."""

    def __init__(self, signum: int, parent_run_id: str = "") -> None:
        self.signum, self.parent_run_id = signum, parent_run_id
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}" + (f"; parent run {parent_run_id} marked KILLED"
                                                      if parent_run_id else ""))


class _Signals:
    """SIGTERM and SIGINT stop the sweep cleanly. Inside a Tune fit the first one becomes Tune's own
    graceful stop (SIGUSR1: it saves the experiment state, so `--resume` continues every trial);
    anywhere else, or a second signal, raises SweepInterrupted at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_fit = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        """(Re)install the handlers: ray.init replaces SIGTERM's, so this runs after it too."""
        if threading.current_thread() is not threading.main_thread():
            return
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours forwards it (SIGUSR1); Tune's would hide it
        for s in (signal.SIGTERM, signal.SIGINT):
            self._old.setdefault(s, signal.getsignal(s))
            signal.signal(s, self._handle)

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        if first and self.in_fit:
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        raise SweepInterrupted(self.signum)

    def check(self) -> None:
        if self.signum is not None:
            raise SweepInterrupted(self.signum)


def _probe_dir(folder: Path, what: str) -> None:
    """Create `folder` and a file in it, or raise SweepError naming it (a read-only mount, a file)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".atf-write-probe-"):
            pass
    except OSError as e:
        raise SweepError(f"{what} {folder} is not writable ({e.strerror or e})") from None


def _check_store_uri(uri: str) -> None:
    """A SQLite store must be a SQLite file (or absent) in a writable folder."""
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri[len("sqlite:///"):])
    _probe_dir(db.parent, f"--mlflow-uri {uri}: folder")
    if db.exists():
        if not db.is_file():
            raise SweepError(f"--mlflow-uri {uri}: {db} is not a file")
        with open(db, "rb") as f:
            head = f.read(16)
        if head and head != b"SQLite format 3\x00":
            raise SweepError(f"--mlflow-uri {uri}: {db} is not a SQLite database; refusing to write into it")
        if not os.access(db, os.W_OK):
            raise SweepError(f"--mlflow-uri {uri}: {db} is read-only")


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a GCS `host:port` or `ray://host:port` address; None for auto/local."""
    if address in ("auto", "local"):
        return None
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not port.isdigit():
        raise SweepError(f"--address {address}: expected HOST:PORT (GCS, e.g. head:6379) or ray://HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _check_address(address: str, timeout: float) -> None:
    """Fail in seconds, with one line, when nothing listens at a cluster address (ray.init would
    wait for a dead GCS for minutes, deaf to SIGTERM)."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=min(timeout, 10.0)):
            pass
    except OSError as e:
        raise SweepError(f"Ray cluster at {address} is unreachable ({e.strerror or e}); is the head running? "
                         "(ray start --head, or check --address / RAY_ADDRESS)") from None


def _connect_ray(opts: SweepOptions, on_abort: Any) -> bool:
    """`_init_ray` with a watchdog: a cluster that accepts the connection but never answers, or a
    SIGTERM/Ctrl-C while Ray blocks in C++ (where Python handlers cannot run), ends the process after
    `on_abort(reason)` (which closes the parent run), instead of hanging forever."""
    if not opts.address or threading.current_thread() is not threading.main_thread():
        return _init_ray(opts)
    done = threading.Event()
    r, w = os.pipe()
    os.set_blocking(w, False)
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def watch() -> None:
        import select
        deadline = time.monotonic() + opts.connect_timeout
        while not done.is_set():
            ready, _, _ = select.select([r], [], [], max(0.0, min(0.5, deadline - time.monotonic())))
            if done.is_set():
                return
            if ready:
                sig = os.read(r, 1)[0]
                on_abort(f"interrupted by {signal.Signals(sig).name} while connecting to {opts.address}",
                         "KILLED")
                os._exit(128 + sig)
            if time.monotonic() >= deadline:
                on_abort(f"Ray cluster at {opts.address} did not answer within {opts.connect_timeout:g} s", "FAILED")
                print(f"atf-sweep: error: Ray cluster at {opts.address} did not answer within "
                      f"{opts.connect_timeout:g} s (is it a Ray GCS port? --connect-timeout)", file=sys.stderr,
                      flush=True)
                os._exit(3)

    watcher = threading.Thread(target=watch, name="atf-connect-watchdog", daemon=True)
    watcher.start()
    try:
        return _init_ray(opts)
    finally:
        done.set()
        signal.set_wakeup_fd(old_fd)
        watcher.join(timeout=2.0)
        os.close(r)
        os.close(w)


@dataclass
class _Drive:
    """One launch of a sweep: what its steps share (built by `run_sweep`, read by the steps)."""
    sweep: Sweep
    opts: SweepOptions
    store: TrackingStore
    parent: str
    launch: _Launch
    storage: str                    # Tune storage_path (a folder or a URI)
    local_dir: Path                 # launch records (and fault markers) live here
    cwd: Path
    summary: SweepSummary
    ray_started: bool = False
    signals: _Signals = dataclasses.field(default_factory=lambda: _Signals())
    claims: ClaimBook | None = None
    watched: list[Any] = dataclasses.field(default_factory=list)  # MlflowCallbacks: KILLED on an interrupt
    res: Resources | None = None    # per-trial resources, once Ray is up (`_train_cells`)


def _places(opts: SweepOptions) -> tuple[Path, str, Path, str]:
    """(cwd, Tune storage, local folder for launch records, MLflow URI) of a launch."""
    cwd = Path(opts.base_dir).resolve() if opts.base_dir else Path.cwd().resolve()
    storage = opts.storage or str(cwd / "ray_results")
    if not _is_uri(storage):
        storage = str((cwd / storage).resolve())
    local_dir = Path(storage) if not _is_uri(storage) else cwd / "ray_results"
    return cwd, storage, local_dir, opts.mlflow_uri or default_mlflow_uri(cwd)


def _open_store(uri: str, opts: SweepOptions, fresh: bool) -> tuple[TrackingStore, bool]:
    """The MLflow store, and whether Ray was started meanwhile. A fresh SQLite store (create +
    migrate: seconds) holds no finished cell, so Ray is needed: both start at once. An existing
    store opens quickly and may make Ray unnecessary."""
    import ray
    with ThreadPoolExecutor(1) as pool:
        opening = pool.submit(TrackingStore, uri, opts.experiment)
        started = _init_ray(opts) if fresh and not opts.address else False
        try:
            return opening.result(), started
        except Exception as e:  # noqa: BLE001 - a store we cannot open: one line, nothing created
            if started:
                ray.shutdown()
            raise SweepError(f"MLflow store {uri} cannot be opened: {_first_line(e)}") from None
        except BaseException:
            if started:
                ray.shutdown()
            raise


def _open_parent(store: TrackingStore, sweep: Sweep, launch: _Launch, opts: SweepOptions, started: bool) -> str:
    """The sweep's parent run (the launch's own again on --resume), recorded in the launch file."""
    import ray
    try:
        parent = store.parent(sweep.name, str(sweep.path.resolve()), launch.data.get("parent_run_id"),
                              files=[sweep.path, *([sweep.profile.path] if sweep.profile else [])])
    except Exception as e:  # noqa: BLE001 - e.g. a read-only server: nothing was created
        if started:
            ray.shutdown()
        raise SweepError(f"MLflow store {store.uri}: cannot create the sweep's parent run: "
                         f"{_first_line(e)}") from None
    launch.data["parent_run_id"] = parent
    launch.data["resumed"] = opts.resume
    launch.save()
    return parent


def run_sweep(sweep: Sweep, opts: SweepOptions) -> SweepSummary:
    """Run every unfinished cell of `sweep`; see the module docstring.

    Raises SweepError (one line) before anything is created when the storage, the MLflow store or
    the cluster cannot be used, and SweepInterrupted after SIGTERM/Ctrl-C (parent run KILLED,
    resumable). Every other early exit closes the parent run as FAILED.
    """
    for k, v in {**_QUIET_ENV, **_SPEED_ENV}.items():
        os.environ.setdefault(k, v)
    # With the auto loggers off no trial writes result.json, and Tune's result grid then warns
    # "Failed to fetch metrics" once per trial: noise, since every metric is in MLflow.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    try:
        parse_faults(opts.faults)  # a bad drill spec: one line before anything is created
    except ValueError as e:
        raise SweepError(str(e)) from None
    cwd, storage, local_dir, uri = _places(opts)
    cells = sweep.cells()
    # before anything is created: storage, store and cluster must be usable (one line each)
    _probe_dir(local_dir, "--storage" if not _is_uri(storage) else "launch records folder")
    _check_store_uri(uri)
    if opts.address:
        _check_address(opts.address, opts.connect_timeout)
    fresh = uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists() and bool(cells)
    threading.Thread(target=preload_figures, name="atf-preload-figures", daemon=True).start()
    store, started = _open_store(uri, opts, fresh)
    launch = _Launch.open(local_dir, sweep, opts.resume)
    parent = _open_parent(store, sweep, launch, opts, started)
    summary = SweepSummary(sweep.name, len(cells), parent_run_id=parent)
    drive = _Drive(sweep, opts, store, parent, launch, storage, local_dir, cwd, summary, ray_started=started)
    drive.claims = ClaimBook(store, parent, sweep.name, opts.claim_heartbeat, opts.claim_stale)
    try:
        drive.signals.install()
        drive.claims.start()
        todo = _reuse_finished(drive, cells)
        _prepare_crops(todo, cwd)
        linked = _train_or_link(drive, todo)
        _finish(drive, todo, linked)
        return summary
    except SweepInterrupted as e:
        _kill_runs(store, drive.watched)
        _close_parent(drive, f"interrupted by {signal.Signals(e.signum).name}; resume with atf-sweep "
                             f"{sweep.path} --resume", "KILLED")
        raise SweepInterrupted(e.signum, parent) from None
    except BaseException as e:
        _kill_runs(store, drive.watched)
        _close_parent(drive, _first_line(e) if isinstance(e, Exception) else type(e).__name__, "FAILED")
        raise
    finally:
        with contextlib.suppress(Exception):
            drive.claims.stop()
        drive.signals.restore()
        if drive.ray_started:
            import ray
            ray.shutdown()


def _counts(summary: SweepSummary) -> dict[str, int]:
    """What the parent run records about its cells."""
    return {"cells": summary.total, "reused": summary.reused, "finished": summary.finished,
            "failed": summary.failed, "linked": summary.linked}


def _close_parent(drive: _Drive, reason: str, status: str) -> None:
    """An early end: the parent run closes with `status` and `reason`; the launch records it."""
    with contextlib.suppress(Exception):
        known = {k: v for k, v in _counts(drive.summary).items() if k in ("cells", "reused")}  # the rest: unknown
        drive.store.close_parent(drive.parent, False, known, status=status, error=reason)
        drive.launch.data["closed"] = status
        drive.launch.save()


def _prepare_crops(cells: list[Cell], cwd: Path) -> None:
    """The face-crop caches of the cells to train, built here once rather than by every trial."""
    from atf.cropcache import CacheError
    from orchestration.crops import prepare_sweep
    try:
        prepare_sweep(cells, cwd)
    except CacheError as e:
        raise SweepError(str(e)) from None


def _reuse_finished(drive: _Drive, cells: list[Cell]) -> list[Cell]:
    """Cells MLflow already has finished join this sweep (unless --rerun); the rest, to train."""
    finished = {} if drive.opts.rerun else drive.store.finished_cells(c.cell_id for c in cells)
    for c in cells:
        if c.cell_id in finished:
            _link(drive.store, finished[c.cell_id], c, drive.sweep.name, drive.parent)
    drive.summary.reused = sum(c.cell_id in finished for c in cells)
    if drive.summary.reused:
        print(f"[{drive.sweep.name}] {drive.summary.reused} cell(s) already finished in MLflow: reused")
    return [c for c in cells if c.cell_id not in finished]


def _train_or_link(drive: _Drive, todo: list[Cell]) -> set[str]:
    """Claim, train what this driver won, wait for what others hold, until every cell is done
    here or linked; returns the linked cells (trained by another sweep meanwhile)."""
    import ray
    pending, linked, rounds = list(todo), set(), 0
    while pending:
        won, held = drive.claims.claim(c.cell_id for c in pending)
        mine = [c for c in pending if c.cell_id in won]
        if held:
            print(f"[{drive.sweep.name}] {len(held)} cell(s) are being trained by another sweep "
                  f"(parent run {', '.join(sorted(set(held.values())))}): waiting to link them")
        if mine:
            if not drive.ray_started and not ray.is_initialized():
                drive.ray_started = _connect_ray(drive.opts, functools.partial(_close_parent, drive))
                drive.signals.install()
            _train_cells(drive, mine, rounds)
            drive.claims.release(c.cell_id for c in mine)
            rounds += 1
        waiting = [c for c in pending if c.cell_id in held]
        pending = _wait_for(waiting, drive.store, drive.claims, drive.sweep.name, drive.parent, drive.opts,
                            drive.signals, linked)
    return linked


def _finish(drive: _Drive, todo: list[Cell], linked: set[str]) -> None:
    """Count finished, linked and failed cells; close the parent run and the launch record."""
    s = drive.summary
    done = drive.store.finished_cells(c.cell_id for c in todo) if todo else {}
    s.linked = sum(c.cell_id in done and c.cell_id in linked for c in todo)
    s.finished = sum(c.cell_id in done and c.cell_id not in linked for c in todo)
    s.failed_cells = tuple(c.cell_id for c in todo if c.cell_id not in done)
    s.failed = len(s.failed_cells)
    drive.store.close_parent(drive.parent, s.ok, _counts(s))
    drive.launch.data["closed"] = "FINISHED" if s.ok else "FAILED"
    drive.launch.save()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


def _link(store: TrackingStore, run: Any, cell: Cell, sweep_name: str, parent: str) -> None:
    """A finished run of this cell (trained by this or another sweep) joins this sweep: its sweeps and
    tables tags gain ours, and our parent run records it (atf.link.<cell> = run id)."""
    join(store, run.info.run_id, sweep_name, cell.tables)
    store.set_tags(parent, {f"atf.link.{cell.cell_id}": run.info.run_id})


def _wait_for(waiting: list[Cell], store: TrackingStore, claims: ClaimBook, sweep_name: str, parent: str,
              opts: SweepOptions, signals: _Signals, linked: set[str]) -> list[Cell]:
    """Wait for cells other sweeps are training: link each one that finishes; return those whose
    holder went away without finishing them (to claim and train here)."""
    import random
    rest = list(waiting)
    while rest:
        signals.check()
        done = store.finished_cells(c.cell_id for c in rest)
        for c in rest:
            if c.cell_id in done:
                _link(store, done[c.cell_id], c, sweep_name, parent)
                linked.add(c.cell_id)
        rest = [c for c in rest if c.cell_id not in done]
        if not rest:
            return []
        held = claims.holders(c.cell_id for c in rest)
        orphaned = [c for c in rest if c.cell_id not in held]
        if orphaned:  # its holder stopped (failed, killed, crashed): claim it (and the rest) again
            time.sleep(random.random() * opts.claim_poll)  # two waiters: do not claim in lockstep
            return rest
        time.sleep(opts.claim_poll * (0.5 + random.random()))
    return []


def _kill_runs(store: TrackingStore, callbacks: list[Any]) -> None:
    """Runs of trials that were still training become KILLED (status tag "killed"; resumable)."""
    with contextlib.suppress(Exception):
        _drain(callbacks, raise_error=False)
    for cb in callbacks:
        for run_id in list(getattr(cb, "runs", {}).values()):
            with contextlib.suppress(Exception):
                if store.status(run_id) == "running":
                    store.set_tags(run_id, {keys.TAG_STATUS: "killed"})
                    with_retry(lambda: store.client.set_terminated(run_id, "KILLED"))


def _train_cells(drive: _Drive, todo: list[Cell], round_no: int) -> None:
    """Train `todo` (cells this driver claimed) through one Ray Tune experiment: the plain cells
    and every tuned cell's Optuna samples (orchestration.search.CellSearch), so the launch's
    workers serve them all. MLflow is written by callbacks; each tuned cell's best sample then
    becomes its reported run."""
    from ray import tune

    from orchestration.search import CellSearch, CellStopper
    drive.res = _resources(drive.sweep, drive.opts)
    trainable = tune.with_resources(cell_trainable, drive.res.as_tune())
    name = drive.launch.data["grid"] + (f"-r{round_no}" if round_no else "")
    tuned = [c for c in todo if c.search is not None]
    # a tuned cell's run first, so its Optuna samples nest under it (params: the chosen config, later)
    cell_runs = {c.cell_id: drive.store.open_run(
        parent_id=drive.parent, sweep_name=drive.sweep.name, tags=c.tags, role=keys.ROLE_CELL, trial_id="",
        cfg=c.config, name=c.label, params=False) for c in tuned}
    plain = [_cell_payload(drive, c, keys.ROLE_CELL) for c in todo if c.search is None]
    searches = [({**_cell_payload(drive, c, keys.ROLE_SEARCH), "parent_run": cell_runs[c.cell_id]}, c.search)
                for c in tuned]

    def build(name: str) -> Any:
        plan = CellSearch(plain, searches)
        return tune.Tuner(trainable, param_space={},
                          tune_config=_tune_config(drive, search_alg=plan, num_samples=plan.total),
                          run_config=_run_config(drive, name, drive.sweep.name, plan.total, drive.parent,
                                                 CellStopper(plan)))
    results = _fit(drive, trainable, name, build, [c.cell_id for c in todo])
    _reconcile(drive.store, results, drive.parent, drive.sweep.name)
    for c in tuned:
        _settle_search(drive, c, cell_runs[c.cell_id],
                       [r for r in results if r.config.get("cell", {}).get("cell_id") == c.cell_id])


def _cell_payload(drive: _Drive, c: Cell, role: str) -> dict[str, Any]:
    """What a trial of cell `c` receives (orchestration.trainable.payload)."""
    marker_dir = drive.local_dir / "faults" / drive.launch.data["stamp"]
    fault = _fault_for(c.cell_id, parse_faults(drive.opts.faults), marker_dir)
    p = payload(c.cell_id, resolve_paths(c.config, drive.cwd), role, drive.res.cpu, fault, drive.opts.trainer,
                drive.opts.scratch)
    p["tags"] = c.tags
    p["checkpoint_every"] = drive.opts.checkpoint_every
    p["checkpoint_period"] = drive.opts.checkpoint_period
    p["label"] = c.label  # the MLflow run name
    return p


def _run_config(drive: _Drive, name: str, label: str, n_trials: int, parent_id: str, stop: Any = None) -> Any:
    """Tune's RunConfig of one experiment: MLflow (and progress) callbacks, retries, one checkpoint kept."""
    from ray import tune

    from orchestration.progress import ProgressCallback
    from orchestration.tune_logging import MlflowCallback
    log = MlflowCallback(drive.store.uri, drive.opts.experiment, parent_id, drive.sweep.name, drive.opts.rerun)
    drive.watched.append(log)
    callbacks: list[Any] = [log]
    if drive.opts.progress:
        callbacks.append(ProgressCallback(label, n_trials, every=drive.opts.progress_every))
    max_failures = drive.sweep.max_failures if drive.opts.max_failures is None else drive.opts.max_failures
    return tune.RunConfig(name=name, storage_path=drive.storage, verbose=0, callbacks=callbacks, stop=stop,
                          failure_config=tune.FailureConfig(max_failures=max_failures),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1))


def _tune_config(drive: _Drive, **search: Any) -> Any:
    from ray import tune
    return tune.TuneConfig(max_concurrent_trials=drive.opts.max_concurrent or drive.sweep.max_concurrent or None,
                           trial_dirname_creator=_dirname, reuse_actors=True, **search)


def _fit(drive: _Drive, trainable: Any, name: str, build: Any, cells: list[str]) -> Any:
    """Run (or, on --resume, restore) the Tune experiment `name` that `build(name)` makes.

    Restores only an experiment whose every cell is either ours again or finished by this launch:
    Tune restores the whole grid, and a cell another sweep took over (or finished) meanwhile must
    not be trained twice."""
    from ray import tune
    path = f"{drive.storage.rstrip('/')}/{name}"
    recorded = set(drive.launch.data.get("cells", {}).get(name, cells))
    ours = {cid for cid, r in drive.store.finished_cells(recorded - set(cells)).items()
            if r.data.tags.get("mlflow.parentRunId") == drive.parent}
    # ... and it must hold every cell to train now (a launch recorded by an older atf ran its tuned
    # cells in experiments of their own: restoring only its grid would leave them untrained)
    restorable = (drive.opts.resume and tune.Tuner.can_restore(path) and recorded <= set(cells) | ours
                  and set(cells) <= recorded)
    if restorable and (why := _foreign_experiment(path)):
        print(f"[{drive.sweep.name}] not resuming Tune experiment {name}: {why}; its cells train anew",
              file=sys.stderr)
        restorable = False
    if restorable:
        print(f"[{drive.sweep.name}] resuming Tune experiment {name}")
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        if drive.opts.resume and tune.Tuner.can_restore(path):
            name = f"{name}-x{time.strftime('%H%M%S')}"
        tuner = build(name)
    drive.launch.data.setdefault("cells", {})[name] = cells
    drive.launch.save()
    drive.signals.in_fit = True
    try:
        results = tuner.fit()
    finally:
        drive.signals.in_fit = False
        _drain(drive.watched, raise_error=False)  # MLflow has every write before anyone reads it
        drive.signals.check()  # a signal during the fit: Tune stopped and saved its state; now stop here
    _drain(drive.watched)
    return results


def _drain(callbacks: list[Any], raise_error: bool = True) -> None:
    """Wait for the MLflow callbacks' queued writes (tune_logging.MlflowCallback.drain)."""
    for cb in callbacks:
        cb.drain(raise_error)


def _settle_search(drive: _Drive, c: Cell, cell_run: str, results: list[Any]) -> None:
    """After the fit: the tuned cell's best sample becomes its run, or the run fails with why."""
    from orchestration.search import choose, outcomes
    store = drive.store
    stop = outcomes(results, c.search.num_samples)
    if stop.stop_all():
        store.stop_unfinished(c.cell_id, keys.ROLE_SEARCH, "stopped before it finished: the search "
                              "was stopped (its first samples failed alike)", stop.errors)
    best = choose(results)
    if best is not None:
        _promote(store, c, best, drive.parent, drive.sweep.name, drive.opts.rerun)
    elif store.status(cell_run) != "finished":
        store.fail(cell_run, stop.reason(results), stop.kind(results))


def _reconcile(store: TrackingStore, results: Any, parent: str, sweep_name: str) -> None:
    """Record in MLflow every trial Tune finished whose run is not finished (killed driver)."""
    from orchestration.tune_logging import MlflowCallback, record_result
    log = MlflowCallback(store.uri, "", parent, sweep_name, store=store, background=False)
    for r in results:
        m = r.metrics or {}
        if r.error is not None or m.get(FINAL) != 1.0:
            continue
        p = r.config["cell"]
        run = store.trial_run(p["cell_id"], p["role"], m["trial_id"])
        if run is not None and run.data.tags.get(keys.TAG_STATUS) == "finished":
            continue
        run_id = run.info.run_id if run is not None else log.run_for(m["trial_id"], r.config)  # parent: payload
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
