"""`atf.train.train` that records when each call starts and ends (bench_sweep's trials' phase).

Named by SweepOptions(trainer="_timed:train") (bench/ on PYTHONPATH); each call appends one JSON
line {"start": t0, "end": t1} (wall clock, comparable across processes) to $ATF_BENCH_STAMPS.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def train(cfg: Any, out_dir: Any, on_epoch: Any = None, resume: Any = None) -> Any:
    from atf.train import train as real
    t0 = time.time()
    result = real(cfg, out_dir, on_epoch=on_epoch, resume=resume)
    stamps = os.environ.get("ATF_BENCH_STAMPS")
    if stamps:
        with open(stamps, "a") as f:
            f.write(json.dumps({"start": t0, "end": time.time()}) + "\n")
    return result
