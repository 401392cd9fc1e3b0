"""Deployable artefact: a pruned single-head model with its preprocessing described inside.

The paper prunes the auxiliary private parts for inference (sec. III-B); what ships is exactly the
baseline network. Every file carries `atf.json` (dataset, scheme, points, kind, input and heatmap
size, crop rule and margin, normalisation), so a consumer needs no atf config to use it, and every
export is checked against the eager model before it is written.

Formats, by suffix:
  .pt2   torch.export (the default): an ExportedProgram with a dynamic batch dimension, loaded with
         torch.export.load; `atf.json` is one of its extra files.
  .onnx  ONNX through torch's current exporter (`torch.onnx.export(..., dynamo=True)`; needs the
         `onnx` extra: onnx, onnxscript, onnxruntime); `atf.json` is a metadata property.
  .pt    TorchScript, which torch 2.13 deprecates: still read (older exports), still writable
         with export_torchscript.
"""

from __future__ import annotations

import copy
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from atf.models.multihead import LandmarkModel

__all__ = ["META_FILE", "REQUIRED_META", "FORMATS", "SingleHead", "export_model", "export_program",
           "export_torchscript", "export_onnx", "load_exported"]

META_FILE = "atf.json"
REQUIRED_META = ("dataset", "scheme", "num_points", "kind", "input_size", "heatmap_size", "crop",
                 "crop_margin", "mean", "std")
FORMATS = (".pt2", ".onnx", ".pt")
# ImageNet statistics on RGB in [0, 1], what atf.data feeds the networks (atf.transforms.IMAGENET_*)
_DEFAULT_MEAN = (0.485, 0.456, 0.406)
_DEFAULT_STD = (0.229, 0.224, 0.225)
PARITY_TOL = 1e-5
ONNX_PARITY_TOL = 1e-4        # ONNX Runtime fuses and reorders float operations
MAX_BATCH = 4096              # the dynamic batch dimension's upper bound


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


def _prepare(model: LandmarkModel, meta: dict[str, Any]) -> tuple[SingleHead, dict[str, Any], Tensor]:
    """Checked metadata, an eval-mode CPU copy (the caller's model is left as it was), and an example."""
    full_meta = _complete_meta(model, meta)
    wrapper = SingleHead(copy.deepcopy(model)).cpu().eval()
    example = torch.rand(2, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(0))
    return wrapper, full_meta, example


def _check_parity(path: Path, run: Callable[[Tensor], Tensor], wrapper: nn.Module, size: int, tol: float) -> None:
    """The export against the eager model, at batch sizes other than the example's."""
    for batch in (1, 3):
        x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            diff = (run(x) - wrapper(x)).abs().max().item()
        if diff > tol:
            path.unlink(missing_ok=True)
            raise RuntimeError(f"export {path}: output differs from eager by {diff:.2e} at batch {batch}")


def export_model(model: LandmarkModel, path: str | Path, meta: dict[str, Any]) -> Path:
    """Export by the suffix of `path` (.pt2 default format, .onnx, .pt); returns `path`."""
    path = Path(path)
    writers = {".pt2": export_program, ".onnx": export_onnx, ".pt": export_torchscript}
    if path.suffix not in writers:
        raise ValueError(f"export {path}: unknown format {path.suffix!r}; choose from {', '.join(FORMATS)}")
    return writers[path.suffix](model, path, meta)


def export_program(model: LandmarkModel, path: str | Path, meta: dict[str, Any]) -> Path:
    """torch.export the single-head `model` (batch dimension dynamic) to a .pt2 file with `atf.json`."""
    wrapper, full_meta, example = _prepare(model, meta)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        program = torch.export.export(wrapper, (example,), dynamic_shapes=({0: batch},))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path), extra_files={META_FILE: json.dumps(full_meta, sort_keys=True)})
    _check_parity(path, torch.export.load(str(path)).module(), wrapper, model.input_size, PARITY_TOL)
    return path


def export_onnx(model: LandmarkModel, path: str | Path, meta: dict[str, Any], opset: int = 18) -> Path:
    """ONNX through torch's current (dynamo) exporter, batch dimension dynamic, `atf.json` as a
    metadata property; checked against eager with ONNX Runtime when it is installed."""
    try:
        import onnx
    except ImportError:
        raise ImportError("export_onnx needs the optional 'onnx' extra (pip install 'atf[onnx]': onnx, "
                          "onnxscript, onnxruntime)") from None
    wrapper, full_meta, example = _prepare(model, meta)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the exporter's own deprecation chatter
        program = torch.onnx.export(wrapper, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                    input_names=["image"], output_names=["output"], opset_version=opset,
                                    verbose=False)
    program.save(str(path))
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {META_FILE: json.dumps(full_meta, sort_keys=True)})
    onnx.save(proto, str(path))
    try:
        runner = _OnnxModule(path)
    except ImportError:
        return path              # no ONNX Runtime: written, not verified
    _check_parity(path, runner, wrapper, model.input_size, ONNX_PARITY_TOL)
    return path


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


class _OnnxModule:
    """An ONNX file run by ONNX Runtime, called like the torch module it came from."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        import onnxruntime as ort  # ImportError when the onnx extra is absent
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if str(device).startswith("cuda") \
            else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.input = self.session.get_inputs()[0].name
        self.meta = self.session.get_modelmeta().custom_metadata_map

    def __call__(self, x: Tensor) -> Tensor:
        out = self.session.run(None, {self.input: x.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


def load_exported(path: str | Path, device: str = "cpu") -> tuple[Callable[[Tensor], Tensor], dict[str, Any]]:
    """The exported network as a callable (input normalised RGB [B, 3, S, S]) and its metadata,
    from a .pt2, .onnx or TorchScript .pt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file (atf-predict reads {', '.join(FORMATS)} exports)")
    if path.suffix == ".pt2":
        extra = {META_FILE: ""}
        if not zipfile.is_zipfile(path):   # before torch.export.load, which logs a traceback first
            raise ValueError(f"{path}: not an atf torch.export file (not a .pt2 archive)")
        try:
            program = torch.export.load(str(path), extra_files=extra)
        except (RuntimeError, ValueError, KeyError, OSError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: not an atf torch.export file ({str(e).splitlines()[0]})") from None
        if not extra[META_FILE]:
            raise ValueError(f"{path}: .pt2 file has no {META_FILE} metadata")
        module = program.module()
        return (module.to(device) if device != "cpu" else module), json.loads(extra[META_FILE])
    if path.suffix == ".onnx":
        try:
            runner = _OnnxModule(path, device)
        except ImportError:
            raise ImportError(f"{path}: reading ONNX needs the optional 'onnx' extra (pip install 'atf[onnx]')") \
                from None
        except Exception as e:   # onnxruntime raises its own types for unreadable files
            raise ValueError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0]})") from None
        if META_FILE not in runner.meta:
            raise ValueError(f"{path}: ONNX model has no {META_FILE} metadata property")
        return runner, json.loads(runner.meta[META_FILE])
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
