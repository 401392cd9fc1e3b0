"""Where the real annotation CSVs are: the shared/ folder beside the repo, or $ATF_SHARED."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def find_shared() -> Path | None:
    env = os.environ.get("ATF_SHARED")
    for p in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[1].parent / "shared"]:
        if (p / "data" / "annotations").is_dir():
            return p
    return None


SHARED = find_shared()
ANNOTATIONS = SHARED / "data" / "annotations" if SHARED else None
needs_shared = pytest.mark.skipif(SHARED is None, reason="shared/data/annotations not found (set ATF_SHARED)")
