"""atf.threads: the plan follows the CPUs given, and applying it sets torch's and OpenCV's pools."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from atf.threads import ThreadPlan, available_cpus, plan_threads


@pytest.mark.parametrize("cpus, workers, expected", [
    (1, 0, ThreadPlan(1, 1, 1, 1, 0)),
    (1, 4, ThreadPlan(1, 1, 1, 1, 0)),     # one CPU: no loader worker beside the main process
    (0.5, 0, ThreadPlan(1, 1, 1, 1, 0)),   # a fraction of a CPU still gets one thread
    (4, 0, ThreadPlan(4, 4, 1, 1, 0)),
    (4, 2, ThreadPlan(4, 2, 1, 1, 2)),     # workers and the main process share the CPUs
    (4, 8, ThreadPlan(4, 1, 1, 1, 3)),     # data.num_workers is a ceiling; one CPU stays with training
])
def test_plan_threads(cpus, workers, expected):
    assert plan_threads(cpus, workers) == expected


def test_available_cpus_is_the_affinity_mask():
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)


def test_configure_threads_sets_torch_and_opencv_in_a_fresh_process():
    code = ("from atf.threads import configure_threads, passive_wait\n"
            "passive_wait()\n"
            "import cv2, os, torch\n"
            "p = configure_threads(1, 3)\n"
            "print(torch.get_num_threads(), torch.get_num_interop_threads(), cv2.getNumThreads(),"
            " p.loader_workers, os.environ['OMP_WAIT_POLICY'])\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "1", "0", "PASSIVE"]
