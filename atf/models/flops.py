"""Parameter and FLOP counting, with one stated convention so our figures compare with the paper's.

Convention (`FlopCount.flops`): multiply-accumulates of convolutions and linear layers (one MAC =
one "FLOP", as PFLD-style papers count), plus two operations per batch-norm output element (its
scale and shift), which is what the THOP-style profilers used by such papers add. ReLU, pooling,
upsampling and residual additions count zero. Both of the paper's figures are reproduced by it:

| network, 98-point head       | params (ours / paper) | FLOPs (ours / paper) | conv+linear MACs only |
|------------------------------|-----------------------|----------------------|-----------------------|
| OCN, 112 px                  | 1.2284M / 1.228M      | 279.93M / 279.96M    | 272.79M               |
| HRNet-W18, 256 px            | 9.6625M / 9.663M      | 4.732G / 4.734G      | 4.694G (trunk 4.287G) |

The public HRNet face code's "4.3 GFLOPs" matches the trunk's conv MACs alone (4.287G, no head,
no batch-norm); its "9.3M" parameters is not reproduced by any split we tried (trunk 9.562M).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["FlopCount", "count_params", "count_flops", "count_call"]


@dataclass(frozen=True)
class FlopCount:
    macs: int          # multiply-accumulates of conv / linear / matmul ops
    norm_ops: int      # 2 x batch-norm output elements
    @property
    def flops(self) -> int:
        """The figure comparable with the paper's "FLOPs"."""
        return self.macs + self.norm_ops


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_size: int | tuple[int, int], channels: int = 3) -> FlopCount:
    """Count one image's forward pass in eval mode (the model's train/eval state is restored)."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    param = next(model.parameters(), None)
    x = torch.zeros(1, channels, h, w, device=param.device if param is not None else "cpu")
    return count_call(model, lambda: model(x))


def count_call(module: nn.Module, call: Callable[[], object]) -> FlopCount:
    """Count what `call()` runs of `module` (its batch-norm layers hooked), in eval mode; e.g. a
    trunk's `forward_features` and each head on its output separately (orchestration.cost)."""
    bn_elements = 0

    def on_bn(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        nonlocal bn_elements
        bn_elements += out.numel()

    hooks = [m.register_forward_hook(on_bn) for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = module.training
    module.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            call()
    finally:
        for hook in hooks:
            hook.remove()
        module.train(was_training)
    return FlopCount(macs=counter.get_total_flops() // 2, norm_ops=2 * bn_elements)
