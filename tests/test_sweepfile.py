"""Sweep files: parsing, validation (one-line errors naming file and key path), expansion, identity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from atf import keys
from atf.config import RunConfig, apply
from orchestration.cells import cell_id, cell_tags
from orchestration.cli import main
from orchestration.sweepfile import SweepError, load_sweep, resolve_paths

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"

BASE = """
base:
  data: {root: data/synth, max_train: 16}
  model: {width_mult: 0.25, input_size: 48}
  optim.epochs: 2
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def one_line_error(path: Path, *needles: str) -> str:
    with pytest.raises(SweepError) as e:
        load_sweep(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(path) in msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_expansion_grid_variants_seeds_and_merge(tmp_path):
    p = write(tmp_path, BASE + """
tables: [III]
seeds: [0, 1]
experiments:
  - name: base
    set: {scenario: baseline}
    tables: [I, III]
  - name: atf
    set: {scenario: atf}
    grid: {aux: [[300w], [aflw]], atdp.decreasing: [true, false]}
    variants: [{model.backbone: ocn}, {model: {backbone: hrnet_w18}, optim.lr: 1.0e-4}]
    tables: [VII]
  - name: again                 # same runs as atf/ocn/wd: must merge, tables united
    set: {scenario: atf, atdp.decreasing: true}
    grid: {aux: [[300w], [aflw]]}
""")
    sweep = load_sweep(p)
    cells = sweep.cells()
    assert len(cells) == 2 * (1 + 2 * 2 * 2)
    assert len({c.cell_id for c in cells}) == len(cells)
    hr = [c for c in cells if c.config.model.backbone == "hrnet_w18"]
    assert hr and all(c.config.optim.lr == 1e-4 and c.config.model.width_mult == 0.25 for c in hr)
    merged = [c for c in cells if c.tables == ("III", "VII")]
    assert len(merged) == 2 * 2  # ocn wd x {300w, aflw} x 2 seeds
    assert all(c.config.atdp.decreasing and c.config.model.backbone == "ocn" for c in merged)
    base = [c for c in cells if c.config.scenario == keys.SCENARIO_BASELINE]
    assert {c.seed for c in base} == {0, 1} and base[0].tags[keys.TAG_LOSS] == ""
    assert set(cells[0].tags) == set(keys.CELL_TAGS)


def test_identity_ignores_runtime_knobs_and_canonicalises():
    cfg = RunConfig(scenario="atf", aux=("300w",))
    same = apply(cfg, {"data.num_workers": 4, "device": "cpu", "atdp.ratios": [1, 1],
                              "data.root": "/elsewhere"})
    assert cell_id(cfg, provenance="real") == cell_id(same, provenance="real")
    for change in ({"seed": 1}, {"optim.lr": 1e-4}, {"loss.mixed": False}, {"atdp.decreasing": False}):
        assert cell_id(apply(cfg, change), provenance="real") != cell_id(cfg, provenance="real")
    assert cell_id(cfg, provenance="real") != cell_id(cfg, provenance="synthetic(scale=0.02,seed=0)")
    # a baseline never uses the ATF knobs: they must not split identical baselines
    b = RunConfig()
    assert cell_id(b, provenance="real") == cell_id(apply(b, {"loss.mixed": False}), provenance="real")
    tags = cell_tags(apply(cfg, {"loss.mixed": False, "atdp.decreasing": False}), ["VII", "III"],
                     provenance="real")
    assert (tags[keys.TAG_LOSS], tags[keys.TAG_PROPORTIONS], tags[keys.TAG_TABLES]) == (
        keys.LOSS_AT, keys.PROPORTIONS_WOD, "III,VII")


def test_tables_share_identical_runs():
    """Only genuinely new experiments fall outside Tables III-VI (per-target, both backbones)."""
    cells = {n: {c.cell_id: c for c in load_sweep(SWEEPS / f"table_{n}.yaml").cells()}
             for n in ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x")}
    core = {**cells["iii"], **cells["iv"], **cells["v"], **cells["vi"]}
    assert set(cells["i"]) <= set(core) and set(cells["ii"]) <= set(core)
    extra = {n: [c for cid, c in cells[n].items() if cid not in core] for n in ("vii", "viii", "ix", "x")}
    assert all(not c.config.atdp.decreasing for c in extra["vii"]) and len(extra["vii"]) == 3
    assert [c.config.scenario for c in extra["viii"] + extra["ix"]] == ["novel", "novel"]
    assert all(not c.config.loss.mixed for c in extra["x"]) and len(extra["x"]) == 6
    wd = [c for c in cells["vii"].values() if c.config.atdp.decreasing]
    assert len(wd) == 3 and {c.cell_id for c in wd} <= set(cells["iii"])


def test_every_shipped_sweep_file_loads():
    for p in sorted(SWEEPS.glob("*.yaml")):
        sweep = load_sweep(p)
        assert sweep.cells(), p
        for c in sweep.cells():
            assert c.tables and c.tags[keys.TAG_CELL] == c.cell_id


@pytest.mark.parametrize("text, needles", [
    ("base: {optim: {lr: [1, }\n", ["malformed YAML", "line"]),
    ("base: {optim: {lrr: 1}}\ntables: [I]\n", ["base", "optim.lrr"]),
    ("tables: [I]\nexperiments:\n  - set: {scenario: baseline}\n    grid: {model.depth: [1]}\n",
     ["experiments[0].grid.model.depth", "unknown config key"]),
    ("tables: [I]\nbogus: 1\n", ["bogus", "unknown key"]),
    ("tables: [XI]\n", ["tables[0]", "unknown table"]),
    ("tables: [I]\nset: {scenario: atf, aux: [nosuchset]}\n", ["aux[0]", "nosuchset"]),
    ("tables: [I]\nset: {target: nowhere}\n", ["target", "nowhere"]),
    ("tables: [I]\nset: {optim.lr: -0.1}\n", ["optim.lr", "out of range"]),
    ("tables: [I]\nset: {scenario: atf, aux: [300w], atdp.decays: [1.5]}\n", ["atdp.decays[0]", "out of range"]),
    ("tables: [I]\nset: {scenario: atf, aux: [300w]}\n"
     "search: {space: {optim.lr: {loguniform: [1.0e-2, 1.0e-4]}}}\n",
     ["search.space.optim.lr.loguniform", "bad range"]),
    ("tables: [I]\nset: {scenario: atf, aux: [300w]}\n"
     "search: {space: {atdp.decays: {uniform: [0.5, 1.2]}}}\n", ["atdp.decays[0]", "out of range"]),
    ("tables: [I]\nset: {scenario: atf, aux: [300w]}\n"
     "search: {metric: test/wflw/full/nme, space: {optim.lr: {uniform: [0.001, 0.01]}}}\n",
     ["search.metric", "never a test metric"]),
    ("tables: [I]\nresources: {gpu: -1}\n", ["resources.gpu"]),
    ("tables: [I]\nset: {data.root: '${ATF_SURELY_UNSET_VAR}'}\n", ["set.data.root", "ATF_SURELY_UNSET_VAR"]),
])
def test_bad_input_is_one_line_naming_file_and_key(tmp_path, text, needles):
    one_line_error(write(tmp_path, text), *needles)


def test_include_env_and_set_override(tmp_path, monkeypatch):
    write(tmp_path, "optim: {epochs: 3}\nmodel: {width_mult: 0.5}\n", "base.yaml")
    monkeypatch.setenv("ATF_TEST_ROOT", "/some/where")
    p = write(tmp_path, "include: base.yaml\nbase: {data.root: '${ATF_TEST_ROOT}', model.input_size: 48}\n"
              "tables: [I]\nrepeats: 2\n")
    sweep = load_sweep(p, {"optim.epochs": 5})
    assert [c.seed for c in sweep.cells()] == [0, 1]
    cfg = sweep.cells()[0].config
    assert (cfg.optim.epochs, cfg.model.width_mult, cfg.data.root) == (5, 0.5, "/some/where")
    rel = resolve_paths(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root="data/x")), tmp_path)
    assert rel.data.root == str(tmp_path / "data" / "x")
    bad_include = write(tmp_path, "include: base.yaml\ntables: [I]\n", "s2.yaml")
    write(tmp_path, "optim: {epochz: 3}\n", "base.yaml")
    with pytest.raises(SweepError, match="base.yaml.*optim.epochz"):
        load_sweep(bad_include)


def test_dry_run_lists_cells(tmp_path, capsys):
    p = write(tmp_path, BASE + "tables: [III]\nset: {scenario: atf, aux: [300w]}\n"
              "search: {num_samples: 3, space: {'atdp.ratios[0]': {choice: [2, 3]}}}\n")
    assert main(["--dry-run", str(p)]) == 0
    out = capsys.readouterr().out
    cid = load_sweep(p).cells()[0].cell_id
    assert cid in out and "tpex3" in out and "300w" in out
    assert main(["--dry-run", str(write(tmp_path, "tables: [I]\nset: {optim.lr: 0}\n", "bad.yaml"))]) == 2
    assert "optim.lr" in capsys.readouterr().err


# -- protocol blocks (issue 9) ----------------------------------------------------------------------

def test_variant_include_is_a_block_under_the_experiments_keys(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path, "optim: {lr: 1.0e-4, epochs: 60}\nloss: {beta: 0.5}\n", "base/block.yaml")
    write(tmp_path, "include: block.yaml\noptim: {epochs: 100}\n", "base/block_atf.yaml")  # nested include
    p = write(tmp_path, BASE + "tables: [III]\nexperiments:\n"
              "  - name: e\n    set: {scenario: atf, aux: [300w], loss.beta: 0.8}\n"
              "    variants:\n      - {include: base/block.yaml}\n"
              "      - {include: base/block_atf.yaml, optim.lr: 2.0e-4}\n")
    a, b = (c.config for c in load_sweep(p).cells())
    assert (a.optim.lr, a.optim.epochs, a.loss.beta) == (1e-4, 60, 0.8)   # `set` wins over the block
    assert (b.optim.lr, b.optim.epochs, b.loss.beta) == (2e-4, 100, 0.8)  # the variant's own keys win too
    missing = write(tmp_path, BASE + "tables: [III]\nvariants: [{include: base/nope.yaml}]\n", "m.yaml")
    one_line_error(missing, "variants[0].include", "no such file base/nope.yaml")
    write(tmp_path, "include: loop.yaml\n", "base/loop.yaml")
    cyc = write(tmp_path, BASE + "tables: [III]\nvariants: [{include: base/loop.yaml}]\n", "c.yaml")
    with pytest.raises(SweepError, match="include cycle"):
        load_sweep(cyc)


def _table_cells():
    for n in ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x"):
        yield from load_sweep(SWEEPS / f"table_{n}.yaml").cells()


def test_table_sweeps_state_the_paper_protocol():
    for c in _table_cells():
        cfg, aug = c.config, c.config.augment
        assert (aug.color, aug.grayscale, aug.flip, aug.rotation) == (0.0, 0.0, 0.5, 30.0), c.cell_id
        assert cfg.eval.selection == "val" and cfg.data.val_fraction == 0.1
        wa = cfg.target == "wflw" and cfg.aux == ("aflw",)
        if cfg.model.backbone == "ocn":   # paper IV-A; public OCN code where it is silent
            assert (cfg.input_size, cfg.optim.lr, cfg.optim.schedule, cfg.optim.patience) == (112, 1e-3, "plateau", 10)
            assert (cfg.optim.batch_size, cfg.optim.epoch_passes, cfg.optim.weight_decay) == (300, 15, 1e-6)
            assert (aug.random_crop, aug.scale, cfg.loss.weighting, cfg.eval.protocol) == (0.2, 0.0, "fixed", "both")
            assert cfg.model.ocn_variant == "public"
        else:                             # HRNet face code (baselines) / public HRNet ATF code
            assert cfg.input_size == 256 and cfg.model.pretrained.endswith("hrnetv2_w18_imagenet_pretrained.pth")
            assert (aug.random_crop, aug.scale, aug.rotation_prob, cfg.eval.protocol) == (0.0, 0.25, 0.6, "benchmark")
            if cfg.scenario == keys.SCENARIO_BASELINE:
                lr = 2e-4 if cfg.target == "aflw" else 1e-4
                assert (cfg.optim.lr, cfg.optim.milestones, cfg.optim.epochs) == (lr, (30, 50), 60)
                assert cfg.sigma("300w") == 1.0 and cfg.sigma("wflw") == 1.5
            else:
                assert (cfg.optim.lr, cfg.optim.trunk_lr, cfg.optim.milestones, cfg.optim.epochs) == (
                    2e-4, 1.5e-4, (30, 50, 70), 100)
                assert cfg.loss.weighting == "running" and not aug.auxiliary
                paper_sigma = 1.0 if cfg.scenario == keys.SCENARIO_NOVEL else 1.5   # paper IV-D
                assert cfg.sigma("300w") == paper_sigma
                if not wa:
                    assert (cfg.loss.alpha, cfg.loss.beta, cfg.loss.gamma) == (0.2, 0.5, 0.1)
        if wa and cfg.loss.mixed:         # the only pair the paper gives weights for
            assert (cfg.loss.alpha, cfg.loss.beta, cfg.loss.gamma) == (0.2, 0.8, 0.1)
        if cfg.scenario in (keys.SCENARIO_JOINT, keys.SCENARIO_NOVEL):
            assert (cfg.finetune.lr, cfg.finetune.epochs, cfg.finetune.milestones) == (2e-4, 100, (30, 50, 70))


def test_dry_run_prints_each_cells_protocol(capsys):
    main(["--dry-run", str(SWEEPS / "table_i.yaml")])
    out = capsys.readouterr().out
    for c in load_sweep(SWEEPS / "table_i.yaml").cells():
        line = next(x for x in out.splitlines() if x.startswith(c.cell_id) and "|" in x)
        ocn, base = c.config.model.backbone == "ocn", c.config.scenario == keys.SCENARIO_BASELINE
        assert "sel val(0.1" in line and ("nme both" if ocn else "nme benchmark") in line
        assert ("400 ep x15 passes" if ocn else "| 60 ep |" if base else "| 100 ep |") in line


@pytest.mark.parametrize("key, value", [("optim.trunk_lr", -1e-4), ("augment.grayscale", 1.5)])
def test_protocol_switches_are_range_checked(tmp_path, key, value):
    one_line_error(write(tmp_path, BASE + f"tables: [I]\nset: {{{key}: {value}}}\n"), key, "out of range")
