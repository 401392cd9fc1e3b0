"""Deployable artefact: a pruned single-head model as TorchScript, with its preprocessing inside.

The paper prunes the auxiliary private parts for inference (sec. III-B); what ships is exactly the
baseline network. The file carries `atf.json` (dataset, scheme, points, kind, input and heatmap
size, crop rule and margin, normalisation), so a consumer needs no atf config to use it. The module
is traced (the networks have no data-dependent control flow) and checked against the eager model.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from atf.models.multihead import LandmarkModel

__all__ = ["META_FILE", "REQUIRED_META", "SingleHead", "export_torchscript", "load_exported", "export_onnx"]

META_FILE = "atf.json"
REQUIRED_META = ("dataset", "scheme", "num_points", "kind", "input_size", "heatmap_size", "crop",
                 "crop_margin", "mean", "std")
# ImageNet statistics on RGB in [0, 1], what atf.data feeds the networks (atf.transforms.IMAGENET_*)
_DEFAULT_MEAN = (0.485, 0.456, 0.406)
_DEFAULT_STD = (0.229, 0.224, 0.225)
PARITY_TOL = 1e-5


class SingleHead(nn.Module):
    """`x [B, 3, S, S]` (normalised RGB) -> the one head's output as a plain tensor."""

    def __init__(self, model: LandmarkModel) -> None:
        super().__init__()
        if len(model.heads) != 1:
            raise ValueError(f"export needs a pruned single-head model; heads: {list(model.heads.keys())}")
        self.trunk = model.trunk
        self.head = next(iter(model.heads.values()))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk.forward_features(x))


def _complete_meta(model: LandmarkModel, meta: dict[str, Any]) -> dict[str, Any]:
    """Fill what the model knows, refuse contradictions, and require the rest by name."""
    name = next(iter(model.heads.keys()))
    known = {"num_points": model.num_points[name], "kind": model.kind, "input_size": model.input_size,
             "heatmap_size": model.heatmap_size}
    out = {"dataset": name, "mean": list(_DEFAULT_MEAN), "std": list(_DEFAULT_STD), **known, **meta}
    for key, value in known.items():
        if out[key] != value and not (key == "heatmap_size" and model.kind == "coords"):
            raise ValueError(f"export meta: {key}={out[key]!r} contradicts the model ({value!r})")
    missing = [k for k in REQUIRED_META if k not in out]
    if missing:
        raise ValueError(f"export meta: missing key {missing[0]!r} (required: {', '.join(REQUIRED_META)})")
    if out["dataset"] != name:
        raise ValueError(f"export meta: dataset={out['dataset']!r} but the model's head is {name!r}")
    return out


def export_torchscript(model: LandmarkModel, path: str | Path, meta: dict[str, Any]) -> Path:
    """Trace the single-head `model` on CPU, save it with `atf.json`, and verify parity; returns `path`."""
    full_meta = _complete_meta(model, meta)
    wrapper = SingleHead(copy.deepcopy(model)).cpu().eval()   # the caller's model is left as it was
    example = torch.rand(2, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():   # torch 2.13 marks TorchScript deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        diff = (traced(example) - wrapper(example)).abs().max().item()
    if diff > PARITY_TOL:
        raise RuntimeError(f"export {path}: traced output differs from eager by {diff:.2e}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():   # torch 2.13 marks TorchScript deprecated; it is still the portable format
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(traced, str(path), _extra_files={META_FILE: json.dumps(full_meta, sort_keys=True)})
    return path


def load_exported(path: str | Path, device: str = "cpu") -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """The TorchScript module (eval mode) and its metadata."""
    extra = {META_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{path}: not an atf TorchScript export ({str(e).splitlines()[0]})") from None
    if not extra[META_FILE]:
        raise ValueError(f"{path}: TorchScript file has no {META_FILE} metadata")
    return module.eval(), json.loads(extra[META_FILE])


def export_onnx(model: LandmarkModel, path: str | Path, opset: int = 17) -> Path:
    """ONNX export of the single-head model (needs the optional `onnx` package)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("export_onnx needs the optional 'onnx' package (pip install onnx)") from None
    wrapper = SingleHead(copy.deepcopy(model)).cpu().eval()
    example = torch.zeros(1, 3, model.input_size, model.input_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(wrapper, (example,), str(path), input_names=["image"], output_names=["landmarks"],
                      dynamic_axes={"image": {0: "batch"}, "landmarks": {0: "batch"}}, opset_version=opset,
                      dynamo=False)
    return path
