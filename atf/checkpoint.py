"""One-dict checkpoints: everything needed to resume a run exactly, and nothing that runs code.

A checkpoint holds the model (with its head layout), optimiser, scheduler,
sampler and RNG states, stage and epoch, best metric so far, and both the model
config and the whole run config (as plain dicts). Resuming starts at
`epoch + 1` of the stored stage and takes the architecture from the checkpoint,
not from the caller.

Why it is safe to read a checkpoint from shared storage: files are loaded with
`torch.load(weights_only=True)`, which unpickles tensors and plain containers
only; a crafted file whose pickle names any other callable is refused instead of
run. Everything we write fits that subset (the NumPy RNG state is stored as a
tensor); older files that hold NumPy arrays load through an allow-list of the
three NumPy reconstructors, nothing else.

Why a previous copy: writes go through a temporary file and an atomic rename,
so a run killed while saving never leaves a half-written file; with
`keep_previous` the file being replaced stays as `<stem>.prev.pt`, so a
checkpoint damaged later (disk, copy, sync) still leaves the epoch before it to
resume from (`load_resumable`).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "load_resumable", "previous_path", "rng_state",
           "set_rng_state", "CheckpointError"]


class CheckpointError(ValueError):
    """An unreadable or incompatible checkpoint file."""


def rng_state() -> dict[str, Any]:
    """Torch, NumPy and Python RNG states in types `weights_only` loading accepts."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": (str(name), torch.from_numpy(np.asarray(key, dtype=np.int64)), int(pos), int(has_gauss),
                      float(cached)),
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, key, *rest = state["numpy"]
    key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
    np.random.set_state((name, key.astype(np.uint32), *rest))
    random.setstate(state["python"])


def previous_path(path: Path) -> Path:
    """Where `save_checkpoint(..., keep_previous=True)` keeps the file it replaced."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(state: dict[str, Any], path: Path, keep_previous: bool = False) -> Path:
    """Write `state` atomically (temp file + rename); with `keep_previous` the old file becomes
    `previous_path(path)` (hard link first, so `path` itself never disappears)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    if keep_previous and path.is_file():
        prev, link = previous_path(path), path.with_name(path.name + ".prev-tmp")
        link.unlink(missing_ok=True)
        try:
            os.link(path, link)
        except OSError:  # a filesystem without hard links: a copy is as good
            import shutil
            shutil.copy2(path, link)
        os.replace(link, prev)
    os.replace(tmp, path)
    return path


try:  # NumPy 2 moved the reconstructor; old checkpoints pickled its NumPy 1 or 2 name
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1
    from numpy.core.multiarray import _reconstruct
_NUMPY_SAFE = [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load an atf checkpoint (tensors and plain containers only); CheckpointError names the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or unsafe file
        first = (str(e).strip().splitlines() or [""])[0][:300]
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL (\S+)", str(e))
            what = f"this one names {found.group(1)}" if found else "this one holds other objects"
            raise CheckpointError(f"{path}: refused: a checkpoint holds tensors and plain data only, {what} "
                                  "(a crafted or foreign file; never load it with weights_only=False)") from None
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict) or "model" not in state or "run_config" not in state:
        raise CheckpointError(f"{path}: not an atf checkpoint (missing model or run_config)")
    return state


def load_resumable(path: Path, origin: str | None = None) -> tuple[dict[str, Any], Path, str]:
    """The state to resume from: `path`, else its previous copy when `path` is damaged.

    Returns (state, file used, note: "" or one line saying which file was damaged). Raises
    CheckpointError naming every file tried when none loads. `origin` names where `path` was
    copied from (a sweep's checkpoint in shared storage), so messages name the real file.
    """
    path = Path(path)
    shown = f"{path} (copied from {origin})" if origin else str(path)
    try:
        return _load_resumable(path), path, ""
    except CheckpointError as first:
        prev = previous_path(path)
        if not prev.is_file():
            raise CheckpointError(f"{shown}: {_reason(first, path)}; no previous checkpoint "
                                  f"{prev.name} to fall back to") from None
        try:
            state = _load_resumable(prev)
        except CheckpointError as second:
            raise CheckpointError(f"{shown}: {_reason(first, path)}; previous {prev.name}: "
                                  f"{_reason(second, prev)}") from None
        return state, prev, (f"checkpoint {shown} is damaged ({_reason(first, path)}): resumed from "
                             f"the previous one, {prev.name} (epoch {state.get('epoch')})")


# what a resume reads from a last.pt (train._state), with its type: a file that loads as tensors
# but lacks one (crafted, or from another program) is refused here, by name, not as a KeyError later
_RESUME_KEYS: dict[str, type | tuple[type, ...]] = {
    "model": dict, "heads": dict, "optimizer": dict, "scheduler": (dict, type(None)), "sampler": dict,
    "rng": dict, "stage": int, "epoch": int, "best": dict, "best_epoch": int, "seconds": dict, "run_config": dict}


def _load_resumable(path: Path) -> dict[str, Any]:
    state = load_checkpoint(path)
    for key, kind in _RESUME_KEYS.items():
        if key not in state:
            raise CheckpointError(f"{path}: not a resumable atf checkpoint (missing {key!r})")
        if not isinstance(state[key], kind) or (kind is int and (isinstance(state[key], bool) or state[key] < 0)):
            raise CheckpointError(f"{path}: not a resumable atf checkpoint ({key!r} is {type(state[key]).__name__})")
    return state


def _reason(e: CheckpointError, path: Path) -> str:
    return str(e).removeprefix(f"{path}: ")
