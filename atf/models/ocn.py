"""OCN: the ATF paper's "ordinary convolutional network" for direct coordinate regression.

Paper: Lan et al., "ATF: An Alternating Training Framework for Weakly Supervised Face Alignment"
(OCN, sec. IV-A), built like PFLD (Guo et al., "PFLD: A Practical Facial Landmark Detector", 2019)
from MobileNetV2 inverted-residual bottlenecks (Sandler et al., 2018).

Shared part (`OCN` trunk): the PFLD backbone on a 112x112 crop, ending in multi-scale features
(global average pools of the 1/8 and 1/16 maps, plus a final conv that covers the whole 1/16 map)
concatenated into one vector. Private part (`CoordHead`): a single fully-connected layer regressing
K*2 coordinates in crop units (0..1 spans the input crop), as the paper says of OCN.

Counting (see `atf.models.flops`), full width, 112 px, 98-point head included: 1.2283M parameters
(paper 1.228M) and 279.93M FLOPs (paper 279.96M), where FLOPs = conv/linear multiply-accumulates
(272.79M, the PFLD convention) plus two ops per batch-norm element (7.13M, as THOP-style profilers
count). The head is 176*196+196 = 34.7k parameters and 34.5k MACs of that.

Other input sizes: the final conv's kernel equals the 1/16 map's side, so the trunk always ends in
a 1x1 map and the FC input (`num_features`) is the same for every input size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from atf.models.registry import Backbone, register_backbone

__all__ = ["InvertedResidual", "CoordHead", "OCN", "ocn"]


def _ch(channels: int, width_mult: float) -> int:
    """Scaled channel count, a multiple of 4 and at least 4 (width_mult 1 keeps PFLD's numbers)."""
    return max(4, int(round(channels * width_mult / 4)) * 4)


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: 1x1 expand, 3x3 depthwise, 1x1 linear project (+ identity if shapes match)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            _conv_bn(cin, hidden, 1, 1),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            _conv_bn(hidden, cout, 1, 1, act=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class CoordHead(nn.Module):
    """OCN's private part: one linear layer, features -> [B, K, 2] coordinates in crop units."""

    def __init__(self, in_features: int, num_points: int) -> None:
        super().__init__()
        self.num_points = num_points
        self.fc = nn.Linear(in_features, num_points * 2)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(features).view(features.shape[0], self.num_points, 2)


# PFLD backbone as data: (expansion t, output channels c, repeats n, first stride s)
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),    # 56 -> 28
    (2, 128, 1, 2),   # 28 -> 14
    (4, 128, 6, 1),
    (2, 16, 1, 1),    # S1: 14x14x16
)


class OCN(Backbone):
    """PFLD-style trunk returning a flat multi-scale feature vector [B, num_features]."""

    kind = "coords"

    def __init__(self, input_size: int = 112, width_mult: float = 1.0) -> None:
        super().__init__()
        if input_size < 16:
            raise ValueError(f"OCN input_size must be >= 16, got {input_size}")
        self.input_size = input_size
        self.output_size = 0
        c1 = _ch(64, width_mult)
        self.stem = nn.Sequential(_conv_bn(3, c1, 3, 2), _conv_bn(c1, c1, 3, 1, groups=c1))
        blocks: list[nn.Module] = []
        cin = c1
        for t, c, n, s in _STAGES:
            cout = _ch(c, width_mult)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        c7, c8 = _ch(32, width_mult), _ch(128, width_mult)
        self.conv7 = _conv_bn(cin, c7, 3, 2)                       # S2: 1/16 map
        side = math.ceil(input_size / 16)                          # side of the 1/16 map
        # S3: no batch-norm on this 1x1 map (as PFLD), so a batch of one still trains
        self.conv8 = nn.Sequential(nn.Conv2d(c7, c8, side, 1, 0), nn.ReLU(inplace=True))
        self.num_features = cin + c7 + c8
        _init(self)

    def forward_features(self, x: Tensor) -> Tensor:
        s1 = self.blocks(self.stem(x))
        s2 = self.conv7(s1)
        s3 = self.conv8(s2)
        return torch.cat([s1.mean((2, 3)), s2.mean((2, 3)), s3.flatten(1)], dim=1)

    def new_head(self, num_points: int) -> CoordHead:
        head = CoordHead(self.num_features, num_points)
        nn.init.normal_(head.fc.weight, std=0.01)
        nn.init.constant_(head.fc.bias, 0.5)               # start at the crop centre
        return head


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_backbone("ocn", kind="coords", default_input=112)
def ocn(input_size: int = 112, width_mult: float = 1.0) -> OCN:
    return OCN(input_size, width_mult)
