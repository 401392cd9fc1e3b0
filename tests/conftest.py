"""Shared fixtures: a tiny SynthFace benchmark generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # 2-core CI machine: tests run many small models; threads only add overhead

SYNTH_SCALE = 0.004  # ~30 WFLW-like train images; every preset and subset present




@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A tiny synthetic data root in the real on-disk layout (all four presets)."""
    from atf.synth import generate
    root = tmp_path_factory.mktemp("synth")
    generate(root, scale=SYNTH_SCALE, seed=0, workers=1, force=True)
    return root
