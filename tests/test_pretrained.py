"""ImageNet weights for HRNet-W18 (issue 9): parity with timm's network, not merely "it loads".

timm's `hrnet_w18` (random weights, `pretrained=False`: nothing is downloaded) is saved in the two
layouts a user holds, timm's state dict and the official HRNet checkpoint, loaded into our trunk,
and the four branch outputs of the last stage are compared on the same input (eval mode).

timm imports torchvision at import time (data transforms, `FrozenBatchNorm2d`), and no torchvision
on PyPI loads beside this project's CPU torch wheel (PyPI's are CUDA builds). So timm is imported
with an import-only stand-in for torchvision; timm's HRNet (`timm/models/hrnet.py`) is plain
torch.nn and calls none of it, so the reference outputs are timm's own network.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from atf.config import ConfigError, RunConfig, override
from atf.models import create_backbone
from atf.models.pretrained import (
    CLASSIFIER_PREFIXES,
    PretrainedError,
    check_pretrained,
    load_pretrained,
    read_state_dict,
)

SIZE = 64          # input side for parity: stage 4's lowest branch is 2x2
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


# -- timm, imported beside a CPU torch -----------------------------------------------------------

class _Placeholder(type):
    """Any attribute of the stand-in is another placeholder class (`InterpolationMode.BILINEAR`)."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


class _StandIn(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandIn(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        pass


@pytest.fixture(scope="module")
def timm():
    """The timm package; torchvision is a stand-in only while timm is imported."""
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed (pip install -e '.[dev]')")
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in ("timm", "torchvision")}
    finder = _TorchvisionStandIn()
    sys.meta_path.insert(0, finder)
    try:
        import timm as module
    finally:
        sys.meta_path.remove(finder)
        for k in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
            del sys.modules[k]
        sys.modules.update({k: v for k, v in saved.items() if k.split(".")[0] == "torchvision"})
    return module


# -- the official checkpoint's names, spelled from the official code's structure ------------------

def official_hrnet_w18_keys(counters: bool = True) -> list[str]:
    """Every tensor name of `hrnetv2_w18_imagenet_pretrained.pth`, in the official layout.

    Written from the structure of HRNet-Image-Classification `lib/models/cls_hrnet.py`
    (`_make_layer`, `_make_transition_layer`, `HighResolutionModule._make_fuse_layers`,
    `_make_head`), independently of our model and of timm's. `counters`: BatchNorm's
    `num_batches_tracked` (in files written by PyTorch >= 0.4.1).
    """
    bn = BN if counters else BN[:-1]

    def norm(p: str) -> list[str]:
        return [f"{p}.{b}" for b in bn]

    def conv_bn(p: str, bias: bool = False) -> list[str]:   # nn.Sequential(conv, bn[, relu])
        return [f"{p}.0.weight"] + ([f"{p}.0.bias"] if bias else []) + norm(f"{p}.1")

    def bottleneck(p: str, downsample: bool) -> list[str]:
        keys = [k for i in (1, 2, 3) for k in [f"{p}.conv{i}.weight", *norm(f"{p}.bn{i}")]]
        return keys + (conv_bn(f"{p}.downsample") if downsample else [])

    def basic(p: str) -> list[str]:
        return [k for i in (1, 2) for k in [f"{p}.conv{i}.weight", *norm(f"{p}.bn{i}")]]

    keys = ["conv1.weight", *norm("bn1"), "conv2.weight", *norm("bn2")]
    keys += [k for i in range(4) for k in bottleneck(f"layer1.{i}", downsample=i == 0)]
    stages = {2: (1, 2), 3: (4, 3), 4: (3, 4)}                 # stage: (modules, branches)
    for s, (modules, branches) in stages.items():
        t = f"transition{s - 1}"
        if s == 2:
            keys += conv_bn(f"{t}.0")                            # 256 -> 18, stride 1
        keys += conv_bn(f"{t}.{branches - 1}.0")                # the new branch: Sequential(Sequential(...))
        for m in range(modules):
            p = f"stage{s}.{m}"
            keys += [k for b in range(branches) for j in range(4) for k in basic(f"{p}.branches.{b}.{j}")]
            for i in range(branches):
                for j in range(branches):
                    if j > i:
                        keys += conv_bn(f"{p}.fuse_layers.{i}.{j}")
                    elif j < i:
                        keys += [k for n in range(i - j) for k in conv_bn(f"{p}.fuse_layers.{i}.{j}.{n}")]
    keys += [k for i in range(4) for k in bottleneck(f"incre_modules.{i}.0", downsample=True)]
    keys += [k for i in range(3) for k in conv_bn(f"downsamp_modules.{i}", bias=True)]
    keys += conv_bn("final_layer", bias=True) + ["classifier.weight", "classifier.bias"]
    return keys


def random_timm_state(timm) -> OrderedDict[str, torch.Tensor]:
    """timm's hrnet_w18 with every weight and BatchNorm statistic random (so a swap would show)."""
    torch.manual_seed(0)
    model = timm.create_model("hrnet_w18", pretrained=False)
    sd = model.state_dict()
    g = torch.Generator().manual_seed(1)
    for k, v in sd.items():
        if not v.is_floating_point():
            continue
        if k.endswith("running_var"):
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
        elif k.endswith("running_mean") or k.endswith(".bias"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        elif v.dim() == 1:   # BatchNorm scale in [0.2, 0.6]: the residual sums stay O(1) (max ~5)
            v.copy_(torch.rand(v.shape, generator=g) * 0.4 + 0.2)
        else:                # conv / linear: fan-in scaled
            fan_in = v[0].numel()
            v.copy_(torch.randn(v.shape, generator=g) / fan_in ** 0.5)
    return sd


def timm_stage_outputs(timm, sd: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """The four branch outputs of timm's last stage (its features API, `feature_location=""`)."""
    features = timm.create_model("hrnet_w18", pretrained=False, features_only=True,
                                 feature_location="", out_indices=(1, 2, 3, 4))
    result = features.load_state_dict(sd, strict=False)
    assert not result.missing_keys
    assert all(k.startswith(CLASSIFIER_PREFIXES) for k in result.unexpected_keys)
    with torch.no_grad():
        return features.eval()(x)


def our_stage_outputs(path: Path, x: torch.Tensor):
    trunk = create_backbone("hrnet_w18", SIZE, 1.0, hrnet_upsample="nearest")   # as the ImageNet net
    report = load_pretrained(trunk, path)
    with torch.no_grad():
        return trunk.eval().forward_stages(x), report, trunk


# -- tests -------------------------------------------------------------------------------------

def test_timm_uses_the_official_name_of_every_tensor(timm) -> None:
    """So one name table serves both files: no timm key differs from the official layout."""
    timm_keys = list(timm.create_model("hrnet_w18", pretrained=False).state_dict())
    official = official_hrnet_w18_keys()
    assert len(official) == len(set(official)) == 1956
    assert sorted(timm_keys) == sorted(official)
    ours = create_backbone("hrnet_w18", SIZE).state_dict()
    assert sorted(ours) == sorted(k for k in official if not k.startswith(CLASSIFIER_PREFIXES))


def test_parity_with_timm_from_timm_state_dict(timm, tmp_path) -> None:
    sd = random_timm_state(timm)
    path = tmp_path / "hrnet_w18_timm.pth"
    torch.save(sd, path)                                  # what a user saves from timm
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    ours, report, _ = our_stage_outputs(path, x)
    ref = timm_stage_outputs(timm, sd, x)
    assert [tuple(o.shape) for o in ours] == [(2, 18, 16, 16), (2, 36, 8, 8), (2, 72, 4, 4), (2, 144, 2, 2)]
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape
        assert b.abs().max() > 0.1                            # a real signal, not zeros
        assert (a - b).abs().max().item() < 1e-5
    assert report.loaded == 1830 and report.complete and not report.missing and not report.unexpected
    assert len(report.ignored) == 126 and all(k.startswith(CLASSIFIER_PREFIXES) for k in report.ignored)


def test_parity_with_timm_from_the_official_checkpoint_layout(timm, tmp_path) -> None:
    """The official file: official names (no counters, as written by older PyTorch), in a
    `{"state_dict": ...}` checkpoint of a DataParallel model (`module.` prefix)."""
    sd = random_timm_state(timm)
    official = official_hrnet_w18_keys(counters=False)
    path = tmp_path / "hrnetv2_w18_imagenet_pretrained.pth"
    torch.save({"state_dict": OrderedDict((f"module.{k}", sd[k]) for k in official), "epoch": 100}, path)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    ours, report, _ = our_stage_outputs(path, x)
    ref = timm_stage_outputs(timm, sd, x)
    for a, b in zip(ours, ref, strict=True):
        assert (a - b).abs().max().item() < 1e-5
    assert report.prefix == "module." and report.complete and not report.unexpected
    assert report.missing and all(k.endswith("num_batches_tracked") for k in report.missing)
    assert report.loaded == 1830 - len(report.missing)
    assert "trunk initialised from" in report.note() and "106 ImageNet-classifier tensors ignored" in report.note()  # 126 less 20 counters


def test_face_upsampling_differs_from_the_imagenet_networks(timm, tmp_path) -> None:
    """The face code fuses with bilinear upsampling (our default); same weights, other outputs."""
    sd = random_timm_state(timm)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    trunk = create_backbone("hrnet_w18", SIZE, 1.0)
    assert trunk.upsample == "bilinear"
    load_pretrained(trunk, path)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        face = trunk.eval().forward_stages(x)
    ref = timm_stage_outputs(timm, sd, x)
    assert (face[0] - ref[0]).abs().max().item() > 1e-3


def _tiny_trunk_state(width: float = 0.25) -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    return create_backbone("hrnet_w18", SIZE, width).state_dict()


def test_missing_and_unexpected_tensors_are_listed(tmp_path) -> None:
    sd = _tiny_trunk_state()
    dropped = "stage3.1.branches.2.0.conv1.weight"
    del sd[dropped]
    sd["head.0.weight"] = torch.zeros(3)                 # e.g. a face-landmark checkpoint's own head
    sd["classifier.weight"] = torch.zeros(2, 2)
    path = tmp_path / "partial.pth"
    torch.save({"model": sd}, path)
    trunk = create_backbone("hrnet_w18", SIZE, 0.25)
    report = load_pretrained(trunk, path)
    assert report.missing == (dropped,) and not report.complete
    assert report.unexpected == ("head.0.weight",) and report.ignored == ("classifier.weight",)
    assert dropped in report.note() and "head.0.weight" in report.note()
    assert torch.equal(trunk.state_dict()["stage4.2.fuse_layers.3.0.2.1.running_var"],
                       sd["stage4.2.fuse_layers.3.0.2.1.running_var"])


def test_a_shape_mismatch_is_an_error_naming_the_key(tmp_path) -> None:
    path = tmp_path / "w18_full.pth"
    torch.save(_tiny_trunk_state(1.0), path)
    with pytest.raises(PretrainedError, match=r"tensor conv1\.weight has shape \(64, 3, 3, 3\), "
                                              r"the trunk expects \(16, 3, 3, 3\)"):
        load_pretrained(create_backbone("hrnet_w18", SIZE, 0.25), path)


def test_missing_file_unreadable_file_and_ocn_are_one_line_errors(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "hrnetv2_w18_imagenet_pretrained.pth"
    with pytest.raises(PretrainedError) as e:
        load_pretrained(create_backbone("hrnet_w18", SIZE, 0.25), missing)
    assert str(e.value) == f"model.pretrained: no such file: {missing}"
    with pytest.raises(PretrainedError, match="no such file"):
        check_pretrained("hrnet_w18", str(missing))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedError) as e:
        read_state_dict(junk)
    assert str(junk) in str(e.value) and "\n" not in str(e.value)
    torch.save({"epoch": 3}, junk)
    with pytest.raises(PretrainedError, match="holds no state dict of tensors"):
        read_state_dict(junk)
    with pytest.raises(PretrainedError, match="backbone 'ocn' has no public ImageNet weights"):
        check_pretrained("ocn", str(junk))
    assert isinstance(PretrainedError("x"), ConfigError)


def test_trainer_loads_the_trunk_and_notes_the_file(synth_root, tmp_path) -> None:
    from atf.train import train
    sd = _tiny_trunk_state()
    path = tmp_path / "imagenet.pth"
    torch.save(sd, path)
    base = {"data.root": str(synth_root), "data.max_train": 8, "data.max_test": 4, "data.val_fraction": 0.25,
            "optim.epochs": 1, "optim.batch_size": 4, "model.backbone": "hrnet_w18", "model.input_size": SIZE,
            "model.width_mult": 0.25, "model.pretrained": str(path)}
    res = train(override(RunConfig(), base), tmp_path / "run")
    note = next(n for n in res.notes if n.startswith("trunk initialised from"))
    assert str(path) in note and f"{len(sd)} tensors" in note and "sha256" in note
    ocn = override(RunConfig(), {**base, "model.backbone": "ocn", "data.root": str(tmp_path / "no-data")})
    with pytest.raises(PretrainedError, match="backbone 'ocn'"):   # refused before any data is read
        train(ocn, tmp_path / "ocn")
