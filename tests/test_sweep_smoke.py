"""The smoke profile end to end: table files run shrunk on SynthFace, then atf-report fills them.

CI runs Table IX (joint and novel scenarios, HRNet heatmap cells) on the session's tiny SynthFace;
the slow test is `make paper-smoke`: all ten table files, their data generated on first use, and
every cell of Tables I-X filled and marked synthetic.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atf import keys
from orchestration.mlflow_log import TrackingStore
from orchestration.sweepfile import load_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "sweeps"
NUMERALS = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x")


def _env() -> dict[str, str]:
    drop = ("ATF_DATA", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")
    return {k: v for k, v in os.environ.items() if k not in drop}


def run(args: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{args}: {out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def empty_cells(md: str) -> list[str]:
    """Our rows' cells that show a dash (no finished run) in a rendered table."""
    out = []
    for line in md.splitlines():
        if not line.startswith("| ") or "*paper*" in line or "*Δ" in line or "(published)" in line:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("Method", "") or set(cells[0]) <= {":", "-"} or not any(cells[1:]):
            continue  # header, rule, or a section title row (e.g. "**OCN**")
        out += [f"{cells[0]}: column {i}" for i, c in enumerate(cells[1:], 1) if c in ("–", "-", "")]
    return out


def check_report(report: Path, tables: list[str]) -> None:
    for t in tables:
        md = (report / f"table_{t}.md").read_text()
        assert "SYNTHETIC" in md and "synthetic(" in md, f"table {t} does not say its data is synthetic"
        assert not empty_cells(md), f"table {t}: empty cells {empty_cells(md)}"
        assert re.search(r"\[\d+\.\d+\]", md), f"table {t}: no value of ours"


def test_table_ix_smoke_fills_its_table(tmp_path, synth_root):
    """Joint/novel, HRNet heatmaps, through Ray Tune + MLflow + atf-report, in a couple of minutes."""
    db = tmp_path / "mlflow.db"
    out = run(["orchestration.cli", str(SWEEPS / "table_ix.yaml"), "--profile", "smoke", "--quiet",
               "--set", f"data.root={synth_root}", "--num-cpus", "2"], tmp_path, 900)
    assert "4 cells, 0 reused, 4 run, 0 failed" in out.stdout
    assert "#/experiments/" in out.stdout and "/runs" in out.stdout   # where to read the runs
    sweep = load_sweep(SWEEPS / "table_ix.yaml", {"data.root": str(synth_root)}, "smoke")
    done = TrackingStore(f"sqlite:///{db}").finished_cells()
    assert sorted(done) == sorted(c.cell_id for c in sweep.cells())
    novel = next(c for c in sweep.cells() if c.tags[keys.TAG_SCENARIO] == keys.SCENARIO_NOVEL)
    run_ = done[novel.cell_id]
    assert run_.info.run_name == "novel-W3 s0" and run_.data.tags[keys.TAG_PROFILE] == "smoke"
    for head in ("wflw", "300w", "cofw", "cofw" + keys.SCRATCH_SUFFIX):
        assert keys.test_metric(head, "full", keys.NME) in run_.data.metrics, head
    run(["reports.cli", "--mlflow-uri", f"sqlite:///{db}", "--out", str(tmp_path / "report"), "--tables", "IX",
         "--no-figures"], tmp_path, 300)
    check_report(tmp_path / "report", ["IX"])


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_paper_smoke_fills_every_table(tmp_path):
    """`make paper-smoke` as a user runs it (data generated on first use); prints its wall time."""
    t0 = time.perf_counter()
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for t in NUMERALS:
        run(["orchestration.cli", str(SWEEPS / f"table_{t}.yaml"), "--profile", "smoke", "--quiet",
             "--mlflow-uri", db], tmp_path, 1800)
    run(["reports.cli", "--mlflow-uri", db, "--out", str(tmp_path / "report")], tmp_path, 600)
    check_report(tmp_path / "report", [t.upper() for t in NUMERALS])
    print(f"paper-smoke: {time.perf_counter() - t0:.0f} s on {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
