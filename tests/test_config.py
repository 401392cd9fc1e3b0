"""Typed config: YAML in, unknown keys and bad values refused with the key path and file."""

import dataclasses

import pytest

from atf.config import ConfigError, RunConfig, from_dict, load_config, override, to_dict


def test_defaults_and_derived_values():
    cfg = RunConfig()
    assert cfg.input_size == 112 and cfg.loss_kind == "l1"
    h = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone="hrnet_w18"))
    assert h.input_size == 256 and h.heatmap_size == 64 and h.loss_kind == "heatmap_mse"


def test_unknown_key_names_path(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*'optim\.lrr'"):
        load_config(p)


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+: malformed YAML"):
        load_config(p)


def test_type_errors_name_key():
    with pytest.raises(ConfigError, match="optim.epochs: expected an integer"):
        from_dict(RunConfig, {"optim": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match="model.backbone"):
        from_dict(RunConfig, {"model": {"backbone": "resnet"}})


def test_scenario_consistency():
    with pytest.raises(ConfigError, match="aux"):
        RunConfig(scenario="atf")
    with pytest.raises(ConfigError, match="ratios"):
        from_dict(RunConfig, {"scenario": "atf", "aux": ["300w"], "atdp": {"ratios": [2, 1, 1]}})
    cfg = from_dict(RunConfig, {"scenario": "atf", "aux": ["300w"], "atdp": {"decreasing": False}})
    assert cfg.decays == (1.0,) and cfg.ratios == (1.0, 1.0)


def test_roundtrip_and_override():
    cfg = override(RunConfig(), {"scenario": "atf", "aux": ["aflw"], "optim.lr": 5e-4})
    assert cfg.optim.lr == 5e-4 and cfg.aux == ("aflw",)
    assert from_dict(RunConfig, to_dict(cfg)) == cfg


# -- the paper protocol's defaults and switches (issue 9) --------------------------------------------

def test_defaults_are_the_paper_protocol_of_the_default_backbone():
    c = RunConfig()
    a = c.augment
    assert (a.random_crop, a.flip, a.rotation, a.rotation_prob) == (0.2, 0.5, 30.0, 1.0)  # the paper's list
    assert (a.scale, a.color, a.grayscale, a.auxiliary) == (0.0, 0.0, 0.0, True)        # our extras: off
    assert (c.finetune.lr, c.finetune.epochs, c.finetune.milestones) == (2e-4, 100, (30, 50, 70))
    assert (c.loss.weighting, c.loss.alpha, c.loss.beta, c.loss.gamma) == ("fixed", 0.5, 1.0, 0.5)
    assert (c.optim.lr, c.optim.trunk_lr, c.optim.weight_decay, c.optim.epoch_passes) == (1e-3, 0.0, 1e-6, 1)
    assert (c.eval.protocol, c.protocols) == ("benchmark", ("benchmark",))


def test_zero_validation_share_needs_test_selection():
    with pytest.raises(ConfigError, match="data.val_fraction: 0 leaves no validation split"):
        from_dict(RunConfig, {"data": {"val_fraction": 0.0}})
    cfg = from_dict(RunConfig, {"data": {"val_fraction": 0.0}, "eval": {"selection": "test"}})
    assert cfg.data.val_fraction == 0.0
    with pytest.raises(ConfigError, match="optim.epoch_passes"):
        from_dict(RunConfig, {"optim": {"epoch_passes": 0}})
    with pytest.raises(ConfigError, match="loss.weighting"):
        from_dict(RunConfig, {"loss": {"weighting": "adaptive"}})


def test_selected_heads_and_protocols():
    base = {"target": "wflw", "aux": ["cofw"]}
    assert from_dict(RunConfig, {**base, "scenario": "atf"}).selected_heads == ("wflw",)
    assert from_dict(RunConfig, {**base, "scenario": "joint"}).selected_heads == ("wflw", "cofw")
    novel = from_dict(RunConfig, {**base, "scenario": "novel", "novel": "300w"})
    assert novel.selected_heads == ("wflw", "cofw", "300w")
    assert from_dict(RunConfig, {"eval": {"protocol": "both"}}).protocols == ("benchmark", "ocn")
    assert from_dict(RunConfig, {"eval": {"protocol": "ocn"}}).protocols == ("ocn",)


def test_protocol_summary_names_what_a_cell_runs():
    from atf.config import protocol_summary
    cfg = from_dict(RunConfig, {
        "scenario": "atf", "target": "wflw", "aux": ["aflw"], "model": {"backbone": "hrnet_w18", "pretrained": "w.pth"},
        "optim": {"lr": 2e-4, "trunk_lr": 1.5e-4, "schedule": "multistep", "milestones": [30, 50, 70], "epochs": 100},
        "loss": {"weighting": "running", "alpha": 0.2, "beta": 0.8, "gamma": 0.1},
        "eval": {"selection": "test", "protocol": "benchmark"}, "data": {"val_fraction": 0.0}})
    line = protocol_summary(cfg)
    for part in ("hrnet_w18", "256px", "lr 0.0002 trunk 0.00015", "steps 30,50,70", "100 ep",
                 "L_MB running a/b/g 0.2/0.8/0.1", "sel TEST (paper)", "nme benchmark", "pretrained w.pth"):
        assert part in line, (part, line)
    ocn = protocol_summary(RunConfig())
    assert "ocn" in ocn and "112px" in ocn and "plateau x0.1/10" in ocn and "aug crop0.2,flip0.5,rot30@1" in ocn


# -- one engine: atf-train and atf-sweep refuse the same value with the same words ------------

@pytest.mark.parametrize("assignment, message", [
    ("optim.lr=-1", "optim.lr: -1.0 is out of range; expected 0 < optim.lr <= 1"),
    ("finetune.epochs=0", "finetune.epochs: 0 is out of range; expected 1 <= finetune.epochs"),
    ("augment.flip=2", "augment.flip: 2.0 is out of range; expected 0 <= augment.flip <= 1"),
    ("model.input_size=8", "model.input_size: 8 is too small"),
    ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
    ("optim.lrr=0.1", "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ("augment.fliip=0.1", "unknown config key 'augment.fliip' (did you mean 'augment.flip'?)"),
    ("target=nowhere", "target: unknown dataset"),
])
def test_train_and_sweep_paths_refuse_alike(tmp_path, capsys, assignment, message):
    from atf.cli.train import main as train_main
    from orchestration.cli import main as sweep_main
    run = tmp_path / "run.yaml"
    run.write_text("optim: {epochs: 1}\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("tables: [I]\nbase: {optim: {epochs: 1}}\n")
    key, _, raw = assignment.partition("=")
    inline = tmp_path / "inline.yaml"  # the same value written in a sweep file, not given with --set
    inline.write_text(f"tables: [I]\nbase: {{optim: {{epochs: 1}}}}\nset: {{{key}: {raw}}}\n")
    errors = []
    for main, argv in ((train_main, [str(run), "--out", str(tmp_path / "out")]),
                       (sweep_main, [str(sweep), "--dry-run"])):
        assert main([*argv, "--set", assignment]) == 2
        errors.append(capsys.readouterr().err.strip())
    assert sweep_main([str(inline), "--dry-run"]) == 2
    errors.append(capsys.readouterr().err.strip())
    for err in errors:
        assert "\n" not in err and message in err, err
    assert str(run) in errors[0] and str(sweep) in errors[1] and f"{inline}: " in errors[2]
    assert not (tmp_path / "out").exists()


def test_overrides_nest_index_and_keep_free_mappings():
    from atf.config import apply, parse_assignments
    cfg = apply(RunConfig(), parse_assignments(
        ["scenario=atf", "aux=[300w, cofw]", "atdp.decays[1]=0.5", "loss.sigma={wflw: 2, 300w: 1}",
         "optim.milestones=[5, 9]", "data.paths.cofw.images=/x"]))
    assert cfg.atdp.decays == (0.9, 0.5)
    assert cfg.loss.sigma == {"wflw": 2.0, "300w": 1.0} and cfg.sigma("wflw") == 2.0
    assert cfg.optim.milestones == (5, 9) and cfg.data.paths["cofw"].images == "/x"
    with pytest.raises(ConfigError, match=r"atdp\.decays\[2\]': index 2 out of range"):
        apply(cfg, {"atdp.decays[2]": 0.5})
    with pytest.raises(ConfigError, match=r"'optim\.lr\[0\]': optim\.lr is not a list"):
        apply(cfg, {"optim.lr[0]": 0.5})
    with pytest.raises(ConfigError, match=r"--set 'optim\.lr': expected key=value"):
        parse_assignments(["optim.lr"])
