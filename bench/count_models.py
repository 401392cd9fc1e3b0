"""Parameters and FLOPs of the two paper networks (98-point head), beside the paper's figures.

    python bench/count_models.py

FLOPs = multiply-accumulates of conv/linear layers + 2 per BatchNorm output (atf.models.flops).
"""

from __future__ import annotations

from atf.config import ModelConfig
from atf.models import build_model
from atf.models.flops import count_flops, count_params

PAPER = {"ocn": (1.228e6, 279.96e6, 112), "hrnet_w18": (9.663e6, 4.734e9, 256)}


def main() -> None:
    print("| network | input | params (ours / paper) | FLOPs (ours / paper) | conv+linear MACs | trunk: params, MACs |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (p_params, p_flops, size) in PAPER.items():
        model = build_model(ModelConfig(backbone=name), {"wflw": 98}, size, 0).eval()
        params, flops = count_params(model), count_flops(model, size)
        trunk_params, trunk = count_params(model.trunk), count_flops(model.trunk, size)
        print(f"| {name} | {size} | {params:,} / {p_params / 1e6:.3f}M | {flops.flops / 1e6:,.2f}M / "
              f"{p_flops / 1e6:,.2f}M | {flops.macs / 1e6:,.2f}M | {trunk_params:,}, {trunk.macs / 1e6:,.2f}M |")


if __name__ == "__main__":
    main()
