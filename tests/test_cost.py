"""What a sweep costs before it starts (orchestration/cost.py, `atf-sweep --dry-run`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from atf.config import RunConfig, apply
from orchestration.cost import (
    cell_cost,
    load_throughput,
    record_device,
    record_loader_rates,
    sweep_cost_lines,
)
from orchestration.sweepfile import load_sweep

ROOT = Path(__file__).resolve().parents[1]
FACES = {"wflw": (1000, 300, "test"), "aflw": (2000, 500, "test"), "300w": (400, 100, "test")}


def faces(name: str):
    return FACES[name]


def small(**upd) -> RunConfig:
    return apply(RunConfig(), {"model.width_mult": 0.25, "model.input_size": 32, "optim.epochs": 3,
                               "optim.batch_size": 10, **upd})


def test_images_seen_follow_the_atdp_plan():
    base = cell_cost(small(), 1, faces)
    # 1000 WFLW faces, 10% held out for validation: 90 batches of 10 per epoch, 3 epochs
    assert base.images == 3 * 900 and base.frozen_images == 0
    assert base.eval_images == 3 * 100 + 300      # validation every epoch + every test subset once
    atf = cell_cost(small(scenario="atf", aux=["aflw"], **{"atdp.ratios": [2, 1], "atdp.decays": [0.5]}), 1, faces)
    # target 90 batches; AFLW round(90 * r/2) with r = 1, 0.5, 0.25 (eq. 2)
    assert atf.images == 10 * (3 * 90 + 45 + 22 + 11)
    wod = cell_cost(small(scenario="atf", aux=["aflw"], **{"atdp.ratios": [2, 1], "atdp.decreasing": False}),
                    1, faces)
    assert wod.images == 10 * 3 * (90 + 45)
    passes = cell_cost(small(**{"optim.epoch_passes": 15}), 1, faces)
    assert passes.images == 15 * base.images


def test_joint_and_novel_stages_are_counted():
    joint = cell_cost(small(scenario="joint", aux=["aflw"], **{"finetune.epochs": 2}), 1, faces)
    atf = cell_cost(small(scenario="atf", aux=["aflw"]), 1, faces)
    # AFLW is a selected head in a joint run: 10% held out, 180 batches a fine-tuning epoch
    assert joint.frozen_images == 2 * 1800 and joint.images > atf.images + joint.frozen_images - 1
    novel = cell_cost(small(scenario="novel", aux=["aflw"], novel="300w", **{"finetune.epochs": 2}), 1, faces)
    scratch = 3 * 360   # the novel dataset trained from scratch: 36 batches, 3 epochs
    assert novel.frozen_images == 2 * 1800 + 2 * 360 and novel.images >= novel.frozen_images + scratch


def test_flops_and_hours_scale_from_the_measured_reference(tmp_path):
    table = tmp_path / "throughput.yaml"
    c = cell_cost(small(), 4, faces)
    assert c.flops == 4 * (3 * c.images + c.eval_images) * c.forward_flops
    record_device("CPU: test box", "cpu", {"ocn": {"images_per_s": 100.0, "forward_flops": c.forward_flops}},
                  "tests", "test", path=table)
    record_loader_rates({"ocn112": 50.0, "hrnet256": 10.0}, "test", path=table)
    loaded = load_throughput(table)
    assert loaded["devices"][0]["name"] == "CPU: test box" and loaded["loader"]["per_core"]["ocn112"] == 50

    class Cell:
        tables, search = ("III",), None
    lines = sweep_cost_lines([Cell()], lambda _: small(), lambda _: None, table=loaded,
                             faces=lambda cfg, name, synth: FACES[name])
    assert "CPU: test box (a CPU measurement" in lines[0]
    total = next(x for x in lines if x.startswith("total")).split()
    # at 100 images/s of this very model: (3 x images + eval) / 3 / 100 seconds; 100 / 50 cores
    hours = (3 * c.images + c.eval_images) / 3 / 100 / 3600
    assert float(total[4]) == pytest.approx(hours, rel=1e-2) and float(total[5]) == pytest.approx(2.0)


def test_dry_run_of_table_iv_smoke_ends_with_the_cost(capsys):
    from orchestration.cli import main
    main([str(ROOT / "sweeps" / "table_iv.yaml"), "--profile", "smoke", "--dry-run"])
    out = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(out) if line.startswith("cost before it starts"))
    rows = {line.split()[0] + (" " + line.split()[1] if line.startswith("table") else ""): line.split()
            for line in out[head + 2:head + 4]}
    assert set(rows) == {"table IV", "total"}
    n = len(load_sweep(ROOT / "sweeps" / "table_iv.yaml", profile="smoke").cells())
    assert int(rows["total"][1]) == n and float(rows["total"][2]) > 0 and float(rows["total"][3]) > 0
    assert any(re.search(r"SynthFace at scale 0.01 \(to be generated\)", line) for line in out[head:])
    if load_throughput()["devices"]:   # the committed table has this machine's CPU measurement
        assert rows["total"][4] != "n/a"
