"""OCN: the ATF paper's "ordinary convolutional network" for direct coordinate regression.

Paper: Lan et al., "ATF: An Alternating Training Framework for Weakly Supervised Face Alignment"
(OCN, sec. IV-A), built like PFLD (Guo et al., "PFLD: A Practical Facial Landmark Detector", 2019)
from MobileNetV2 inverted-residual bottlenecks (Sandler et al., 2018).

Network: the PFLD backbone on a 112x112 crop (stem, bottlenecks to 128 channels at 1/8), then
PFLD's multi-scale tail: `conv6_1` (bottleneck to 16 channels, S1), `conv7` (3x3 stride 2, S2 at
1/16) and `conv8` (kernel = side of the 1/16 map, S3 at 1x1), global average pools of S1 and S2
concatenated with S3, and one fully-connected layer regressing K*2 coordinates in crop units
(0..1 spans the input crop).

Where the paper is silent the public ATF code (`PFLD_AVG`, `MULTI_FLAN2`) rules, `variant="public"`:
ReLU6 everywhere (as PFLD and MobileNetV2), no residual on `conv5_1` (the first 128->128
bottleneck), BatchNorm after `conv8` (so training needs batches of two or more), PyTorch's default
initialisation. `variant="legacy"` is this project's first OCN, kept so its results reproduce:
ReLU, a residual on `conv5_1` (MobileNetV2's rule: stride 1 and equal widths), `conv8` with a
bias and no BatchNorm, He initialisation.

Private part (`head`): the paper gives each dataset a single FC (`head="fc"`: the tail is shared);
the public multi-head model gives each dataset its own tail and FC (`head="branch"`: the trunk
ends at the 1/8 map). One head of either is the same network, with the same counts.

Counting (see `atf.models.flops`), full width, 112 px, 98-point head included, public variant:
1.2284M parameters (paper 1.228M) and 279.93M FLOPs (paper 279.96M), where FLOPs = conv/linear
multiply-accumulates (272.79M, the PFLD convention) plus two ops per batch-norm element (7.13M, as
THOP-style profilers count). The variants differ by 128 parameters and 256 FLOPs (conv8's bias
versus its BatchNorm), so the paper's counts cannot tell them apart. The FC is 176*196+196 = 34.7k
parameters and 34.5k MACs of that.

Other input sizes: conv8's kernel equals the 1/16 map's side, so the tail always ends in a 1x1 map
and the FC input is the same for every input size.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from atf.models.layers import Act, conv_bn, init_kaiming
from atf.models.registry import Backbone, register_backbone

__all__ = ["InvertedResidual", "MultiScaleTail", "CoordHead", "BranchHead", "OCN", "ocn"]

Variant = Literal["public", "legacy"]
HeadKind = Literal["fc", "branch"]


def _ch(channels: int, width_mult: float) -> int:
    """Scaled channel count, a multiple of 4 and at least 4 (width_mult 1 keeps PFLD's numbers)."""
    return max(4, int(round(channels * width_mult / 4)) * 4)


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: 1x1 expand, 3x3 depthwise, 1x1 linear project (+ identity if `residual`)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, residual: bool, act: Act) -> None:
        super().__init__()
        if residual and (stride != 1 or cin != cout):
            raise ValueError(f"a residual needs stride 1 and equal widths, got {cin}->{cout} stride {stride}")
        hidden = cin * expand
        self.use_residual = residual
        self.block = nn.Sequential(
            conv_bn(cin, hidden, 1, act=act),
            conv_bn(hidden, hidden, 3, stride, groups=hidden, act=act),
            conv_bn(hidden, cout, 1, act=None),
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MultiScaleTail(nn.Module):
    """PFLD's S1/S2/S3 on the 1/8 map, pooled and concatenated: [B, C, h, w] -> [B, out_features]."""

    def __init__(self, cin: int, input_size: int, width_mult: float, variant: Variant) -> None:
        super().__init__()
        act: Act = "relu6" if variant == "public" else "relu"
        c6, c7, c8 = _ch(16, width_mult), _ch(32, width_mult), _ch(128, width_mult)
        side = math.ceil(input_size / 16)                          # side of the 1/16 map
        self.conv6_1 = InvertedResidual(cin, c6, 1, 2, residual=False, act=act)    # S1: 1/8
        self.conv7 = conv_bn(c6, c7, 3, 2, act=act)                                # S2: 1/16
        if variant == "public":                                                    # S3: 1x1
            self.conv8 = conv_bn(c7, c8, side, 1, padding=0, act=act)
        else:   # no batch-norm on the 1x1 map, so a batch of one still trains
            self.conv8 = nn.Sequential(nn.Conv2d(c7, c8, side, 1, 0), nn.ReLU(inplace=True))
        self.out_features = c6 + c7 + c8

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] < 2 and isinstance(self.conv8[1], nn.BatchNorm2d):
            raise ValueError("OCN (model.ocn_variant: public) has BatchNorm on its 1x1 conv8 map, as the "
                             "public code: training needs batches of 2 or more (or ocn_variant: legacy)")
        s1 = self.conv6_1(x)
        s2 = self.conv7(s1)
        s3 = self.conv8(s2)
        return torch.cat([s1.mean((2, 3)), s2.mean((2, 3)), s3.flatten(1)], dim=1)


class CoordHead(nn.Module):
    """The paper's private part: one linear layer, features -> [B, K, 2] coordinates in crop units."""

    def __init__(self, in_features: int, num_points: int) -> None:
        super().__init__()
        self.num_points = num_points
        self.fc = nn.Linear(in_features, num_points * 2)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(features).view(features.shape[0], self.num_points, 2)


class BranchHead(CoordHead):
    """The public multi-head model's private part: its own multi-scale tail, then the FC."""

    def __init__(self, tail: MultiScaleTail, num_points: int) -> None:
        super().__init__(tail.out_features, num_points)
        self.tail = tail

    def forward(self, features: Tensor) -> Tensor:
        return super().forward(self.tail(features))


# PFLD backbone up to the tail, as data: (expansion t, output channels c, repeats n, first stride s)
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),    # conv3_1, block3_2..5: 56 -> 28
    (2, 128, 1, 2),   # conv4_1: 28 -> 14
    (4, 128, 6, 1),   # conv5_1, block5_2..6
)


class OCN(Backbone):
    """PFLD-style trunk: a flat multi-scale vector (`head="fc"`) or the 1/8 map (`head="branch"`)."""

    kind = "coords"

    def __init__(self, input_size: int = 112, width_mult: float = 1.0, variant: Variant = "public",
                 head: HeadKind = "fc") -> None:
        super().__init__()
        if input_size < 16:
            raise ValueError(f"OCN input_size must be >= 16, got {input_size}")
        if variant not in ("public", "legacy"):
            raise ValueError(f"OCN variant must be 'public' or 'legacy', got {variant!r}")
        if head not in ("fc", "branch"):
            raise ValueError(f"OCN head must be 'fc' or 'branch', got {head!r}")
        self.input_size, self.output_size = input_size, 0
        self.width_mult, self.variant, self.head_kind = width_mult, variant, head
        act: Act = "relu6" if variant == "public" else "relu"
        c1 = _ch(64, width_mult)
        self.stem = nn.Sequential(conv_bn(3, c1, 3, 2, act=act), conv_bn(c1, c1, 3, 1, groups=c1, act=act))
        blocks: list[nn.Module] = []
        cin = c1
        for t, c, n, s in _STAGES:
            cout = _ch(c, width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                # public: the first block of a sequence never adds its input; legacy: MobileNetV2's rule
                residual = i > 0 if variant == "public" else (stride == 1 and cin == cout)
                blocks.append(InvertedResidual(cin, cout, stride, t, residual, act))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.map_channels = cin
        self.tail = MultiScaleTail(cin, input_size, width_mult, variant) if head == "fc" else None
        self.num_features = self.tail.out_features if self.tail is not None else cin
        if variant == "legacy":
            init_kaiming(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        return self.tail(x) if self.tail is not None else x

    def new_head(self, num_points: int) -> CoordHead:
        if self.head_kind == "fc":
            head = CoordHead(self.num_features, num_points)
        else:
            tail = MultiScaleTail(self.map_channels, self.input_size, self.width_mult, self.variant)
            if self.variant == "legacy":
                init_kaiming(tail)
            head = BranchHead(tail, num_points)
        nn.init.normal_(head.fc.weight, std=0.01)
        nn.init.constant_(head.fc.bias, 0.5)               # start at the crop centre
        return head


@register_backbone("ocn", kind="coords", default_input=112, default_loss="l1", options=("ocn_variant", "ocn_head"))
def ocn(input_size: int = 112, width_mult: float = 1.0, ocn_variant: Variant = "public",
        ocn_head: HeadKind = "fc") -> OCN:
    return OCN(input_size, width_mult, variant=ocn_variant, head=ocn_head)
