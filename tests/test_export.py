"""Export of a pruned model: torch.export (.pt2, the default), ONNX through the dynamo exporter, and
the older TorchScript; parity with eager at other batch sizes, metadata round trip, clear refusals."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from atf.config import ModelConfig
from atf.export import REQUIRED_META, export_model, export_onnx, export_torchscript, load_exported
from atf.models import build_model, list_backbones

TINY = {"ocn": (32, 0.25), "hrnet_w18": (32, 0.25)}
META = {"scheme": "wflw98", "crop": "center_scale", "crop_margin": 1.25}
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))


def trained_like(name: str) -> torch.nn.Module:
    """A tiny two-head model with non-trivial batch-norm statistics, pruned to its target head."""
    torch.manual_seed(0)
    size, width = TINY[name]
    model = build_model(ModelConfig(backbone=name, width_mult=width), {"wflw": 6, "aflw": 3}, size)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, size, size) * 2 + 0.5)     # moves the running statistics
    return model.prune("wflw").eval()


def _check(path: Path, model: torch.nn.Module, name: str, atol: float) -> None:
    module, meta = load_exported(path)
    size = TINY[name][0]
    for batch in (1, 5):                  # other batch sizes than the export's example (2)
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            assert torch.allclose(module(x), model(x)["wflw"], atol=atol)
    assert set(REQUIRED_META) <= set(meta)
    assert meta["dataset"] == "wflw" and meta["num_points"] == 6 and meta["kind"] == model.kind
    assert meta["input_size"] == size and meta["crop_margin"] == 1.25 and meta["scheme"] == "wflw98"
    assert meta["heatmap_size"] == (size // 4 if name == "hrnet_w18" else 0)
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and len(meta["std"]) == 3


@pytest.mark.parametrize("name", list_backbones())
def test_pt2_export_has_a_dynamic_batch_and_its_metadata(name: str, tmp_path: Path) -> None:
    model = trained_like(name)
    path = export_model(model, tmp_path / "m" / "wflw.pt2", {"dataset": "wflw", **META})
    assert path.suffix == ".pt2"
    program = torch.export.load(str(path))   # a plain torch.export file: no atf needed to read it
    assert "batch" in str(program.range_constraints) or program.range_constraints
    _check(path, model, name, 1e-5)


@pytest.mark.skipif(not HAS_ONNX, reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n != "ocn" else n
                                  for n in list_backbones()])   # one backbone covers the exporter path in CI
def test_onnx_export_matches_eager_in_onnxruntime(name: str, tmp_path: Path) -> None:
    import onnx
    model = trained_like(name)
    path = export_model(model, tmp_path / "wflw.onnx", {"dataset": "wflw", **META})
    proto = onnx.load(str(path))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]   # batch is symbolic
    assert proto.opset_import[0].version >= 18
    _check(path, model, name, 1e-4)


@pytest.mark.skipif(HAS_ONNX, reason="the onnx extra is installed")
def test_onnx_export_without_onnx_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="optional 'onnx' extra"):
        export_onnx(trained_like("ocn"), tmp_path / "wflw.onnx", META)


def test_torchscript_files_are_still_read(tmp_path: Path) -> None:
    model = trained_like("ocn")
    path = export_torchscript(model, tmp_path / "old.pt", META)
    _check(path, model, "ocn", 1e-5)


def test_export_refuses_multi_head_models_and_bad_metadata(tmp_path: Path) -> None:
    model = build_model(ModelConfig("ocn", width_mult=0.25), {"wflw": 6, "aflw": 3}, 32)
    with pytest.raises(ValueError, match="pruned single-head"):
        export_model(model, tmp_path / "x.pt2", META)
    single = model.prune("wflw")
    with pytest.raises(ValueError, match="missing key 'scheme'"):
        export_model(single, tmp_path / "x.pt2", {"crop": "box", "crop_margin": 1.0})
    with pytest.raises(ValueError, match="num_points=7 contradicts the model"):
        export_model(single, tmp_path / "x.pt2", {**META, "num_points": 7})
    with pytest.raises(ValueError, match="unknown format '.tflite'"):
        export_model(single, tmp_path / "x.tflite", META)
    assert not list(tmp_path.iterdir())


def test_export_leaves_the_callers_model_in_its_mode(tmp_path: Path) -> None:
    model = build_model(ModelConfig("ocn", width_mult=0.25), {"wflw": 6}, 32).train()
    export_model(model, tmp_path / "w.pt2", META)
    assert model.training


@pytest.mark.parametrize("suffix", [".pt", ".pt2"] + [".onnx"] * HAS_ONNX)
def test_loading_a_file_that_is_not_an_export_names_it(tmp_path: Path, suffix: str) -> None:
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=f"bad\\{suffix}: not a"):
        load_exported(bad)
