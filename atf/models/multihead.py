"""One shared trunk, one private head per dataset: the paper's OCNMP / HRNETMP (sec. III-B, Fig. 2-4).

The trunk runs once per batch and every requested head reads its features, so extra datasets cost
only their heads. `prune` keeps one head for deployment (exactly the baseline network), `add_branch`
opens a head for a novel dataset, and `freeze_trunk` fixes the shared part for head fine-tuning
(joint and novel scenarios, sec. III-D).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import Tensor, nn

from atf.config import ModelConfig
from atf.models.registry import Backbone, create_backbone, get_backbone

__all__ = ["LandmarkModel", "build_model"]


class LandmarkModel(nn.Module):
    """`forward(x, heads=None) -> {dataset: output}`; outputs are [B, K, 2] coords or [B, K, h, w] heatmaps."""

    def __init__(self, trunk: Backbone, heads: nn.ModuleDict) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = heads
        self.trunk_frozen = False

    @property
    def kind(self) -> str:
        """"coords" (crop units, 0..1 spans the input crop) or "heatmap"."""
        return self.trunk.kind

    @property
    def input_size(self) -> int:
        return self.trunk.input_size

    @property
    def heatmap_size(self) -> int:
        """Heatmap side for heatmap models, 0 for coordinate models."""
        return self.trunk.output_size

    @property
    def num_points(self) -> dict[str, int]:
        """Points per head, in head order (what a checkpoint needs to rebuild the model)."""
        return {name: int(head.num_points) for name, head in self.heads.items()}

    def forward(self, x: Tensor, heads: Sequence[str] | None = None) -> dict[str, Tensor]:
        if heads is None:
            names = list(self.heads.keys())
        else:
            names = [heads] if isinstance(heads, str) else list(heads)   # one name, not its letters
        missing = [n for n in names if n not in self.heads]
        if missing:
            raise KeyError(f"model has no head {missing[0]!r}; heads: {list(self.heads.keys())}")
        features = self.trunk.forward_features(x)
        return {name: self.heads[name](features) for name in names}

    def prune(self, name: str) -> LandmarkModel:
        """A copy holding only head `name`: the single-dataset network, for inference and export."""
        if name not in self.heads:
            raise KeyError(f"cannot prune to {name!r}; heads: {list(self.heads.keys())}")
        pruned = LandmarkModel(copy.deepcopy(self.trunk), nn.ModuleDict({name: copy.deepcopy(self.heads[name])}))
        pruned.trunk_frozen = self.trunk_frozen
        return pruned.train(self.training)

    def add_branch(self, name: str, num_points: int) -> nn.Module:
        """Add a freshly initialised head (torch's RNG) for a novel dataset; returns it."""
        if name in self.heads:
            raise ValueError(f"model already has a head {name!r}")
        if num_points < 1:
            raise ValueError(f"head {name!r}: num_points must be >= 1, got {num_points}")
        param = next(self.trunk.parameters())
        head = self.trunk.new_head(num_points).to(device=param.device, dtype=param.dtype)
        head.train(self.training)
        self.heads[name] = head
        return head

    def freeze_trunk(self) -> None:
        """No gradients into the trunk, and its batch-norm statistics stay fixed even in `train()`."""
        self.trunk_frozen = True
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.trunk.eval()

    def train(self, mode: bool = True) -> LandmarkModel:
        super().train(mode)
        if self.trunk_frozen:
            self.trunk.eval()
        return self


def build_model(model_cfg: ModelConfig, heads: dict[str, int], input_size: int = 0,
                heatmap_size: int = 0) -> LandmarkModel:
    """Trunk from `model_cfg.backbone` plus one head per dataset (`heads`: name -> points).

    `input_size` / `heatmap_size` 0 take the config's values, then the backbone's defaults.
    A heatmap backbone's heatmaps are input/4; any other `heatmap_size` is refused. The trunk is
    freshly initialised: `model.pretrained` weights are loaded by the trainer
    (`atf.models.pretrained.load_pretrained`), not here, so that a checkpoint rebuilds its model
    without the weights file.
    """
    if not heads:
        raise ValueError("build_model: at least one head is required")
    spec = get_backbone(model_cfg.backbone)
    size = input_size or model_cfg.input_size or spec.default_input
    options = {name: getattr(model_cfg, name) for name in spec.options}   # e.g. model.ocn_variant
    trunk = create_backbone(spec.name, size, model_cfg.width_mult, **options)
    wanted = heatmap_size or model_cfg.heatmap_size
    if spec.kind == "heatmap" and wanted and wanted != trunk.output_size:
        raise ValueError(f"{spec.name}: heatmap_size must be input_size/4 = {trunk.output_size}, got {wanted}")
    modules = nn.ModuleDict()
    for name, k in heads.items():
        if k < 1:
            raise ValueError(f"head {name!r}: num_points must be >= 1, got {k}")
        modules[name] = trunk.new_head(k)
    return LandmarkModel(trunk, modules)
