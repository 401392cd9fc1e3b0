"""sweeps/synth_claims.yaml end to end, shrunk by the tiny profile: real Ray (2 CPUs), a real
MLflow SQLite store, then `tools/study_summary.py --claims` prints a verdict on every comparison
of every claim (reports/claims.yaml). The full-size run and its numbers: docs/claims.md."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.mlflow_log import flat_params
from orchestration.sweepfile import load_sweep
from orchestration.sweepspec import SweepError
from reports.verdicts import FAILS, HOLDS, NOISE, load_claims

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "sweeps" / "synth_claims.yaml"
_spec = importlib.util.spec_from_file_location("study_summary", ROOT / "tools" / "study_summary.py")
study_summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study_summary)


def test_tiny_profile_keeps_every_experiment_on_two_seeds(synth_root):
    full = load_sweep(SWEEP)
    tiny = load_sweep(SWEEP, {"data.root": str(synth_root)}, "tiny")
    assert {c.experiment for c in tiny.cells()} == {c.experiment for c in full.cells()}
    assert sorted({c.seed for c in tiny.cells()}) == [0, 1] and len(tiny.cells()) == 2 * len(full.cells()) // 3
    assert not {c.cell_id for c in tiny.cells()} & {c.cell_id for c in full.cells()}


def test_why_sweep_changes_one_key_and_reuses_the_claims_cells():
    # sweeps/synth_claims_why.yaml: its comparisons name its own experiments, its L_AT cells are the
    # claims sweep's (same cell ids: run in the same store they are reused, not rerun), and each new
    # experiment differs from the claims sweep's atf-WA in exactly the key the README says
    why = load_sweep(ROOT / "sweeps" / "synth_claims_why.yaml")
    spec = load_claims(ROOT / "reports" / "claims_why.yaml")
    assert spec.sweep == why.name and spec.experiments() <= {c.experiment for c in why.cells()}
    claims = load_sweep(SWEEP)
    ids = lambda sweep, exp: {c.cell_id for c in sweep.cells() if c.experiment == exp}  # noqa: E731
    assert ids(why, "atf-WA-LAT") == ids(claims, "atf-WA-LAT") and len(ids(why, "atf-WA-LAT")) == 3
    flat = lambda cell: flat_params(cell.config)  # noqa: E731   (dotted key -> value, as MLflow logs it)
    wa = flat(next(c for c in claims.cells() if c.experiment == "atf-WA" and c.seed == 0))
    changed = {exp: {k for k, v in flat(next(c for c in why.cells() if c.experiment == exp and c.seed == 0)).items()
                     if wa.get(k) != v}
               for exp in ("atf-WA-b1", "atf-WA-60", "atf-WA-wod-60", "atf-WA-LAT-60")}
    assert changed == {"atf-WA-b1": {"loss.beta"}, "atf-WA-60": {"optim.epochs"},
                       "atf-WA-wod-60": {"optim.epochs", "atdp.decreasing"},
                       "atf-WA-LAT-60": {"optim.epochs", "loss.mixed"}}


def test_bad_max_seeds_is_one_line(tmp_path):
    (tmp_path / "p.yaml").write_text("max_seeds: 0\n")
    with pytest.raises(SweepError) as e:
        load_sweep(SWEEP, None, tmp_path / "p.yaml")
    assert "max_seeds" in str(e.value) and "\n" not in str(e.value)


def test_claims_sweep_tiny_prints_a_verdict_for_every_claim(tmp_path, synth_root, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--profile", "tiny", "--set", f"data.root={synth_root}"]
    out = subprocess.run([sys.executable, "-m", "orchestration.cli", str(SWEEP), *args, "--quiet",
                          "--num-cpus", "2", "--mlflow-uri", uri, "--storage", str(tmp_path / "ray")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "18 cells, 0 reused, 18 run, 0 failed" in out.stdout
    assert study_summary.main(["--claims", str(SWEEP), *args, "--mlflow-uri", uri]) == 0
    md = capsys.readouterr().out
    spec = load_claims()
    verdicts = "|".join(re.escape(v) for v in (HOLDS, FAILS, NOISE))
    for claim in spec.claims:
        assert re.search(rf"^\| {claim.key}\. .*\| \*\*({verdicts})\*\* \|", md, re.M), (claim.text, md)
        for cmp in claim.comparisons:
            row = next((x for x in md.splitlines() if f"| {cmp.label} " in x), None)
            assert row and re.search(rf"\*\*({verdicts})\*\*", row), (cmp.label, md)
            assert re.search(r"s0 [+-]\d", row) and re.search(r"s1 [+-]\d", row), row   # paired, per seed
    assert "--profile tiny" in md
    # --curves: each run's selected epoch and late validation moves, from the same store
    assert study_summary.main(["--claims", str(SWEEP), *args, "--mlflow-uri", uri, "--curves", "atf-WA,baseline-wflw"]) == 0
    rows = [x for x in capsys.readouterr().out.splitlines() if x.startswith(("| atf-WA s", "| baseline-wflw s"))]
    assert [r.split(" |")[0] for r in rows] == ["| atf-WA s0", "| atf-WA s1", "| baseline-wflw s0", "| baseline-wflw s1"]
    assert all(re.search(r"\| \d+/\d+ \| (\d+\.\d\d|– \(one epoch\)) \| \d+ \|$", r) for r in rows), rows


@pytest.mark.parametrize("argv, needle", [
    (["--claims", "nope.yaml"], "nope.yaml: cannot read"),
    (["--claims", str(SWEEP), "--mlflow-uri", "sqlite:////nonexistent/m.db"], "does not exist"),
    (["--claims", str(ROOT / "sweeps" / "demo.yaml"), "--mlflow-uri", "sqlite:////nonexistent/m.db"],
     "the claims name experiments the sweep file lacks: atf-3W"),
    (["--claims", str(SWEEP), "--profile", "nope"], "no such profile"),
])
def test_claims_summary_bad_input_is_one_line(argv, needle, capsys):
    assert study_summary.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
