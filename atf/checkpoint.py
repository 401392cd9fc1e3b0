"""One-dict checkpoints: everything needed to resume a run exactly.

A checkpoint holds the model (with its head layout), optimiser, scheduler,
sampler and RNG states, stage and epoch, best metric so far, and both the model
config and the whole run config. Resuming starts at `epoch + 1` of the stored
stage and takes the architecture from the checkpoint, not from the caller.
Writes go through a temporary file and an atomic rename, so a run killed while
saving never leaves a half-written `last.pt`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "CheckpointError"]


class CheckpointError(ValueError):
    """An unreadable or incompatible checkpoint file."""


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "model" not in state or "run_config" not in state:
        raise CheckpointError(f"{path}: not an atf checkpoint (missing model or run_config)")
    return state
