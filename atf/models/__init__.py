"""Landmark networks: backbones by name (registry), multi-head model, parameter/FLOP counting."""

from atf.models import hrnet, ocn  # noqa: F401  (registers the backbones)
from atf.models.flops import FlopCount, count_call, count_flops, count_params
from atf.models.multihead import LandmarkModel, build_model
from atf.models.registry import Backbone, create_backbone, get_backbone, list_backbones, register_backbone

__all__ = ["Backbone", "FlopCount", "LandmarkModel", "build_model", "count_call", "count_flops", "count_params",
           "create_backbone", "get_backbone", "list_backbones", "register_backbone"]
