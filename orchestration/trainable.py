"""The Ray Tune function trainable: one trial = one `atf.train.train` call.

Ray Tune example style: `cell_trainable` is a plain function; the helpers
below it have no Ray in them (they pack checkpoints, build the config, shape
metrics). Every epoch is reported; epochs that `checkpoint_policy` picks carry a
checkpoint (last.pt, plus best.pt so a restored trial still knows its best
epoch); a restored trial unpacks it into its run folder and passes `resume=`
to the trainer. The final report carries a
result bundle (config, CED curves, predictions, pruned model, result.json) as
its checkpoint, so the driver can log artifacts even when the trial ran on
another node.

A data or config error (`atf.errors.is_deterministic`) fails the same way on every attempt, so
the trial does not raise it (Tune would retry from the checkpoint): it reports one terminal result
with FAILED and the one-line ERROR and returns; the driver marks the run failed
(keys.FAILURE_DETERMINISTIC). Only crashes (a raised bug, a killed worker, a lost node, OOM) go
through Tune's retries.

Fault knob for tests and drills (real faults, not mocks): a payload "fault"
{"mode": "raise"|"kill", "epoch": k, "marker": path} raises inside the trainer
callback at epoch k (every attempt), or SIGKILLs the trial's own process at
epoch k on the first attempt only (the marker file records that it fired).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from atf import keys
from atf.config import RunConfig, from_dict, to_dict
from atf.metrics import write_ced

__all__ = [
    "FINAL", "STEP", "cell_trainable", "build_config", "epoch_metrics", "final_metrics",
    "pack_checkpoint", "unpack_checkpoint", "write_bundle", "fire_fault", "stage_offsets",
    "trainer", "scratch_dir", "scratch_root", "FAILED", "ERROR", "ERROR_KIND", "failure_metrics",
    "checkpoint_policy", "finished_metrics",
]

FINAL = keys.RESULT_FINAL  # 1.0 on the last report of a trial (carries the test metrics)
STEP = keys.RESULT_STEP    # epoch counted across stages: the MLflow step
FAILED = keys.RESULT_FAILED  # 1.0 on the terminal result of a deterministic failure (not retried)
ERROR = keys.RESULT_ERROR    # its one-line reason (a string)
ERROR_KIND = keys.RESULT_ERROR_KIND  # its exception class name
_PACKED = "atf_files.json"


class InjectedFault(RuntimeError):
    """Raised by the fault knob; a real exception inside the trainer's epoch callback."""


def trainer(spec: str = "") -> Callable[..., Any]:
    """`atf.train.train`, or the callable `spec` names ("module:function", SweepOptions.trainer:
    tests and benchmarks substitute a wrapper through the payload, nothing through the environment)."""
    module, _, name = (spec or "atf.train:train").partition(":")
    import importlib
    return getattr(importlib.import_module(module), name)


def build_config(payload: dict[str, Any], sampled: dict[str, Any] | None) -> RunConfig:
    """The trial's RunConfig: the cell's config with the search sample applied."""
    cfg = from_dict(RunConfig, payload["config"])
    if sampled:
        from atf.config import apply
        cfg = apply(cfg, sampled)
    return cfg


def stage_offsets(cfg: RunConfig) -> list[int]:
    """Epochs before each stage (main, joint, novel), so steps never go back."""
    sizes = [cfg.optim.epochs]
    if cfg.scenario in (keys.SCENARIO_JOINT, keys.SCENARIO_NOVEL):
        sizes.append(cfg.finetune.epochs)
    if cfg.scenario == keys.SCENARIO_NOVEL:
        sizes.append(cfg.finetune.epochs)
    return [sum(sizes[:i]) for i in range(len(sizes))]


def epoch_metrics(cfg: RunConfig, stage: int, epoch: int, metrics: dict[str, float]) -> dict[str, float]:
    offsets = stage_offsets(cfg)
    step = (offsets[stage] if stage < len(offsets) else offsets[-1]) + epoch
    out = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating))}
    out.update({keys.STAGE: float(stage), keys.EPOCH: float(epoch), STEP: float(step), FINAL: 0.0})
    return out


def final_metrics(result: Any) -> dict[str, float]:
    out = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float, np.floating))}
    out[FINAL] = 1.0
    return out


def pack_checkpoint(out_dir: Path, last: Path, dest: Path) -> None:
    """Copy last.pt (and best.pt beside it) into `dest`, remembering their places under out_dir."""
    from atf.checkpoint import previous_path
    files = [last] + [p for p in (last.parent / "best.pt", previous_path(last)) if p.is_file() and p != last]
    rel = []
    for f in files:
        r = f.resolve().relative_to(out_dir.resolve()) if f.resolve().is_relative_to(out_dir.resolve()) \
            else Path(f.name)
        (dest / r).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest / r)
        rel.append(str(r))
    (dest / _PACKED).write_text(json.dumps({"files": rel, "last": rel[0]}))


def unpack_checkpoint(src: Path, out_dir: Path, origin: str = "") -> Path | None:
    """Put a packed checkpoint back under a clean out_dir; returns the last.pt to resume from.

    None (the cell restarts from epoch 1; the trial's log says why) when the checkpoint cannot be
    trusted whole: its file list unreadable, naming a path outside out_dir or a symbolic link
    (crafted files on shared storage: a link would copy what it points at), or last.pt or best.pt
    missing. The last happens when a driver or node is killed while Tune replaces a checkpoint
    (num_to_keep=1 deletes the old one file by file) and the saved experiment state still names
    the old one. A missing last.prev.pt is only a lost fallback. out_dir is emptied first: what a
    crashed attempt left there is stale.
    """
    import sys

    from atf.checkpoint import previous_path
    shown = origin or str(src)
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        info = json.loads((src / _PACKED).read_text())
        files, last = [str(r) for r in info["files"]], str(info["last"])
        if last not in files:
            raise ValueError(f"its last checkpoint {last} is not among its files")
        if outside := [r for r in files if Path(r).is_absolute() or ".." in Path(r).parts]:
            raise ValueError(f"a file outside the trial's folder: {outside[0]}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"atf: checkpoint {shown}: unusable file list {_PACKED} ({e}): the cell restarts from epoch 1",
              file=sys.stderr, flush=True)
        return None
    if linked := [r for r in files if _linked(src, r)]:  # would copy what the link points at
        print(f"atf: checkpoint {shown}: {linked[0]} is a symbolic link: the cell restarts from epoch 1",
              file=sys.stderr, flush=True)
        return None
    missing = [r for r in files if not (src / r).is_file()]
    needed = [r for r in missing if r != str(previous_path(Path(last)))]
    if needed:
        print(f"atf: checkpoint {shown} is incomplete (missing {', '.join(needed)}; killed while Tune wrote or "
              "replaced it?): the cell restarts from epoch 1", file=sys.stderr, flush=True)
        return None
    for r in files:
        if r not in missing:
            (out_dir / r).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / r, out_dir / r)
    return out_dir / last


def finished_metrics(path: Path, origin: str) -> dict[str, float] | None:
    """The metrics of a finished trial's result.json; None (the cell trains again; the trial's log
    says why) when the file is torn or not ours, instead of a crash that every retry repeats."""
    import sys
    try:
        metrics = json.loads(path.read_text())["metrics"]
        if not isinstance(metrics, dict) or not metrics or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in metrics.items()):
            raise ValueError("metrics must be names and numbers")
        return {k: float(v) for k, v in metrics.items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"atf: {origin}/result.json unusable ({type(e).__name__}: {e}): the cell trains again",
              file=sys.stderr, flush=True)
        return None


def _linked(root: Path, rel: str) -> bool:
    """Whether `root` or any step of `rel` under it is a symbolic link."""
    path = root
    if path.is_symlink():
        return True
    for part in Path(rel).parts:
        path = path / part
        if path.is_symlink():
            return True
    return False


def write_bundle(result: Any, out_dir: Path, dest: Path) -> None:
    """Artifacts of a finished run under their keys.* names, ready to log from anywhere."""
    cfg_file = out_dir / keys.ARTIFACT_CONFIG
    if cfg_file.is_file():
        shutil.copy2(cfg_file, dest / keys.ARTIFACT_CONFIG)
    for (dataset, subset), curve in result.ced.items():
        write_ced(dest / keys.ced_artifact(dataset, subset), curve)
    for (dataset, subset), src in result.predictions.items():
        path = dest / keys.pred_artifact(dataset, subset)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, path)
    model = dest / keys.ARTIFACT_MODEL_DIR
    model.mkdir(exist_ok=True)
    if result.exported_model and Path(result.exported_model).exists():
        src = Path(result.exported_model)
        for f in ([src] if src.is_file() else sorted(src.iterdir())):
            shutil.copy2(f, model / f.name)
    elif Path(result.best_checkpoint).is_file():
        shutil.copy2(result.best_checkpoint, model / Path(result.best_checkpoint).name)
    (dest / "result.json").write_text(json.dumps({
        "metrics": {k: float(v) for k, v in result.metrics.items()}, "best_epoch": result.best_epoch,
        "seconds": result.seconds, "notes": list(result.notes)}, indent=1))


def fire_fault(fault: dict[str, Any] | None, stage: int, epoch: int) -> None:
    """The fault knob (see module docstring); fires at the given main-stage epoch."""
    if not fault or stage != 0 or epoch != int(fault["epoch"]):
        return
    if fault["mode"] == "raise":
        raise InjectedFault(f"injected fault at epoch {epoch}")
    marker = Path(fault["marker"])
    if fault["mode"] == "kill" and not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def failure_metrics(exc: BaseException) -> dict[str, Any]:
    """The terminal result of a deterministic failure. VAL_NME is +inf because a searcher insists
    on its metric in every result; Optuna then ranks the sample last instead of failing the study."""
    from atf.errors import one_line
    return {FAILED: 1.0, ERROR: one_line(exc), ERROR_KIND: type(exc).__name__, FINAL: 0.0,
            keys.VAL_NME: float("inf")}


def _threads(cfg: RunConfig, cpus: float) -> RunConfig:
    """Torch, OpenCV and DataLoader workers sized to the CPUs Ray gave this trial (atf.threads);
    `data.num_workers` is a ceiling (not part of the cell's identity, so the cell id is unchanged)."""
    import dataclasses

    from atf.threads import configure_threads
    plan = configure_threads(cpus, cfg.data.num_workers)
    if plan.loader_workers == cfg.data.num_workers:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_workers=plan.loader_workers))


def cell_trainable(config: dict[str, Any]) -> None:
    """Tune function trainable: config = {"cell": payload, "search": sampled values (optional)}."""
    from ray import tune

    from atf.errors import is_deterministic

    payload = config["cell"]
    try:
        cfg = build_config(payload, config.get("search"))
    except Exception as e:  # noqa: BLE001 - deterministic ones are reported, the rest re-raised
        if not is_deterministic(e):
            raise
        tune.report(failure_metrics(e))
        return
    cfg = _threads(cfg, payload.get("threads", 1))
    out_dir = scratch_dir(tune.get_context().get_experiment_name(), tune.get_context().get_trial_id(),
                          payload.get("scratch"))
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            if (Path(d) / _PACKED).is_file():
                last = unpack_checkpoint(Path(d), out_dir, origin=checkpoint.path)
                resume = usable_resume(last, checkpoint.path) if last else None
                if resume is None:
                    shutil.rmtree(out_dir, ignore_errors=True)  # nothing of it is used: start clean
            elif (Path(d) / "result.json").is_file():  # restored after it had finished: report, do not retrain
                done = finished_metrics(Path(d) / "result.json", checkpoint.path)
                if done is not None:
                    tune.report({**done, FINAL: 1.0}, checkpoint=checkpoint)
                    return

    due = checkpoint_policy(int(payload.get("checkpoint_every", 1)), float(payload.get("checkpoint_period", 0.0)))

    def on_epoch(report: Any) -> None:
        fire_fault(payload.get("fault"), report.stage, report.epoch)
        if not due(report.epoch):
            tune.report(epoch_metrics(cfg, report.stage, report.epoch, report.metrics))
            return
        with tempfile.TemporaryDirectory(prefix="atf-ckpt-") as tmp:
            pack_checkpoint(out_dir, Path(report.checkpoint), Path(tmp))
            tune.report(epoch_metrics(cfg, report.stage, report.epoch, report.metrics),
                        checkpoint=tune.Checkpoint.from_directory(tmp))

    try:
        result = trainer(payload.get("trainer", ""))(cfg, out_dir, on_epoch=on_epoch, resume=resume)
    except Exception as e:  # noqa: BLE001 - deterministic ones are reported, the rest re-raised (retried)
        if not is_deterministic(e):
            raise
        tune.report(failure_metrics(e))
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    with tempfile.TemporaryDirectory(prefix="atf-result-") as tmp:
        write_bundle(result, out_dir, Path(tmp))
        tune.report(final_metrics(result), checkpoint=tune.Checkpoint.from_directory(tmp))
    shutil.rmtree(out_dir, ignore_errors=True)  # everything worth keeping went out through Tune
    with contextlib.suppress(OSError):
        out_dir.parent.rmdir()  # the experiment's scratch folder, once its last trial is done


def checkpoint_policy(every: int, period: float, clock: Callable[[], float] | None = None) -> Callable[[int], bool]:
    """Whether epoch `e` gets a checkpoint: every `every`-th epoch (0 = never), and no sooner than
    `period` seconds after the previous one (or the trial's start). A checkpoint is what a retry
    resumes from, so the work a crash can lose is bounded by max(period, every epochs); for long
    epochs (a GPU table run) that is every epoch, while a trial of seconds is not slowed by
    packing and persisting a checkpoint it would redo faster than it saves it."""
    import time
    clock = clock or time.monotonic
    last = [clock()]

    def due(epoch: int) -> bool:
        if every <= 0 or epoch % every or clock() - last[0] < period:
            return False
        last[0] = clock()
        return True
    return due


def usable_resume(last: Path, origin: str) -> Path | None:
    """`last` (or its previous copy when damaged) to resume from; None, so the cell restarts from
    epoch 1, when neither loads. Messages name `origin` (the checkpoint in Tune's storage), not the
    scratch copy, and go to the trial's log."""
    import sys

    from atf.checkpoint import CheckpointError, load_resumable
    try:
        _, used, note = load_resumable(last, origin=origin)
    except CheckpointError as e:
        print(f"atf: {e}: the cell restarts from epoch 1", file=sys.stderr, flush=True)
        return None
    if note:
        print(f"atf: {note}", file=sys.stderr, flush=True)
    return used


def scratch_root(given: str | None = None) -> Path:
    """Where trials work: `given` (atf-sweep --scratch), else <tmp>/atf-trials on each node."""
    return Path(given) if given else Path(tempfile.gettempdir()) / "atf-trials"


def scratch_dir(experiment: str, trial_id: str, root: str | None = None) -> Path:
    """Node-local working folder of a trial, outside Tune's trial dir (Tune syncs that one while
    the trainer is still writing); what must survive travels as checkpoints and the result bundle."""
    out = scratch_root(root) / experiment / trial_id
    out.mkdir(parents=True, exist_ok=True)
    return out


def payload(cell_id: str, cfg: RunConfig, role: str, threads: float,
            fault: dict[str, Any] | None = None, trainer: str = "", scratch: str | None = None) -> dict[str, Any]:
    """What the driver hands a trial: the config as a plain dict plus bookkeeping."""
    return {"cell_id": cell_id, "config": to_dict(cfg), "role": role, "threads": threads, "fault": fault,
            "trainer": trainer, "scratch": scratch}
