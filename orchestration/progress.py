"""Live progress on the terminal: one compact line whenever something changes.

    [demo 14:21:07] 3/9 done  2 running  1 failed  best val/nme 7.412 (e5bca9dd46a1)

Counts are over this launch's trials (cells and search samples); "best" is the
lowest final validation NME seen so far, the metric searches optimise.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray.tune import Callback

from atf import keys
from orchestration.trainable import FAILED, FINAL

__all__ = ["ProgressCallback", "format_line"]


def format_line(name: str, total: int, done: int, running: int, failed: int,
                best: tuple[float, str] | None, clock: str | None = None) -> str:
    clock = clock or time.strftime("%H:%M:%S")
    best_s = f"  best {keys.VAL_NME} {best[0]:.3f} ({best[1]})" if best else ""
    return f"[{name} {clock}] {done}/{total} done  {running} running  {failed} failed{best_s}"


class ProgressCallback(Callback):
    """Prints `format_line` on each trial start, finish, error and final result."""

    def __init__(self, name: str, total: int, already_done: int = 0, stream: TextIO | None = None) -> None:
        self.name, self.total, self.base = name, total, already_done
        self.stream = stream
        self.running: set[str] = set()
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.best: tuple[float, str] | None = None
        self._last = ""

    def _print(self) -> None:
        line = format_line(self.name, self.total, self.base + len(self.done), len(self.running),
                           len(self.failed), self.best)
        if line.split("] ", 1)[1] != self._last:
            self._last = line.split("] ", 1)[1]
            print(line, file=self.stream or sys.stdout, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        self.failed.discard(trial.trial_id)
        self._print()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(FINAL) == 1.0 and keys.VAL_NME in result:
            v = float(result[keys.VAL_NME])
            if self.best is None or v < self.best[0]:
                self.best = (v, trial.config["cell"]["cell_id"])
                self._print()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        if (trial.last_result or {}).get(FAILED) == 1.0:  # a data/config error: failed, not retried
            self.failed.add(trial.trial_id)
            self._print()
            return
        self.done.add(trial.trial_id)
        self._print()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.failed.add(trial.trial_id)
        self._print()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"[{self.name}] trial {trial.trial_id} ({trial.config['cell']['cell_id']}) crashed; "
              f"retrying from its last checkpoint", file=self.stream or sys.stdout, flush=True)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "stream": None}
