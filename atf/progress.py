"""Progress of the training and evaluation loops, on a terminal and in a log file alike.

On a terminal (stderr is a TTY) a tqdm bar per epoch; when stdout is not a terminal (a log file, a
pipe, a Ray trial's log) a line every `every` seconds (30 by default) while a loop runs:

    [atf 16:21:07] train main epoch 3/60 step 120/400 (30%) 41.2 img/s ETA epoch 6m48s, stage 2h10m
    [atf 16:25:40] eval wflw step 5/12 (42%) 120.3 img/s ETA 12s

Why both and not one: `atf-train cfg > train.log` on a terminal keeps the bars on the screen and
still writes a readable log. `configure()` (atf-train --progress-every) or $ATF_PROGRESS_EVERY set
the interval; the trainer and the evaluator only create a `Progress` and call `update`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, TextIO, TypeVar

__all__ = ["Progress", "configure", "track", "format_duration"]

T = TypeVar("T")
_SETTINGS: dict[str, Any] = {"every": None, "stream": None, "bars": None, "lines": None}


def configure(every: float | None = None, stream: TextIO | None = None, bars: bool | None = None,
              lines: bool | None = None) -> None:
    """Interval of log lines in seconds, where they go (stdout), and whether bars / lines are drawn
    (None: decided from the terminals: bars when stderr is a TTY, lines when stdout is not)."""
    _SETTINGS.update(every=every, stream=stream, bars=bars, lines=lines)


def _every() -> float:
    if _SETTINGS["every"] is not None:
        return float(_SETTINGS["every"])
    try:
        return float(os.environ.get("ATF_PROGRESS_EVERY", "30"))
    except ValueError:
        return 30.0


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # closed or replaced streams
        return False


def format_duration(seconds: float) -> str:
    """12s, 6m48s, 2h10m."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Steps of one loop (an epoch, one evaluation pass): a bar, periodic lines, or neither."""

    def __init__(self, total: int, kind: str, name: str = "", epoch: int | None = None,
                 epochs: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.kind, self.name, self.epoch, self.epochs = total, kind, name, epoch, epochs
        self.clock = clock
        self.steps = self.items = 0
        self.start = self.last = clock()
        self.stream: TextIO = _SETTINGS["stream"] or sys.stdout
        want_lines = _SETTINGS["lines"]
        self.lines = (not _isatty(self.stream)) if want_lines is None else want_lines
        want_bars = _SETTINGS["bars"]
        self.bar = None
        if (_isatty(sys.stderr) if want_bars is None else want_bars) and total > 0:
            from tqdm import tqdm
            where = f" epoch {epoch}/{epochs}" if epoch is not None else ""
            self.bar = tqdm(total=total, desc=f"{kind} {name}{where}".strip(), leave=False, unit="step")
        self.every = _every()   # the first line after `every` seconds: short loops (a validation pass) stay quiet

    def update(self, steps: int = 1, items: int = 0) -> None:
        """`steps` more done, holding `items` images (throughput is in images per second)."""
        self.steps += steps
        self.items += items
        if self.bar is not None:
            self.bar.update(steps)
        if self.lines and self.clock() - self.last >= self.every:
            self._print()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def line(self) -> str:
        """The log line for the current state."""
        now = self.clock()
        elapsed = max(now - self.start, 1e-9)
        where = f" epoch {self.epoch}/{self.epochs}" if self.epoch is not None and self.epochs else ""
        pct = 100.0 * self.steps / self.total if self.total else 100.0
        text = f"[atf {time.strftime('%H:%M:%S')}] {self.kind} {self.name}{where} step {self.steps}/{self.total} ({pct:.0f}%)"
        if self.steps == 0:
            return text + " starting"
        text += f" {self.items / elapsed:.1f} img/s" if self.items else f" {self.steps / elapsed:.2f} step/s"
        left = (self.total - self.steps) * elapsed / self.steps
        text += f" ETA {'epoch ' if where else ''}{format_duration(left)}"
        if where and self.epochs and self.epoch is not None and self.epoch < self.epochs:
            per_epoch = self.total * elapsed / self.steps
            text += f", stage {format_duration(left + (self.epochs - self.epoch) * per_epoch)}"
        return text

    def _print(self) -> None:
        self.last = self.clock()
        print(self.line(), file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(iterable: Iterable[T], kind: str, name: str = "", total: int | None = None,
          items: Callable[[T], int] | None = None) -> Iterator[T]:
    """Yield from `iterable`, counting steps (and `items(element)` images) in a `Progress`."""
    if total is None:
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, kind, name) as bar:
        for element in iterable:
            yield element
            bar.update(1, items(element) if items else 0)
