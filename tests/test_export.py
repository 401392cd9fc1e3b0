"""TorchScript export of a pruned model: parity with eager, metadata round trip, clear refusals."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from atf.config import ModelConfig
from atf.export import REQUIRED_META, export_onnx, export_torchscript, load_exported
from atf.models import build_model, list_backbones

TINY = {"ocn": (32, 0.25), "hrnet_w18": (32, 0.25)}
META = {"scheme": "wflw98", "crop": "center_scale", "crop_margin": 1.25}


def trained_like(name: str) -> torch.nn.Module:
    """A tiny two-head model with non-trivial batch-norm statistics, pruned to its target head."""
    torch.manual_seed(0)
    size, width = TINY[name]
    model = build_model(ModelConfig(backbone=name, width_mult=width), {"wflw": 6, "aflw": 3}, size)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, size, size) * 2 + 0.5)     # moves the running statistics
    return model.prune("wflw").eval()


@pytest.mark.parametrize("name", list_backbones())
def test_exported_module_matches_eager_and_carries_its_metadata(name: str, tmp_path: Path) -> None:
    model = trained_like(name)
    path = export_torchscript(model, tmp_path / "m" / "wflw.pt", {"dataset": "wflw", **META})
    module, meta = load_exported(path)
    size = TINY[name][0]
    x = torch.randn(3, 3, size, size)     # another batch size than the trace's
    with torch.no_grad():
        assert torch.allclose(module(x), model(x)["wflw"], atol=1e-5)
    assert set(REQUIRED_META) <= set(meta)
    assert meta["dataset"] == "wflw" and meta["num_points"] == 6 and meta["kind"] == model.kind
    assert meta["input_size"] == size and meta["crop_margin"] == 1.25
    assert meta["heatmap_size"] == (size // 4 if name == "hrnet_w18" else 0)
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and len(meta["std"]) == 3


def test_export_refuses_multi_head_models_and_bad_metadata(tmp_path: Path) -> None:
    model = build_model(ModelConfig("ocn", width_mult=0.25), {"wflw": 6, "aflw": 3}, 32)
    with pytest.raises(ValueError, match="pruned single-head"):
        export_torchscript(model, tmp_path / "x.pt", META)
    single = model.prune("wflw")
    with pytest.raises(ValueError, match="missing key 'scheme'"):
        export_torchscript(single, tmp_path / "x.pt", {"crop": "box", "crop_margin": 1.0})
    with pytest.raises(ValueError, match="num_points=7 contradicts the model"):
        export_torchscript(single, tmp_path / "x.pt", {**META, "num_points": 7})
    assert not (tmp_path / "x.pt").exists()


def test_export_leaves_the_callers_model_in_its_mode(tmp_path: Path) -> None:
    model = build_model(ModelConfig("ocn", width_mult=0.25), {"wflw": 6}, 32).train()
    export_torchscript(model, tmp_path / "w.pt", META)
    assert model.training


def test_loading_a_file_that_is_not_an_export_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.pt: not an atf TorchScript export"):
        load_exported(bad)


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="optional onnx package not installed")
def test_onnx_export_writes_a_model(tmp_path: Path) -> None:
    import onnx
    path = export_onnx(trained_like("ocn"), tmp_path / "wflw.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    (image,), (out,) = model.graph.input, model.graph.output
    size = TINY["ocn"][0]
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (image.name, dims(image)) == ("image", ["batch", 3, size, size])
    assert (out.name, dims(out)) == ("landmarks", ["batch", 6, 2])     # the pruned wflw head's 6 points


@pytest.mark.skipif(importlib.util.find_spec("onnx") is not None, reason="onnx is installed")
def test_onnx_export_without_onnx_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="optional 'onnx' package"):
        export_onnx(trained_like("ocn"), tmp_path / "wflw.onnx")
