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
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+ malformed YAML"):
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
