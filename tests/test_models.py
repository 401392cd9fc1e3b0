"""Backbones, the multi-head model and the counter, with real modules at tiny widths and sizes."""

from __future__ import annotations

import sys

import pytest
import torch

from atf.config import ModelConfig
from atf.losses import landmark_loss
from atf.models import (
    LandmarkModel,
    build_model,
    count_flops,
    count_params,
    create_backbone,
    get_backbone,
    list_backbones,
)

# tiny CPU configurations per backbone: (input size, width multiplier)
TINY = {"ocn": (32, 0.25), "hrnet_w18": (32, 0.25)}


def tiny(backbone: str, heads: dict[str, int]) -> LandmarkModel:
    size, width = TINY[backbone]
    return build_model(ModelConfig(backbone=backbone, width_mult=width), heads, size)


def target_like(out: torch.Tensor) -> torch.Tensor:
    return torch.rand_like(out)


def test_registry_lists_both_backbones_and_refuses_unknown() -> None:
    assert list_backbones() == ["hrnet_w18", "ocn"]
    with pytest.raises(KeyError, match="unknown backbone 'resnet'"):
        get_backbone("resnet")
    assert set(TINY) == set(list_backbones())


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_forwards_and_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = tiny(name, {"a": 5, "b": 3})
    size = TINY[name][0]
    out = model(torch.randn(2, 3, size, size))
    assert set(out) == {"a", "b"}
    if model.kind == "coords":
        assert out["a"].shape == (2, 5, 2)
    else:
        assert out["a"].shape == (2, 5, size // 4, size // 4)
    loss = sum(o.pow(2).mean() for o in out.values())
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert all(torch.isfinite(o).all() for o in out.values())


@pytest.mark.parametrize("size", [64, 96, 128])
def test_ocn_any_input_size_gives_the_same_feature_width(size: int) -> None:
    trunk = create_backbone("ocn", size, 0.25)
    feats = trunk(torch.randn(2, 3, size, size))
    assert feats.shape == (2, trunk.num_features)
    assert trunk.num_features == create_backbone("ocn", 112, 0.25).num_features


def test_hrnet_heatmap_is_a_quarter_of_the_input_and_other_sizes_are_refused() -> None:
    model = build_model(ModelConfig("hrnet_w18", width_mult=0.25), {"w": 4}, 64)
    assert model.heatmap_size == 16 and model(torch.zeros(1, 3, 64, 64))["w"].shape == (1, 4, 16, 16)
    with pytest.raises(ValueError, match="heatmap_size must be input_size/4"):
        build_model(ModelConfig("hrnet_w18", width_mult=0.25), {"w": 4}, 64, 32)
    with pytest.raises(ValueError, match="multiple of 32"):
        create_backbone("hrnet_w18", 100, 0.25)


@pytest.mark.parametrize("variant,head", [("public", "fc"), ("public", "branch"), ("legacy", "fc")])
def test_ocn_full_size_matches_the_paper_counts(variant: str, head: str) -> None:
    """Exactly the counts the README quotes (bench/count_models.py); the paper's within 0.05%.

    The variants differ only by conv8's BatchNorm (public) versus its bias (legacy): 128
    parameters and 256 FLOPs, so the paper's counts cannot tell them apart."""
    model = build_model(ModelConfig("ocn", ocn_variant=variant, ocn_head=head), {"wflw": 98})
    params = count_params(model)
    flops = count_flops(model, 112)
    assert params == {"public": 1_228_388, "legacy": 1_228_260}[variant], params   # paper: 1.228M
    assert flops.flops == {"public": 279_925_888, "legacy": 279_925_632}[variant], flops  # paper: 279.96M
    assert abs(flops.flops / 279.96e6 - 1) < 5e-4
    assert flops.macs == 272_791_232     # conv + linear multiply-accumulates alone


def test_ocn_variants_follow_the_public_code_or_the_legacy_network() -> None:
    public, legacy = (create_backbone("ocn", 112, 1.0, ocn_variant=v) for v in ("public", "legacy"))
    conv5_1 = 6                          # conv3_1, block3_2..5, conv4_1, then conv5_1
    assert [b.use_residual for b in public.blocks] == [False, True, True, True, True, False, False] + [True] * 5
    assert legacy.blocks[conv5_1].use_residual and not public.blocks[conv5_1].use_residual
    acts = {type(m) for m in public.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6))}
    assert acts == {torch.nn.ReLU6}
    assert not any(isinstance(m, torch.nn.ReLU6) for m in legacy.modules())
    assert isinstance(public.tail.conv8[1], torch.nn.BatchNorm2d) and public.tail.conv8[0].bias is None
    assert legacy.tail.conv8[0].bias is not None and len(legacy.tail.conv8) == 2
    with pytest.raises(TypeError, match="takes no option 'hrnet_upsample'"):
        create_backbone("ocn", 112, 1.0, hrnet_upsample="nearest")


def test_ocn_branch_head_gives_each_dataset_its_own_tail() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig("ocn", width_mult=0.25, ocn_head="branch"), {"a": 5, "b": 3}, 32)
    assert model.trunk.tail is None and model.trunk(torch.zeros(2, 3, 32, 32)).dim() == 4   # the 1/8 map
    assert model.heads["a"].tail is not model.heads["b"].tail
    assert model(torch.zeros(2, 3, 32, 32))["b"].shape == (2, 3, 2)
    single_fc = build_model(ModelConfig("ocn", width_mult=0.25), {"a": 5}, 32)
    assert count_params(model.prune("a")) == count_params(single_fc)   # one head: the same network


def test_registry_facts_agree_with_the_run_config_defaults() -> None:
    from atf.config import RunConfig
    for name in list_backbones():
        spec = get_backbone(name)
        cfg = RunConfig(model=ModelConfig(backbone=name))
        assert cfg.input_size == spec.default_input and cfg.loss_kind == spec.default_loss, name
        assert all(hasattr(cfg.model, option) for option in spec.options), name


def test_hrnet_full_size_matches_the_paper_counts() -> None:
    """Exactly the counts the README quotes (bench/count_models.py); the paper's within 0.05%."""
    model = build_model(ModelConfig("hrnet_w18"), {"wflw": 98})
    params = count_params(model)
    assert params == 9_662_528, params             # paper: 9.663M (the head's first conv has a bias, as the face code)
    flops = count_flops(model, 256)
    assert flops.flops == 4_732_363_008, flops     # paper: 4.734G
    assert abs(flops.flops / 4.734e9 - 1) < 5e-4
    trunk = count_flops(model.trunk, 256)      # the public HRNet face code's "4.3 GFLOPs"
    assert trunk.macs == 4_286_671_872, trunk


def test_counter_restores_train_mode_and_counts_a_linear_layer_exactly() -> None:
    layer = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 2, 7))
    layer.train()
    count = count_flops(layer, 2)
    assert count.macs == 12 * 7 and count.norm_ops == 0 and layer.training


@pytest.mark.parametrize("name", list_backbones())
def test_prune_matches_the_baseline_and_keeps_outputs(name: str) -> None:
    torch.manual_seed(1)
    model = tiny(name, {"wflw": 7, "aflw": 3, "cofw": 4}).eval()
    pruned = model.prune("wflw")
    size = TINY[name][0]
    baseline = tiny(name, {"wflw": 7})
    assert list(pruned.heads) == ["wflw"]
    assert pruned.num_points == {"wflw": 7} and model.num_points == {"wflw": 7, "aflw": 3, "cofw": 4}
    assert count_params(pruned) == count_params(baseline)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(pruned(x)["wflw"], model(x, heads=["wflw"])["wflw"])
        assert list(model(x, heads="aflw")) == ["aflw"]
    assert len(model.heads) == 3                     # the original is untouched
    with pytest.raises(KeyError, match="no head 'x'"):
        model(x, heads=["x"])


def test_trunk_runs_once_for_all_heads() -> None:
    model = tiny("ocn", {"a": 2, "b": 2, "c": 2})
    calls = []
    model.trunk.stem.register_forward_hook(lambda *_: calls.append(1))
    model(torch.zeros(2, 3, 32, 32))
    assert len(calls) == 1


def test_add_branch_is_seeded_and_initialised_like_the_others() -> None:
    def grown(seed: int) -> torch.nn.Module:
        model = tiny("ocn", {"a": 5})
        torch.manual_seed(seed)
        return model.add_branch("novel", 6)

    h1, h2, h3 = grown(3), grown(3), grown(4)
    assert torch.equal(h1.fc.weight, h2.fc.weight) and not torch.equal(h1.fc.weight, h3.fc.weight)
    model = tiny("ocn", {"a": 5})
    model.add_branch("novel", 6)
    assert model.num_points == {"a": 5, "novel": 6}
    assert torch.equal(model.heads["novel"].fc.bias, torch.full((12,), 0.5))
    assert torch.equal(model.heads["a"].fc.bias, torch.full((10,), 0.5))
    assert abs(model.heads["novel"].fc.weight.std().item() - model.heads["a"].fc.weight.std().item()) < 0.005
    assert model(torch.zeros(2, 3, 32, 32))["novel"].shape == (2, 6, 2)
    with pytest.raises(ValueError, match="training needs batches of 2 or more"):   # BN on the 1x1 conv8 map
        model(torch.zeros(1, 3, 32, 32))
    assert model.eval()(torch.zeros(1, 3, 32, 32))["novel"].shape == (1, 6, 2)
    with pytest.raises(ValueError, match="already has a head 'a'"):
        model.add_branch("a", 3)


@pytest.mark.parametrize("name", list_backbones())
def test_freeze_trunk_keeps_weights_and_bn_statistics_through_a_training_step(name: str) -> None:
    torch.manual_seed(2)
    model = tiny(name, {"a": 4})
    model.freeze_trunk()
    model.train()
    assert not model.trunk.training and model.heads["a"].training
    before = {k: v.clone() for k, v in model.trunk.state_dict().items()}
    head_before = [p.clone() for p in model.heads["a"].parameters()]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    size = TINY[name][0]
    out = model(torch.randn(4, 3, size, size) * 3 + 1)["a"]
    kind = "l1" if model.kind == "coords" else "heatmap_mse"
    landmark_loss(kind, out, target_like(out)).backward()
    opt.step()
    assert all(p.grad is None for p in model.trunk.parameters())
    for k, v in model.trunk.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(head_before, model.heads["a"].parameters()))
    pruned = model.prune("a").train()
    assert not pruned.trunk.training        # the frozen state survives pruning


def test_train_step_benchmark_runs_on_a_tiny_case(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_train_step.py"
    spec = importlib.util.spec_from_file_location("bench_train_step", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_train_step", bench)   # dataclasses look their module up
    spec.loader.exec_module(bench)
    for backbone in list_backbones():
        ips, seconds, params = bench.bench(bench.Case(backbone, 32, 2, 5, 0.25), torch.device("cpu"), 0, 1, 0)
        assert ips == pytest.approx(2 / seconds)    # images per second of batches of 2
        assert params == count_params(tiny(backbone, {"t": 5}))
