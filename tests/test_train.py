"""The trainer end to end on tiny synthetic data: all four scenarios, resume, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from atf import datasets, keys, metrics
from atf.checkpoint import load_checkpoint
from atf.config import RunConfig, from_dict, override
from atf.models import build_model
from atf.readers import read_csv
from atf.schemes import similar_pairs
from atf.train import sampler_seed, train

TINY = {"data.max_train": 24, "data.max_test": 8, "data.val_fraction": 0.25, "optim.epochs": 2,
        "optim.batch_size": 8, "model.width_mult": 0.25, "model.input_size": 48, "finetune.epochs": 1,
        "augment.rotation": 10.0}


def tiny(root, **upd) -> RunConfig:
    return override(RunConfig(), {**TINY, "data.root": str(root), **upd})


def test_baseline_reports_every_wflw_subset(synth_root, tmp_path):
    epochs = []
    res = train(tiny(synth_root), tmp_path / "run", on_epoch=epochs.append)
    assert [r.epoch for r in epochs] == [1, 2]
    assert all(keys.VAL_NME in r.metrics and r.checkpoint.is_file() for r in epochs)
    for subset in ("full", *keys.WFLW_ATTRIBUTES):
        # the reported numbers are those of the written predictions against the ground truth
        pred = read_csv(tmp_path / "run" / keys.pred_artifact("wflw", subset))
        gt = datasets.load_split("wflw", "test", subset, root=synth_root)
        gt = gt.subset([gt.images.index(name) for name in pred.images])
        errors = metrics.nme(pred.landmarks, gt.landmarks, datasets.normalizers(gt))
        for m, value in metrics.summarize(errors).items():
            assert res.metrics[keys.test_metric("wflw", subset, m)] == pytest.approx(value, rel=1e-6, abs=1e-9)
    assert (tmp_path / "run" / keys.ced_artifact("wflw", "full")).is_file()
    assert (tmp_path / "run" / keys.pred_artifact("wflw", "full")).is_file()
    assert res.exported_model is not None and res.exported_model.is_file()
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["metrics"] == pytest.approx(res.metrics)


def _head_disagreement(run: Path, a: str, b: str) -> float:
    """Mean distance (crop units) between the similar points heads `a` and `b` of the best
    checkpoint predict for the same inputs (fixed noise images: a property of the weights)."""
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    cfg = from_dict(RunConfig, state["run_config"])
    model = build_model(cfg.model, state["heads"], cfg.input_size, cfg.heatmap_size)
    model.load_state_dict(state["model"])
    model.eval()
    x = torch.randn(16, 3, cfg.input_size, cfg.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x, heads=[a, b])
    pairs = similar_pairs(datasets.get_dataset(a).scheme, datasets.get_dataset(b).scheme)
    return (out[a][:, pairs[:, 0]] - out[b][:, pairs[:, 1]]).norm(dim=-1).mean().item()


def test_l_mb_pulls_the_heads_similar_points_together(synth_root, tmp_path):
    """L_MB's similar-point term (eq. 3-5) makes the target and auxiliary heads agree on the
    similar landmarks; L_AT has no such term (measured: 17% closer after two tiny epochs)."""
    mb = train(tiny(synth_root, scenario="atf", aux=["aflw"]), tmp_path / "mb")
    at = train(tiny(synth_root, scenario="atf", aux=["aflw"], **{"loss.mixed": False}), tmp_path / "at")
    k = keys.test_metric("wflw", "full", keys.NME)
    assert np.isfinite(mb.metrics[k]) and np.isfinite(at.metrics[k])
    mb_gap, at_gap = (_head_disagreement(tmp_path / r, "wflw", "aflw") for r in ("mb", "at"))
    assert mb_gap < 0.9 * at_gap, (mb_gap, at_gap)


def test_same_seed_same_numbers(synth_root, tmp_path):
    cfg = tiny(synth_root, scenario="atf", aux=["300w"], **{"optim.epochs": 1})
    a = train(cfg, tmp_path / "a")
    b = train(cfg, tmp_path / "b")
    assert a.metrics == {k: v for k, v in b.metrics.items() if not k.startswith("time/")} | {
        k: v for k, v in a.metrics.items() if k.startswith("time/")}


def test_stages_draw_their_own_batch_order():
    """joint and novel of one seed never share a sampler seed; the main stage keeps its old one
    (seed*31 + 4), so baseline and ATF numbers did not move; the same inputs, the same seed."""
    for seed in (0, 1, 7):
        seeds = {name: sampler_seed(seed, name) for name in ("main", "joint", "novel")}
        assert seeds["main"] == seed * 31 + 4
        assert len(set(seeds.values())) == 3
        assert sampler_seed(seed, "joint") == seeds["joint"]
    assert sampler_seed(0, "joint") != sampler_seed(1, "joint")


def test_resume_matches_uninterrupted(synth_root, tmp_path):
    # running loss weights: their state is in the checkpoint too
    cfg = tiny(synth_root, scenario="atf", aux=["aflw"], **{"optim.epochs": 3, "loss.weighting": "running"})
    full = train(cfg, tmp_path / "full")

    class Stop(Exception):
        pass

    def stop_after_two(r):
        if r.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tmp_path / "cut", on_epoch=stop_after_two)
    resumed = train(cfg, tmp_path / "cut", resume=tmp_path / "cut" / "checkpoints" / "last.pt")
    for k, v in full.metrics.items():
        if not k.startswith("time/"):
            assert resumed.metrics[k] == pytest.approx(v, abs=1e-9), k


def test_joint_and_novel_scenarios(synth_root, tmp_path):
    stages = []
    start = time.monotonic()
    res = train(tiny(synth_root, scenario="novel", aux=["cofw"], novel="300w"), tmp_path / "novel",
                on_epoch=lambda r: stages.append(r.stage))
    wall = time.monotonic() - start
    assert sorted(set(stages)) == [0, 1, 2, 3]  # main, joint fine-tune, novel head, from-scratch
    for ds, subset in (("wflw", "full"), ("cofw", "full"), ("300w", "full"), ("300w", "challenge")):
        assert keys.test_metric(ds, subset, keys.NME) in res.metrics
    assert keys.test_metric("300w" + keys.SCRATCH_SUFFIX, "full", keys.NME) in res.metrics
    phases = [res.metrics[keys.time_metric(p)] for p in ("novel_head", "novel_scratch")]
    assert all(0 < s for s in phases) and sum(phases) < wall, (phases, wall)  # disjoint parts of the run
    joint = train(tiny(synth_root, scenario="joint", aux=["cofw"]), tmp_path / "joint")
    assert keys.test_metric("cofw", "full", keys.NME) in joint.metrics


def test_paper_protocol_is_named(synth_root, tmp_path):
    res = train(tiny(synth_root, **{"eval.selection": "test", "optim.epochs": 1}), tmp_path / "t")
    assert any("TEST set" in n for n in res.notes)


def test_cli_train_and_eval(synth_root, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  root: {synth_root}\n")
    out = tmp_path / "cli"
    sets = [f"--set={k}={v}" for k, v in {**TINY, "optim.epochs": 1}.items()]
    r = subprocess.run([sys.executable, "-m", "atf.cli.train", str(cfg), "--out", str(out), "--json", *sets],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert keys.test_metric("wflw", "full", keys.NME) in json.loads(r.stdout)
    r = subprocess.run([sys.executable, "-m", "atf.cli.eval", str(out / "checkpoints" / "best.pt"),
                        "--subsets", "full,blur", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    bench = json.loads(r.stdout)
    assert set(bench["subsets"]) == {"full", "blur"} and bench["protocol"] == keys.PROTOCOL_BENCHMARK
    r = subprocess.run([sys.executable, "-m", "atf.cli.eval", str(out / "checkpoints" / "best.pt"),
                        "--subsets", "full", "--protocol", "ocn", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ocn = json.loads(r.stdout)
    assert ocn["protocol"] == keys.PROTOCOL_OCN and ocn["subsets"]["full"][keys.NME] != bench["subsets"]["full"][keys.NME]


def test_cli_unknown_key_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  epoch: 3\n")
    r = subprocess.run([sys.executable, "-m", "atf.cli.train", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "optim.epoch" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unreadable_image_fails_clearly_or_is_counted(synth_root, tmp_path):
    import shutil

    from atf import datasets
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    train_set = datasets.load_split("wflw", "train", root=root)
    (datasets.images_dir("wflw", root=root) / train_set.images[0]).write_bytes(b"not an image")
    cfg = tiny(root, **{"optim.epochs": 1, "data.max_train": 0, "data.val_fraction": 0.1})
    with pytest.raises(Exception, match=r"cannot read image .*" + train_set.images[0].split("/")[-1]):
        train(cfg, tmp_path / "strict")
    res = train(override(cfg, {"data.skip_unreadable": True}), tmp_path / "lenient")
    assert any("skipped 1 unreadable" in n for n in res.notes), res.notes


def test_heatmap_backbone_end_to_end(synth_root, tmp_path):
    """HRNet path: heatmap targets with a per-dataset sigma, decoding, L_MB on heatmaps, export."""
    cfg = tiny(synth_root, scenario="atf", aux=["300w"], **{
        "model.backbone": "hrnet_w18", "model.input_size": 64, "model.width_mult": 0.25,
        "optim.epochs": 1, "data.max_train": 16, "data.max_test": 4, "loss.sigma": {"300w": 1.0},
        "eval.decode": "subpixel"})
    res = train(cfg, tmp_path / "hr")
    assert np.isfinite(res.metrics[keys.test_metric("wflw", "full", keys.NME)])
    assert res.exported_model is not None and res.exported_model.is_file()


# -- the paper protocol's switches (issue 9) -----------------------------------------------------

def _train_rows(root, name: str) -> int:
    from atf import datasets
    return len(datasets.load_split(name, "train", root=str(root)).images)


def test_validation_only_from_the_target(synth_root):
    from atf.rundata import RunData
    cfg = tiny(synth_root, scenario="atf", aux=["aflw"], **{"data.max_train": 0, "data.val_fraction": 0.25})
    data = RunData(cfg)
    full_aux, full_target = _train_rows(synth_root, "aflw"), _train_rows(synth_root, "wflw")
    assert data.train_size("aflw") == full_aux and data.val_size("aflw") == 0  # auxiliary: every image
    assert data.val_size("wflw") == round(0.25 * full_target)
    assert data.train_size("wflw") + data.val_size("wflw") == full_target


def test_joint_heads_are_selected_on_their_own_split(synth_root):
    from atf.rundata import RunData
    cfg = tiny(synth_root, scenario="joint", aux=["cofw"], **{"data.max_train": 0, "data.val_fraction": 0.25})
    data = RunData(cfg)
    assert cfg.selected_heads == ("wflw", "cofw")
    assert data.val_size("cofw") == round(0.25 * _train_rows(synth_root, "cofw"))


def test_zero_validation_share_only_with_test_selection(synth_root):
    from atf.config import ConfigError
    from atf.rundata import RunData
    with pytest.raises(ConfigError, match="data.val_fraction: 0 leaves no validation split"):
        tiny(synth_root, **{"data.val_fraction": 0.0})
    cfg = tiny(synth_root, **{"data.val_fraction": 0.0, "eval.selection": "test", "data.max_train": 0})
    data = RunData(cfg)
    assert data.val_size("wflw") == 0 and data.train_size("wflw") == _train_rows(synth_root, "wflw")


def test_running_weights_change_training_and_are_deterministic(synth_root, tmp_path):
    run = {"optim.epochs": 1, "loss.weighting": "running", "loss.alpha": 0.2, "loss.beta": 0.5, "loss.gamma": 0.1}
    fixed = {**run, "loss.weighting": "fixed"}
    a = train(tiny(synth_root, scenario="atf", aux=["aflw"], **run), tmp_path / "a")
    b = train(tiny(synth_root, scenario="atf", aux=["aflw"], **run), tmp_path / "b")
    c = train(tiny(synth_root, scenario="atf", aux=["aflw"], **fixed), tmp_path / "c")
    k = keys.test_metric("wflw", "full", keys.NME)
    assert a.metrics[k] == b.metrics[k]
    assert a.metrics[k] != c.metrics[k]


def test_trunk_lr_is_its_own_param_group(synth_root, tmp_path):
    from atf.train import _Run, plan_stages
    cfg = tiny(synth_root, scenario="atf", aux=["aflw"], **{"optim.lr": 2e-4, "optim.trunk_lr": 1.5e-4})
    r = _Run(cfg, tmp_path / "r", None)
    opt = r._optimizer(plan_stages(cfg)[0])
    assert [g["lr"] for g in opt.param_groups] == [1.5e-4, 2e-4]
    head_params = {id(p) for p in r.model.heads.parameters()}
    assert {id(p) for p in opt.param_groups[1]["params"]} == head_params


def test_finetune_follows_its_own_schedule(synth_root, tmp_path):
    reports = []
    cfg = tiny(synth_root, scenario="joint", aux=["cofw"],
               **{"finetune.epochs": 2, "finetune.lr": 2e-4, "finetune.milestones": [1], "optim.epochs": 1})
    train(cfg, tmp_path / "j", on_epoch=reports.append)
    lrs = [r.metrics[keys.LR] for r in reports if r.stage == 1]
    assert lrs == pytest.approx([2e-5, 2e-5])  # lr x0.1 after fine-tuning epoch 1, as MultiStepLR reports it


def test_epoch_passes_lengthen_the_epoch(synth_root, tmp_path):
    from atf.train import _Run, plan_stages
    one = _Run(tiny(synth_root), tmp_path / "a", None)._sampler(plan_stages(tiny(synth_root))[0])
    cfg = tiny(synth_root, **{"optim.epoch_passes": 3})
    three = _Run(cfg, tmp_path / "b", None)._sampler(plan_stages(cfg)[0])
    assert len(three.plan()) == 3 * len(one.plan())


def test_plain_auxiliaries_are_not_augmented(synth_root):
    from atf.rundata import RunData
    cfg = tiny(synth_root, scenario="atf", aux=["aflw"], **{"augment.auxiliary": False})
    data = RunData(cfg)
    loader = data.train_loader(("wflw", "aflw"), [(0, np.arange(2)), (1, np.arange(2))], epoch=0, plain=cfg.aux)
    target_set, aux_set = loader.dataset.sets
    assert target_set.augment is not None and aux_set.augment is None


def test_both_nme_protocols_are_reported(synth_root, tmp_path):
    res = train(tiny(synth_root, **{"optim.epochs": 1, "eval.protocol": "both"}), tmp_path / "p")
    bench = res.metrics[keys.test_metric("wflw", "full", keys.NME)]
    ocn = res.metrics[keys.test_metric("wflw", "full", keys.NME, keys.PROTOCOL_OCN)]
    assert np.isfinite(ocn) and ocn != bench   # a different crop and different units
    assert any("test_ocn/" in n for n in res.notes)
    assert keys.test_metric("aflw", "full", keys.NME, keys.PROTOCOL_OCN) not in res.metrics


def test_cli_train_ctrl_c_is_one_line_with_how_to_continue(synth_root, tmp_path):
    import signal
    import time
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  root: {synth_root}\n")
    out = tmp_path / "cli"
    sets = [f"--set={k}={v}" for k, v in {**TINY, "optim.epochs": 500}.items()]
    p = subprocess.Popen([sys.executable, "-m", "atf.cli.train", str(cfg), "--out", str(out), *sets],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's Ctrl-C
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "last.pt").is_file() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"atf-train: interrupted; continue with: atf-train {cfg} --out {out} --resume"
