"""HRNet-W18 (HRNetV2) for facial landmarks: the ATF paper's heatmap baseline.

Papers: Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation"
(CVPR 2019) and Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition"
(TPAMI 2020; the HRNetV2 face-alignment variant); used as `HRNET` in Lan et al., "ATF" (sec. IV-A).

Shared part (`HRNet` trunk): a stem of two stride-2 3x3 convs, stage 1 of four bottlenecks, then
stages 2-4 (1, 4 and 3 modules of four basic blocks per branch) on 2, 3 and 4 resolutions (widths
18, 36, 72, 144) with repeated multi-resolution fusion; the four branch outputs are upsampled to
1/4 of the input and concatenated (270 channels). Private part (`HeatmapHead`): 1x1 conv 270->270
with BN+ReLU, then 1x1 conv 270->K, giving K heatmaps of side input/4.

Counting (see `atf.models.flops`), full width, 256 px, 98-point head: 9.6623M parameters (paper
9.663M) and 4.732G FLOPs (paper 4.734G) under our convention: conv MACs 4.694G plus two ops per
batch-norm element 0.039G. The public HRNet face code's "4.3 GFLOPs" is the trunk's conv MACs
without the head and without batch-norm (we measure 4.287G); the head alone is 0.407G MACs
(270x270 and 270x98 1x1 convs on 64x64). Its "9.3M" parameters is not reproduced by any split we
tried (trunk 9.562M, head 0.100M); the paper's figure is matched to 0.01%.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atf.models.registry import Backbone, register_backbone

__all__ = ["BasicBlock", "Bottleneck", "HighResolutionModule", "HeatmapHead", "HRNet", "hrnet_w18"]


def _conv_bn(cin: int, cout: int, k: int, stride: int, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut (channels unchanged)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels, 3, 1), _conv_bn(channels, channels, 3, 1, act=False))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a projected shortcut when the width changes."""

    expansion = 4

    def __init__(self, cin: int, planes: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(_conv_bn(cin, planes, 1, 1), _conv_bn(planes, planes, 3, 1),
                                  _conv_bn(planes, cout, 1, 1, act=False))
        self.shortcut = nn.Identity() if cin == cout else _conv_bn(cin, cout, 1, 1, act=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.shortcut(x) + self.body(x))


class HighResolutionModule(nn.Module):
    """Parallel branches of basic blocks, then every output sums all branches resampled to its size."""

    def __init__(self, widths: tuple[int, ...], num_blocks: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(w) for _ in range(num_blocks))) for w in widths)
        self.fuse = nn.ModuleList(
            nn.ModuleList(self._resample(widths, j, i) for j in range(len(widths)))
            for i in range(len(widths)))

    @staticmethod
    def _resample(widths: tuple[int, ...], src: int, dst: int) -> nn.Module:
        """Map branch `src` to the size and width of branch `dst`."""
        if src == dst:
            return nn.Identity()
        if src > dst:   # lower resolution: 1x1 conv to the width; upsampled in forward
            return _conv_bn(widths[src], widths[dst], 1, 1, act=False)
        steps: list[nn.Module] = []   # higher resolution: stride-2 3x3 convs, ReLU between
        for k in range(dst - src):
            last = k == dst - src - 1
            steps.append(_conv_bn(widths[src], widths[dst] if last else widths[src], 3, 2, act=not last))
        return nn.Sequential(*steps)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        ys = [branch(x) for branch, x in zip(self.branches, xs)]
        out: list[Tensor] = []
        for i, row in enumerate(self.fuse):
            acc = ys[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                z = layer(ys[j])
                if j > i:
                    z = F.interpolate(z, size=ys[i].shape[-2:], mode="nearest")
                acc = acc + z
            out.append(F.relu(acc))
        return out


class HeatmapHead(nn.Module):
    """HRNet's private part: 1x1 conv + BN + ReLU, then 1x1 conv to K heatmaps."""

    def __init__(self, in_channels: int, num_points: int) -> None:
        super().__init__()
        self.num_points = num_points
        self.mix = _conv_bn(in_channels, in_channels, 1, 1)
        self.out = nn.Conv2d(in_channels, num_points, 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.out(self.mix(features))


# The HRNetV2-W18 face configuration as data: (modules, branches' widths); 4 blocks per branch
_STAGES: tuple[tuple[int, tuple[int, ...]], ...] = (
    (1, (18, 36)),
    (4, (18, 36, 72)),
    (3, (18, 36, 72, 144)),
)


class HRNet(Backbone):
    """HRNetV2 trunk returning the concatenated 1/4-resolution features [B, sum(widths), s/4, s/4]."""

    kind = "heatmap"

    def __init__(self, input_size: int = 256, width_mult: float = 1.0, blocks: int = 4) -> None:
        super().__init__()
        if input_size < 32 or input_size % 32:
            raise ValueError(f"HRNet input_size must be a multiple of 32, got {input_size}")
        self.input_size = input_size
        self.output_size = input_size // 4

        def ch(c: int) -> int:
            return max(2, int(round(c * width_mult)))

        stem = ch(64)
        self.stem = nn.Sequential(_conv_bn(3, stem, 3, 2), _conv_bn(stem, stem, 3, 2))
        layer1 = [Bottleneck(stem, stem)] + [Bottleneck(stem * 4, stem) for _ in range(blocks - 1)]
        self.layer1 = nn.Sequential(*layer1)
        prev: tuple[int, ...] = (stem * 4,)
        transitions, stages = [], []
        for modules, widths in _STAGES:
            widths = tuple(ch(w) for w in widths)
            transitions.append(self._transition(prev, widths))
            stages.append(nn.Sequential(*(HighResolutionModule(widths, blocks) for _ in range(modules))))
            prev = widths
        self.transitions = nn.ModuleList(transitions)
        self.stages = nn.ModuleList(stages)
        self.num_features = sum(prev)
        _init(self)

    @staticmethod
    def _transition(prev: tuple[int, ...], widths: tuple[int, ...]) -> nn.ModuleList:
        """Adapt existing branches' widths and open the new lowest-resolution branch."""
        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            if i < len(prev):
                layers.append(nn.Identity() if prev[i] == w else _conv_bn(prev[i], w, 3, 1))
            else:
                layers.append(_conv_bn(prev[-1], w, 3, 2))
        return nn.ModuleList(layers)

    def forward_features(self, x: Tensor) -> Tensor:
        xs = [self.layer1(self.stem(x))]
        for transition, stage in zip(self.transitions, self.stages):
            xs = [layer(xs[min(i, len(xs) - 1)]) for i, layer in enumerate(transition)]
            for module in stage:
                xs = module(xs)
        size = xs[0].shape[-2:]
        ups = [xs[0]] + [F.interpolate(z, size=size, mode="bilinear", align_corners=False) for z in xs[1:]]
        return torch.cat(ups, dim=1)

    def new_head(self, num_points: int) -> HeatmapHead:
        head = HeatmapHead(self.num_features, num_points)
        _init(head)
        return head


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_backbone("hrnet_w18", kind="heatmap", default_input=256)
def hrnet_w18(input_size: int = 256, width_mult: float = 1.0) -> HRNet:
    return HRNet(input_size, width_mult)
