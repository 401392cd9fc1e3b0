"""Preflight: every problem a sweep would hit, found before Ray starts, one line each."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atf import keys
from atf.config import ModelConfig
from orchestration.preflight import check, make_synth
from orchestration.sweepfile import SweepError, load_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "sweeps"


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("ATF_DATA", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    return subprocess.run([sys.executable, "-m", "orchestration.cli", *args], cwd=cwd, env={**e, **env},
                          capture_output=True, text=True, timeout=300)


def test_table_without_data_exits_with_one_line_and_no_ray(tmp_path):
    t0 = time.perf_counter()
    out = cli([str(SWEEPS / "table_iv.yaml")], tmp_path)
    wall = time.perf_counter() - t0
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "Ray" not in out.stderr + out.stdout
    problems = [line for line in out.stderr.splitlines() if line.startswith("  ")]
    data = [line for line in problems if "data root" in line]
    weights = [line for line in problems if "model.pretrained" in line]  # the HRNet cells' ImageNet weights
    assert len(data) == 1 and len(weights) <= 1 and len(problems) == len(data) + len(weights), out.stderr
    assert f"data root {tmp_path.resolve() / 'data' / 'real'}: does not exist" in data[0]
    assert "300w/, aflw/, cofw/, wflw/" in data[0] and "--set data.root=DIR" in data[0]
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()
    assert wall < 60, f"preflight took {wall:.0f} s"  # seconds on an idle machine; generous under load


def test_dry_run_lists_cells_then_runs_the_preflight(tmp_path):
    out = cli(["--dry-run", str(SWEEPS / "table_ix.yaml")], tmp_path)
    assert out.returncode == 2
    assert "sweep table_ix" in out.stdout and "novel" in out.stdout
    assert "does not exist" in out.stderr


def _broken_root(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for f in (dst / "300w").glob("face_landmarks_300w_train*.csv"):
        f.unlink()                                                  # a missing file
    for f in (dst / "cofw").glob("face_landmarks_cofw_train*.csv"):
        f.write_text("image_name,scale\nx.jpg,not-a-number\n")      # a malformed file
    shutil.rmtree(dst / "aflw" / "images")                          # images gone
    (dst / "aflw" / "images").mkdir()
    return dst


def test_every_problem_at_once_one_line_each(tmp_path, synth_root):
    root = _broken_root(synth_root, tmp_path / "data")
    sweep_file = tmp_path / "s.yaml"
    weights = ("model.pretrained: weights/missing.pth, " if "pretrained" in ModelConfig.__dataclass_fields__
               else "")
    sweep_file.write_text(f"""
name: broken
base:
  data: {{root: {root}, max_train: 8}}
tables: [III]
experiments:
  - {{name: w3, set: {{scenario: atf, aux: [300w]}}}}
  - {{name: wc, set: {{scenario: atf, aux: [cofw]}}}}
  - {{name: wa, set: {{scenario: atf, aux: [aflw], {weights}model.backbone: hrnet_w18, model.input_size: 48}}}}
""")
    sweep = load_sweep(sweep_file)
    storage = tmp_path / "a-file"
    storage.write_text("not a folder")
    report = check(sweep, tmp_path, "http://127.0.0.1:9/", str(storage), scratch=str(storage / "trials"))
    text = "\n".join(report.lines())
    assert all("\n" not in line for line in report.lines())
    assert f"{root / '300w' / 'face_landmarks_300w_train.csv'}: missing (300w train/full" in text
    assert "w3 s0" in text                                             # names the cell that needs it
    assert "cofw train/full: " in text and "face_landmarks_cofw_train" in text  # malformed, through the readers
    assert f"{root / 'aflw'}" in text and "sampled images unreadable" in text
    assert "model hrnet_w18 input_size=48" in text and "multiple of 32" in text
    assert f"storage {storage}: not writable" in text
    assert f"trial scratch folder {storage / 'trials'}: not writable ({storage} is not a folder)" in text
    assert "MLflow server http://127.0.0.1:9/: does not answer" in text
    if weights:
        assert "model.pretrained" in text and "missing.pth" in text
    assert len(report.problems) == 7 + bool(weights), text
    assert not report.generate


def test_healthy_sweep_has_no_problems(tmp_path, synth_root):
    p = tmp_path / "ok.yaml"
    p.write_text(f"base: {{data: {{root: {synth_root}}}}}\ntables: [I]\nset: {{scenario: baseline}}\n")
    report = check(load_sweep(p), tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert report.ok and report.lines() == [] and not report.generate


def test_absent_synth_root_is_generated_and_keeps_cell_ids(tmp_path, monkeypatch):
    """A SynthFace root that is absent is not a problem: it is made first, and the cells' ids
    (which include the data's provenance) are the same before and after."""
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "s.yaml"
    p.write_text("synth: {scale: 0.004, seed: 1}\nbase: {data: {root: data/synth}}\ntables: [I]\n"
                 "set: {scenario: baseline}\n")
    before = load_sweep(p)
    assert before.cells()[0].tags[keys.TAG_DATA] == "synthetic(scale=0.004,seed=1)"
    report = check(before, tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert report.ok and list(report.generate) == [tmp_path / "data" / "synth"]
    make_synth(tmp_path / "data" / "synth", report.generate[tmp_path / "data" / "synth"], workers=1)
    after = load_sweep(p)
    assert [c.cell_id for c in after.cells()] == [c.cell_id for c in before.cells()]
    assert check(after, tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}").ok


def test_default_root_means_the_embedded_synthface(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = check(load_sweep(SWEEPS / "demo.yaml"), tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert report.ok
    spec = report.generate[tmp_path / "data" / "synth"]
    assert (spec.scale, spec.seed) == (0.02, 0)


def test_smoke_profile_keeps_the_cells_but_not_their_identity():
    real = load_sweep(SWEEPS / "table_ix.yaml")
    smoke = load_sweep(SWEEPS / "table_ix.yaml", profile="smoke")
    assert smoke.name == "table_ix-smoke" and len(smoke.cells()) == len(real.cells())
    assert [c.label for c in smoke.cells()] == [c.label for c in real.cells()]
    assert not {c.cell_id for c in smoke.cells()} & {c.cell_id for c in real.cells()}
    for r, s in zip(real.cells(), smoke.cells()):
        same = (keys.TAG_SCENARIO, keys.TAG_BACKBONE, keys.TAG_TARGET, keys.TAG_AUX, keys.TAG_LOSS, keys.TAG_TABLES)
        assert {k: s.tags[k] for k in same} == {k: r.tags[k] for k in same}
        assert s.tags[keys.TAG_PROFILE] == "smoke" and s.tags[keys.TAG_DATA].startswith("synthetic(")
        assert s.config.optim.epochs == 2 and s.config.input_size == 32
    assert smoke.resources.gpu == 0 and smoke.max_failures == 0


def test_unknown_profile_is_one_line():
    with pytest.raises(SweepError, match=r"--profile nope: no such profile \(known: .*smoke"):
        load_sweep(SWEEPS / "demo.yaml", profile="nope")


def test_unwritable_crop_cache_folder_is_one_problem(tmp_path):
    """Real data reads through the crop cache by default: its folder is checked before Ray starts."""
    (tmp_path / "a-file").write_text("not a folder")
    out = cli(["--dry-run", str(SWEEPS / "table_iv.yaml"), "--set", f"data.cache_dir={tmp_path / 'a-file' / 'crops'}"],
              tmp_path)
    lines = [line for line in out.stderr.splitlines() if line.startswith("  crop cache folder")]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "a-file is not a folder" in lines[0] and "data.crop_cache: false" in lines[0]
    off = load_sweep(SWEEPS / "table_iv.yaml", {"data.cache_dir": str(tmp_path / "a-file" / "c"),
                                                "data.crop_cache": False})
    assert not [p for p in check(off, tmp_path, f"sqlite:///{tmp_path}/m.db").problems if "crop cache" in p.line()]
