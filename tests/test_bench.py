"""Every speed benchmark runs in its smallest mode and prints its Markdown table, the machine
line and its readable summary lines (structure only: timings depend on the machine)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench(script: str, *args: str, timeout: int = 900) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"^Machine: .+, \d+ CPUs, ", out.stdout, re.M), out.stdout
    return out.stdout


def table(text: str, header_start: str) -> list[list[str]]:
    """Rows (cells) of the Markdown table whose header begins with `header_start`."""
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(f"| {header_start}"))
    assert set(lines[i + 1]) <= set("|-: "), lines[i + 1]
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def number(text: str, label: str) -> float:
    m = re.search(rf"^{re.escape(label)}: (-?[0-9.]+)", text, re.M)
    assert m, f"no line {label!r} in:\n{text}"
    return float(m.group(1))


def test_bench_store_store_mode(tmp_path):
    out = bench("bench_store.py", "--mode", "store", "--sizes", "10,30", "--trials", "2", "--epochs", "1",
                "--cache", str(tmp_path))
    rows = table(out, "stored runs")
    assert [r[0] for r in rows] == ["10", "30"]
    assert rows[0][4] == "1.00x"
    assert number(out, "per-trial overhead, largest vs smallest store") > 0
    assert (tmp_path / "store-30" / "done").is_file()  # seeded once, reused by the next run


def test_bench_report_small(tmp_path):
    out = bench("bench_report.py", "--sizes", "8", "--repeats", "1", "--cache", str(tmp_path))
    rows = table(out, "stored runs")
    assert len(rows) == 1 and rows[0][0] == "8"
    assert float(rows[0][1]) > 0 and float(rows[0][2]) > 0
    assert number(out, "report with figures per 1000 runs") > 0


def test_bench_gpu_cpu_tiny(tmp_path, synth_root):
    out = bench("bench_gpu.py", "--device", "cpu", "--tiny", "--workers", "0", "--images", "4",
                "--data", str(synth_root), "--cache", str(tmp_path))
    steps = table(out, "model | batch | AMP")
    assert len(steps) == 8  # two models x AMP off/on x channels-last off/on
    assert {(r[2], r[3]) for r in steps} == {("off", "off"), ("off", "on"), ("on", "off"), ("on", "on")}
    assert all(float(r[4]) > 0 for r in steps)
    assert len(table(out, "model | DataLoader workers")) == 2
    assert [r[3] for r in table(out, "model | fastest step")] == ["n/a (no GPU)"] * 2


def test_bench_loader_quick(tmp_path):
    out = bench("bench_loader.py", "--quick", "--data", str(tmp_path / "photos"))
    rows = table(out, "pipeline")
    assert [(r[0].split(",")[0], r[1]) for r in rows] == [("OCN-112", "photos"), ("OCN-112", "crop cache"),
                                                         ("HRNet-256", "photos"), ("HRNet-256", "crop cache")]
    assert all(float(r[5]) > 0 for r in rows)                      # samples/s per core
    assert [float(r[9]) > 0 for r in rows] == [False, True, False, True]   # the cache mapping is read
    assert number(out, "ocn112 cached") > 0 and number(out, "hrnet256 cached") > 0
    assert re.search(r"^ocn112 cached: \d+ samples/s/core", out, re.M)


@pytest.mark.slow  # trains 4 processes; atf.threads is covered by test_threads.py, the trainer by test_train.py
def test_bench_threads_quick(tmp_path, synth_root):
    out = bench("bench_threads.py", "--quick", "--data", str(synth_root), "--cache", str(tmp_path))
    rows = table(out, "threads")
    assert [r[0] for r in rows] == ["atf"]
    assert number(out, "two concurrent 1-CPU trials vs one alone (atf)") > 0
    assert number(out, "beside a CPU hog vs idle (atf)") > 0


@pytest.mark.slow  # five sweeps through Ray; the same path is covered by test_sweep_run.py
def test_bench_sweep_quick(tmp_path, synth_root):
    out = bench("bench_sweep.py", "--quick", "--data", str(synth_root), "--cache", str(tmp_path))
    rows = table(out, "run")
    assert [r[0] for r in rows] == ["serial", "bare x1", "bare x2", "atf-sweep x1", "atf-sweep x2"]
    lines = out.strip().splitlines()
    assert lines[-2].startswith("overhead per trial over serial: ") and lines[-2].endswith(" s")
    assert lines[-1].startswith("two concurrent vs one at a time: ") and lines[-1].endswith(" x")
    number(out, "overhead per trial over serial")
    assert number(out, "two concurrent vs one at a time") > 0


def test_bench_loop_quick(synth_root):
    # the trainer's batch layout (uint8 images, packed heatmap factors) through the loop of both models
    out = bench("bench_loop.py", "--quick", "--workers", "1", "--data", str(synth_root))
    rows = table(out, "model")
    assert [r[0] for r in rows] == ["OCN-112", "HRNet-W18-256"]
    assert all(float(r[3]) > 0 for r in rows)


def test_bench_warp_quick():
    out = bench("bench_warp.py", "--quick")
    rows = table(out, "step")
    assert len(rows) == 5 and all(float(r[1]) > 0 for r in rows)
    assert number(out, "shared memory per sample") > 0
