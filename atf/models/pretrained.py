"""ImageNet weights for the HRNet-W18 trunk, read from a file the user holds (nothing is downloaded).

The HRNet face recipe, which the paper follows for its HRNet models, starts from the ImageNet
classifier `hrnetv2_w18_imagenet_pretrained.pth` of the official HRNet code. Two files carry it:

- the official checkpoint: a plain state dict with the official names (`conv1`, `bn1`, `layer1.*`,
  `transition1.*`, `stage2.0.branches.*`, `stage2.0.fuse_layers.*`, ... `stage4.*`) plus the
  classifier's own layers (`incre_modules`, `downsamp_modules`, `final_layer`, `classifier`);
- timm's `hrnet_w18`, saved with `torch.save(model.state_dict())` (or its `pytorch_model.bin`, or
  `model.safetensors` when the safetensors package is installed): timm keeps the official name of
  every tensor, so one name table serves both.

Our trunk (`atf.models.hrnet`) uses the official names, so tensors are matched by name and shape
with no renaming; what differs between files is the wrapping, handled here: a checkpoint dict
(`state_dict` / `model` / `module` entry), a `module.` (DataParallel) or `backbone.` prefix, BatchNorm's
`num_batches_tracked` counters (absent from files written by old PyTorch; not weights), and the
classification-only layers, which are listed as ignored. Any other difference is reported: trunk
tensors the file lacks (kept at their initialisation), file tensors the trunk lacks, and, as an
error naming the key, a tensor whose shape differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from atf.config import ConfigError

__all__ = ["CLASSIFIER_PREFIXES", "PretrainedError", "LoadReport", "read_state_dict", "match_state_dict",
           "load_pretrained", "check_pretrained"]

log = logging.getLogger(__name__)

BACKBONES = ("hrnet_w18",)              # backbones with public ImageNet weights for their trunk
CLASSIFIER_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
_WRAPPERS = ("state_dict", "model", "module")     # checkpoint dict entries holding the weights
_PREFIXES = ("module.", "backbone.")              # DataParallel; detection/pose frameworks
_COUNTER = "num_batches_tracked"


class PretrainedError(ConfigError):
    """A pretrained weights file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class LoadReport:
    path: str
    loaded: int                        # trunk tensors copied from the file
    missing: tuple[str, ...]           # trunk tensors the file lacks (kept at their initialisation)
    ignored: tuple[str, ...]           # the ImageNet classifier's own layers: expected, unused
    unexpected: tuple[str, ...]        # other file tensors the trunk has no use for
    prefix: str = ""                   # stripped from every file key ("" = none)
    sha256: str = ""                   # of the file, so a result names the exact weights it started from

    @property
    def complete(self) -> bool:
        """Every trunk weight came from the file (BatchNorm batch counters do not count)."""
        return not [k for k in self.missing if not k.endswith(_COUNTER)]

    def note(self) -> str:
        """One line for the run's notes: which file, how much of the trunk it set, what it left."""
        weights = [k for k in self.missing if not k.endswith(_COUNTER)]
        digest = f" (sha256 {self.sha256[:16]})" if self.sha256 else ""
        parts = [f"trunk initialised from {self.path}{digest}: {self.loaded} tensors",
                 f"{len(self.ignored)} ImageNet-classifier tensors ignored"]
        if weights:
            parts.append(f"{len(weights)} trunk tensors missing from the file, e.g. {weights[0]}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected tensors, e.g. {self.unexpected[0]}")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """Tensors of a weights file (checkpoint wrappers removed) and the key prefix it used ("" = none)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PretrainedError(f"model.pretrained: no such file: {p}")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise PretrainedError(f"model.pretrained: {p}: reading .safetensors needs the safetensors "
                                  "package (pip install safetensors), or save it with torch.save") from None
        obj: object = load_file(str(p))
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:   # pickle errors of every kind: say which file, in one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PretrainedError(f"model.pretrained: {p}: not a readable torch weights file ({first})") from None
    for _ in range(2):   # e.g. {"state_dict": {...}} or {"model": {"module": {...}}}
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise PretrainedError(f"model.pretrained: {p}: holds no state dict of tensors "
                              f"(looked at the top level and the entries {list(_WRAPPERS)})")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    for prefix in _PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items()}, prefix
    return sd, ""


def _is_tensor_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def match_state_dict(target: Mapping[str, Tensor], source: Mapping[str, Tensor], path: str,
                     prefix: str = "") -> tuple[dict[str, Tensor], LoadReport]:
    """Tensors of `source` to copy into `target` (same name, same shape), and what did not match.

    A tensor present in both with another shape is an error naming the key: the file is for
    another network (another width, e.g. W32), and a silent partial load would hide that.
    """
    for key, value in source.items():
        if key in target and tuple(value.shape) != tuple(target[key].shape):
            raise PretrainedError(f"model.pretrained: {path}: tensor {prefix}{key} has shape "
                                  f"{tuple(value.shape)}, the trunk expects {tuple(target[key].shape)} "
                                  "(a weights file of another network or width?)")
    take = {k: v for k, v in source.items() if k in target}
    extra = sorted(k for k in source if k not in target)
    ignored = tuple(k for k in extra if k.startswith(CLASSIFIER_PREFIXES))
    unexpected = tuple(k for k in extra if not k.startswith(CLASSIFIER_PREFIXES))
    missing = tuple(k for k in target if k not in source)
    if not take:
        raise PretrainedError(f"model.pretrained: {path}: no tensor name matches the trunk "
                              f"(file keys start {sorted(source)[:3]}, trunk keys {list(target)[:3]})")
    return take, LoadReport(str(path), len(take), missing, ignored, unexpected, prefix)


def load_pretrained(trunk: nn.Module, path: str | Path) -> LoadReport:
    """Copy a weights file's tensors into `trunk` by name and shape; log and return what did not match."""
    source, prefix = read_state_dict(path)
    target = trunk.state_dict()
    take, report = match_state_dict(target, source, str(path), prefix)
    report = dataclasses.replace(report, sha256=_sha256(Path(path).expanduser()))
    trunk.load_state_dict(take, strict=False)     # every name and shape was checked above
    weights_missing = [k for k in report.missing if not k.endswith(_COUNTER)]
    if weights_missing:
        log.warning("model.pretrained: %s lacks %d trunk tensors (kept at init): %s", path,
                    len(weights_missing), ", ".join(weights_missing))
    if report.unexpected:
        log.warning("model.pretrained: %s has %d tensors the trunk does not use: %s", path,
                    len(report.unexpected), ", ".join(report.unexpected))
    log.info("%s", report.note())
    return report


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_pretrained(backbone: str, path: str) -> None:
    """Refuse, in one line and before any work, a weights file a run cannot use (no-op for "")."""
    if not path:
        return
    if backbone not in BACKBONES:
        raise PretrainedError(f"model.pretrained: backbone {backbone!r} has no public ImageNet weights to "
                              f"load (only {', '.join(BACKBONES)}); remove model.pretrained")
    p = Path(path).expanduser()
    if not p.is_file():
        raise PretrainedError(f"model.pretrained: no such file: {p}")
