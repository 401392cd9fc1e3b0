"""The torch device a run uses: `device: auto` means CUDA when present, else the CPU.

Why a module of its own: the trainer and `atf-eval CHECKPOINT` both turn the config's `device`
string into a `torch.device`, and neither should import the other for it.
"""

from __future__ import annotations

import torch

from atf.config import ConfigError

__all__ = ["pick_device"]


def pick_device(name: str) -> torch.device:
    """`auto` -> cuda if available else cpu; any other torch device string as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"device: {e}") from None
