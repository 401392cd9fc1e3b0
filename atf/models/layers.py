"""Layers shared by the backbones: conv + BatchNorm (+ activation) and the weight initialisers.

`conv_bn` returns `Sequential(conv, bn[, act])`, so its parameters are named `.0.weight` (conv)
and `.1.*` (BatchNorm): the layout of the public HRNet and PFLD code, which keeps checkpoint keys
of the HRNet transition and fusion layers identical to the official ones (`atf.models.pretrained`).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

__all__ = ["Act", "act_layer", "conv_bn", "init_normal", "init_kaiming"]

Act = Literal["relu", "relu6"]


def act_layer(name: Act) -> nn.Module:
    """Activation by name (PFLD and MobileNetV2 use ReLU6, HRNet ReLU)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    raise ValueError(f"unknown activation {name!r}; expected 'relu' or 'relu6'")


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, *, groups: int = 1, padding: int | None = None,
            act: Act | None = "relu") -> nn.Sequential:
    """k x k conv without bias (padding (k-1)//2 unless given), BatchNorm, then `act` (None = linear)."""
    pad = (k - 1) // 2 if padding is None else padding
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act_layer(act))
    return nn.Sequential(*layers)


def _init_bn_and_bias(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)


def init_normal(module: nn.Module, std: float) -> None:
    """Conv weights ~ N(0, std), biases 0, BatchNorm 1/0 (the public HRNet code uses std 0.001)."""
    _init_bn_and_bias(module)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=std)


def init_kaiming(module: nn.Module) -> None:
    """Conv weights He-normal (fan out), biases 0, BatchNorm 1/0 (MobileNetV2's initialisation)."""
    _init_bn_and_bias(module)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
