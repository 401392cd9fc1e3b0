"""HRNet-W18 (HRNetV2) for facial landmarks: the ATF paper's heatmap baseline.

Papers: Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation"
(CVPR 2019) and Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition"
(TPAMI 2020; the HRNetV2 face-alignment variant); used as `HRNET` in Lan et al., "ATF" (sec. IV-A).

Shared part (`HRNet` trunk): a stem of two stride-2 3x3 convs, stage 1 of four bottlenecks, then
stages 2-4 (1, 4 and 3 modules of four basic blocks per branch) on 2, 3 and 4 resolutions (widths
18, 36, 72, 144) with repeated multi-resolution fusion; the four branch outputs are upsampled to
1/4 of the input and concatenated (270 channels). Private part (`HeatmapHead`): 1x1 conv 270->270
(with bias, as the public face code) with BN+ReLU, then 1x1 conv 270->K: K heatmaps of side input/4.

Module names follow the official HRNet code (`conv1`, `bn1`, `layer1`, `transition1`,
`stage2.0.branches`, `stage2.0.fuse_layers`, ...), so an ImageNet checkpoint of the official
layout or timm's `hrnet_w18` loads by name (`atf.models.pretrained`). Fusion upsamples lower
resolutions bilinearly as the public face code does (`upsample="bilinear"`); the ImageNet
classifier, and timm, upsample with nearest neighbours (`upsample="nearest"`, used for parity).

Counting (see `atf.models.flops`), full width, 256 px, 98-point head: 9.6625M parameters (paper
9.663M) and 4.732G FLOPs (paper 4.734G) under our convention: conv MACs 4.694G plus two ops per
batch-norm element 0.039G. The public HRNet face code's "4.3 GFLOPs" is the trunk's conv MACs
without the head and without batch-norm (we measure 4.287G); the head alone is 0.407G MACs
(270x270 and 270x98 1x1 convs on 64x64). Its "9.3M" parameters is not reproduced by any split we
tried (trunk 9.562M, head 0.100M); the paper's figure is matched to 0.01%.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atf.models.layers import conv_bn, init_normal
from atf.models.registry import Backbone, register_backbone

__all__ = ["BasicBlock", "Bottleneck", "HighResolutionModule", "HeatmapHead", "HRNet", "hrnet_w18"]

Upsample = Literal["bilinear", "nearest"]


def _upsample(x: Tensor, size: torch.Size, mode: Upsample) -> Tensor:
    return F.interpolate(x, size=size, mode=mode, align_corners=False if mode == "bilinear" else None)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut (channels unchanged)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a projected shortcut (`downsample`) when the width changes."""

    expansion = 4

    def __init__(self, cin: int, planes: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = nn.Identity() if cin == cout else conv_bn(cin, cout, 1, act=None)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.downsample(x) + self.bn3(self.conv3(y)))


class HighResolutionModule(nn.Module):
    """Parallel branches of basic blocks, then every output sums all branches resampled to its size."""

    def __init__(self, widths: tuple[int, ...], num_blocks: int, upsample: Upsample) -> None:
        super().__init__()
        self.upsample = upsample
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(w) for _ in range(num_blocks))) for w in widths)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(self._resample(widths, j, i) for j in range(len(widths)))
            for i in range(len(widths)))

    @staticmethod
    def _resample(widths: tuple[int, ...], src: int, dst: int) -> nn.Module:
        """Map branch `src` to the width of branch `dst` (sizes: upsampled in forward, or strided here)."""
        if src == dst:
            return nn.Identity()
        if src > dst:   # lower resolution: 1x1 conv to the width; upsampled in forward
            return conv_bn(widths[src], widths[dst], 1, act=None)
        steps: list[nn.Module] = []   # higher resolution: stride-2 3x3 convs, ReLU between
        for k in range(dst - src):
            last = k == dst - src - 1
            steps.append(conv_bn(widths[src], widths[dst] if last else widths[src], 3, 2,
                                 act=None if last else "relu"))
        return nn.Sequential(*steps)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        ys = [branch(x) for branch, x in zip(self.branches, xs)]
        out: list[Tensor] = []
        for i, row in enumerate(self.fuse_layers):
            acc = ys[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                z = layer(ys[j])
                if j > i:
                    z = _upsample(z, ys[i].shape[-2:], self.upsample)
                acc = acc + z
            out.append(F.relu(acc))
        return out


class HeatmapHead(nn.Module):
    """HRNet's private part: 1x1 conv (with bias) + BN + ReLU, then 1x1 conv to K heatmaps."""

    def __init__(self, in_channels: int, num_points: int) -> None:
        super().__init__()
        self.num_points = num_points
        self.mix = nn.Sequential(nn.Conv2d(in_channels, in_channels, 1), nn.BatchNorm2d(in_channels),
                                 nn.ReLU(inplace=True))
        self.out = nn.Conv2d(in_channels, num_points, 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.out(self.mix(features))


# The HRNetV2-W18 configuration as data: (modules, branches' widths) of stages 2-4; 4 blocks per branch
_STAGES: tuple[tuple[int, tuple[int, ...]], ...] = (
    (1, (18, 36)),
    (4, (18, 36, 72)),
    (3, (18, 36, 72, 144)),
)


class HRNet(Backbone):
    """HRNetV2 trunk returning the concatenated 1/4-resolution features [B, sum(widths), s/4, s/4]."""

    kind = "heatmap"

    def __init__(self, input_size: int = 256, width_mult: float = 1.0, blocks: int = 4,
                 upsample: Upsample = "bilinear") -> None:
        super().__init__()
        if input_size < 32 or input_size % 32:
            raise ValueError(f"HRNet input_size must be a multiple of 32, got {input_size}")
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"HRNet upsample must be 'bilinear' or 'nearest', got {upsample!r}")
        self.input_size = input_size
        self.output_size = input_size // 4
        self.upsample = upsample

        def ch(c: int) -> int:
            return max(2, int(round(c * width_mult)))

        stem = ch(64)
        self.conv1 = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.conv2 = nn.Conv2d(stem, stem, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem)
        self.layer1 = nn.Sequential(Bottleneck(stem, stem), *(Bottleneck(stem * 4, stem) for _ in range(blocks - 1)))
        prev: tuple[int, ...] = (stem * 4,)
        for k, (modules, widths) in enumerate(_STAGES, start=1):   # transition1, stage2, ...
            widths = tuple(ch(w) for w in widths)
            self.add_module(f"transition{k}", self._transition(prev, widths))
            self.add_module(f"stage{k + 1}", nn.Sequential(
                *(HighResolutionModule(widths, blocks, upsample) for _ in range(modules))))
            prev = widths
        self.num_features = sum(prev)
        init_normal(self, std=0.001)

    @staticmethod
    def _transition(prev: tuple[int, ...], widths: tuple[int, ...]) -> nn.ModuleList:
        """Adapt existing branches' widths and open the new lowest-resolution branch."""
        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            if i < len(prev):
                layers.append(nn.Identity() if prev[i] == w else conv_bn(prev[i], w, 3, 1))
            else:
                layers.append(nn.Sequential(conv_bn(prev[-1], w, 3, 2)))
        return nn.ModuleList(layers)

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """The last stage's branch outputs, highest resolution first (what ImageNet parity compares)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for k in range(1, len(_STAGES) + 1):
            transition, stage = getattr(self, f"transition{k}"), getattr(self, f"stage{k + 1}")
            xs = stage([layer(xs[min(i, len(xs) - 1)]) for i, layer in enumerate(transition)])
        return xs

    def forward_features(self, x: Tensor) -> Tensor:
        xs = self.forward_stages(x)
        size = xs[0].shape[-2:]
        return torch.cat([xs[0]] + [_upsample(z, size, "bilinear") for z in xs[1:]], dim=1)

    def new_head(self, num_points: int) -> HeatmapHead:
        head = HeatmapHead(self.num_features, num_points)
        init_normal(head, std=0.001)
        return head


@register_backbone("hrnet_w18", kind="heatmap", default_input=256, default_loss="heatmap_mse",
                   options=("hrnet_upsample",))
def hrnet_w18(input_size: int = 256, width_mult: float = 1.0, hrnet_upsample: Upsample = "bilinear") -> HRNet:
    return HRNet(input_size, width_mult, upsample=hrnet_upsample)
