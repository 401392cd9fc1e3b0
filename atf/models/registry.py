"""Backbone registry: models are chosen by name, and the tests iterate over this list.

A backbone file registers a builder with `@register_backbone(name, kind=..., default_input=...,
default_loss=..., options=...)`: the facts about a backbone are declared there, once. The builder
takes `(input_size, width_mult, **options)`, where `options` names the `ModelConfig` fields it
reads (e.g. `ocn_variant`), and returns a `Backbone`: a trunk (the paper's shared part, `Part_s`)
that also knows how to make a fresh private head (`Part_p`) for K points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

__all__ = ["Backbone", "BackboneSpec", "register_backbone", "get_backbone", "list_backbones",
           "create_backbone"]

Kind = Literal["coords", "heatmap"]
Builder = Callable[..., "Backbone"]


class Backbone(nn.Module):
    """Shared part of a landmark network: `forward_features` returns what every head consumes."""

    kind: Kind = "coords"
    input_size: int = 0
    output_size: int = 0           # heatmap side for heatmap backbones, 0 for coordinate ones

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)

    def new_head(self, num_points: int) -> nn.Module:
        """A freshly initialised private part for `num_points` landmarks (torch's RNG)."""
        raise NotImplementedError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    kind: Kind                     # "coords" ([B, K, 2] in crop units) or "heatmap" ([B, K, h, w])
    default_input: int             # the paper's input side in pixels
    default_loss: str              # the paper's loss for it (`loss.kind: auto`)
    options: tuple[str, ...]       # ModelConfig fields the builder takes as keyword arguments
    build: Builder                 # (input_size, width_mult, **options) -> Backbone


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, *, kind: Kind, default_input: int, default_loss: str,
                      options: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    """Decorator adding a builder `(input_size, width_mult, **options) -> Backbone` under `name`."""
    def deco(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} registered twice")
        _REGISTRY[name] = BackboneSpec(name, kind, default_input, default_loss, tuple(options), fn)
        return fn
    return deco


def get_backbone(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known: {sorted(_REGISTRY)}") from None


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def create_backbone(name: str, input_size: int = 0, width_mult: float = 1.0, **options: Any) -> Backbone:
    """Build a registered backbone; `input_size` 0 means the paper's default for it.

    `options` are the spec's `ModelConfig` fields (omitted ones take the builder's defaults).
    """
    spec = get_backbone(name)
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise TypeError(f"backbone {name!r} takes no option {unknown[0]!r}; options: {list(spec.options)}")
    return spec.build(input_size or spec.default_input, width_mult, **options)
