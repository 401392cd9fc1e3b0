"""Live sweep progress for a terminal or a log file: a block of lines on a timer.

    [demo 14:21:07] 3/9 done  2 running  1 failed  best val/nme 7.412 (e5bca9dd46a1)  ETA ~12m
      atf-3W s0 (1a2b3c4d5e6f)  epoch 14/60  1m02s so far  ETA 3m10s
      baseline s1 (6f5e4d3c2b1a)  starting

Why a timer: a state-change printer repeats itself on every trial start and finish and says
nothing during a long trial; this prints when the first trial starts, then every `every` seconds
(30 by default, atf-sweep --progress-every), and once at the end. Failures and retries are
events and get their own line at once. Counts are over this launch's trials (cells and search
samples); "best" is the lowest final validation NME, the metric searches optimise; a trial's ETA
comes from its own epochs so far, the sweep's from the trials' mean duration and the concurrency.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

from ray.tune import Callback

from atf import keys
from atf.progress import format_duration
from orchestration.trainable import FINAL, STEP

__all__ = ["ProgressCallback", "format_line", "trial_line", "total_epochs"]


def format_line(name: str, total: int, done: int, running: int, failed: int,
                best: tuple[float, str] | None, clock: str | None = None, eta: float | None = None) -> str:
    clock = clock or time.strftime("%H:%M:%S")
    best_s = f"  best {keys.VAL_NME} {best[0]:.3f} ({best[1]})" if best else ""
    eta_s = f"  ETA ~{format_duration(eta)}" if eta is not None else ""
    return f"[{name} {clock}] {done}/{total} done  {running} running  {failed} failed{best_s}{eta_s}"


def total_epochs(cell_config: dict[str, Any]) -> int:
    """Epochs a trial reports in all (main stage + fine-tuning stages), from the cell's config dict."""
    optim = cell_config.get("optim", {})
    finetune = cell_config.get("finetune", {})
    stages = {keys.SCENARIO_JOINT: 1, keys.SCENARIO_NOVEL: 2}.get(cell_config.get("scenario", ""), 0)
    return int(optim.get("epochs", 0)) + stages * int(finetune.get("epochs", 0))


def trial_line(label: str, cell: str, epoch: int, total: int, seconds: float) -> str:
    """One running trial: where it is and how long it has left at its own pace."""
    if epoch <= 0:
        return f"  {label} ({cell})  starting"
    left = (total - epoch) * seconds / epoch if total > epoch else 0.0
    return (f"  {label} ({cell})  epoch {epoch}/{total}  {format_duration(seconds)} so far  "
            f"ETA {format_duration(left)}")


class ProgressCallback(Callback):
    """Prints the progress block on a timer (`on_step_end`), plus failures as they happen."""

    def __init__(self, name: str, total: int, already_done: int = 0, stream: TextIO | None = None,
                 every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.total, self.base = name, total, already_done
        self.stream, self.every, self.clock = stream, every, clock
        self.running: dict[str, dict[str, Any]] = {}   # trial id -> label, cell, epoch, total, seconds
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.durations: list[float] = []
        self.best: tuple[float, str] | None = None
        self.last: float | None = None

    def _out(self) -> TextIO:
        return self.stream or sys.stdout

    def _eta(self) -> float | None:
        """Sweep ETA: the running trials' longest remaining time plus the pending ones at the mean
        trial duration, spread over the trials that run at once; None before any trial finished."""
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        pending = max(0, self.total - self.base - len(self.done) - len(self.failed) - len(self.running))
        lefts = [max(0.0, (t["total"] - t["epoch"]) * t["seconds"] / t["epoch"]) if t["epoch"] else mean
                 for t in self.running.values()]
        width = max(1, len(self.running))
        return (max(lefts) if lefts else 0.0) + pending * mean / width

    def block(self) -> str:
        head = format_line(self.name, self.total, self.base + len(self.done), len(self.running),
                           len(self.failed), self.best, eta=self._eta())
        rows = [trial_line(t["label"], t["cell"], t["epoch"], t["total"], t["seconds"])
                for t in self.running.values()]
        return "\n".join([head, *rows])

    def _print(self) -> None:
        self.last = self.clock()
        print(self.block(), file=self._out(), flush=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.last is not None and self.clock() - self.last >= self.every:
            self._print()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        cell = trial.config.get("cell", {})
        self.running[trial.trial_id] = {"label": cell.get("label") or cell.get("cell_id", trial.trial_id),
                                        "cell": cell.get("cell_id", ""), "epoch": 0,
                                        "total": total_epochs(cell.get("config", {})), "seconds": 0.0}
        self.failed.discard(trial.trial_id)
        if self.last is None:   # the first line: the sweep is under way
            self._print()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        state = self.running.get(trial.trial_id)
        if state is not None and STEP in result:
            state["epoch"] = int(result[STEP])
            state["seconds"] = float(result.get("time_total_s", state["seconds"]))
        if result.get(FINAL) == 1.0 and keys.VAL_NME in result:
            v = float(result[keys.VAL_NME])
            if self.best is None or v < self.best[0]:
                self.best = (v, trial.config["cell"]["cell_id"])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        state = self.running.pop(trial.trial_id, None)
        if state is not None and state["seconds"]:
            self.durations.append(state["seconds"])
        self.done.add(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        state = self.running.pop(trial.trial_id, None)
        self.failed.add(trial.trial_id)
        label = state["label"] if state else trial.trial_id
        print(f"[{self.name}] trial {label} ({trial.config['cell']['cell_id']}) failed", file=self._out(),
              flush=True)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"[{self.name}] trial {trial.trial_id} ({trial.config['cell']['cell_id']}) crashed; "
              f"retrying from its last checkpoint", file=self._out(), flush=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._print()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "stream": None, "clock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.clock = time.monotonic
