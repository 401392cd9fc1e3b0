"""Threads that follow the CPUs a process was given: torch intra-/inter-op, OpenCV, DataLoader workers.

Why: Ray caps a trial's OpenMP pool through OMP_NUM_THREADS, but torch's inter-op pool and
OpenCV's pool still size themselves from the whole machine, so two 1-CPU trials on two cores ran
2.4x slower than one at a time. And OpenMP threads that spin while they wait for each other turn
a busy machine into a crawl (an epoch of 2.3 s took 20-105 s beside three CPU-heavy jobs):
`passive_wait()` asks them to sleep instead, which costs nothing measurable on an idle machine.

One plan, from the CPU count: the DataLoader workers (never more than asked for in
`data.num_workers`, and at least one CPU left to the main process) and the main process's torch
threads share the CPUs; OpenCV runs one thread per process (crops of at most 256 px gain nothing
from its pool; loader workers are the parallelism); inter-op parallelism is unused by the trainer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ThreadPlan", "available_cpus", "plan_threads", "configure_threads", "passive_wait"]


@dataclass(frozen=True)
class ThreadPlan:
    cpus: int            # whole CPUs this process may use (a fraction counts as one)
    intra_op: int        # torch.set_num_threads
    inter_op: int        # torch.set_num_interop_threads
    opencv: int          # cv2.setNumThreads
    loader_workers: int  # DataLoader worker processes


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; cgroup CPU limits are not read)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def plan_threads(cpus: float, max_workers: int = 0) -> ThreadPlan:
    """Pure: the thread counts for `cpus` CPUs with at most `max_workers` DataLoader workers."""
    n = max(1, int(cpus))
    workers = max(0, min(int(max_workers), n - 1))
    return ThreadPlan(cpus=n, intra_op=max(1, n - workers), inter_op=1, opencv=1, loader_workers=workers)


def passive_wait() -> None:
    """Idle OpenMP threads sleep instead of spinning (effective only before torch is imported)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def configure_threads(cpus: float, max_workers: int = 0) -> ThreadPlan:
    """Apply `plan_threads` to this process: torch's pools and OpenCV's. Returns the plan; the
    caller uses `plan.loader_workers` for its DataLoaders."""
    import cv2
    import torch

    plan = plan_threads(cpus, max_workers)
    torch.set_num_threads(plan.intra_op)
    if torch.get_num_interop_threads() != plan.inter_op:
        try:
            torch.set_num_interop_threads(plan.inter_op)
        except RuntimeError:  # fixed once inter-op work ran in this process (a reused actor): keep it
            pass
    cv2.setNumThreads(plan.opencv)
    return plan
