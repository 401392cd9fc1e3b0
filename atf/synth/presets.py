"""SynthFace presets (`presets.yaml`): sizes, groups, files and variation profiles per dataset.

Why data: the four presets differ only in numbers (sizes, attribute rates, pose ranges), so they
live in one YAML file; this module parses it into frozen records, scales the counts and draws the
latent variables of one face from a preset's profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np
import yaml

from atf import keys
from atf.synth.geometry import Face, SchemeDef, deform, project, scheme_points3d, silhouette_jaw

__all__ = [
    "PRESETS_FILE", "Group", "Preset", "presets", "get_preset", "preset_for_scheme",
    "scaled_count", "group_flags", "sample_face", "sample_shapes", "settings",
]

PRESETS_FILE = Path(__file__).with_name("presets.yaml")
_POSE_KEYS = {"yaw_sd", "yaw_large", "yaw_max", "pitch_sd", "roll_sd"}


class PresetError(ValueError):
    """Unknown preset or malformed preset data; the message names it."""


@dataclass(frozen=True)
class Group:
    name: str
    count: int                              # real size before scaling
    attributes: tuple[tuple[str, float], ...]  # attribute -> probability
    exact: tuple[tuple[str, int], ...]      # attribute -> exact real count
    pose: tuple[tuple[str, object], ...]    # pose profile (preset defaults + overrides)


@dataclass(frozen=True)
class Preset:
    name: str
    scheme: str
    groups: tuple[Group, ...]
    files: tuple[tuple[str, tuple[str, ...]], ...]  # CSV suffix -> "group" / "group:attribute"
    real_groups: tuple[str, ...]

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise PresetError(f"preset {self.name!r}: unknown group {name!r}")


@lru_cache(maxsize=1)
def _raw() -> dict:
    return yaml.safe_load(PRESETS_FILE.read_text())


def settings() -> dict:
    """Shared settings: image_size, face_fraction, min_count."""
    raw = _raw()
    return {k: raw[k] for k in ("image_size", "face_fraction", "min_count")}


def _parse(name: str, d: Mapping) -> Preset:
    where = f"{PRESETS_FILE.name}: preset {name!r}"
    groups = []
    for gname, g in d["groups"].items():
        for key in list(g.get("attributes", {})) + list(g.get("exact", {})):
            if key not in keys.WFLW_ATTRIBUTES:
                raise PresetError(f"{where} group {gname!r}: unknown attribute {key!r}")
        pose = {**d["pose"], **g.get("pose", {})}
        if set(pose) - _POSE_KEYS:
            raise PresetError(f"{where} group {gname!r}: unknown pose key {sorted(set(pose) - _POSE_KEYS)[0]!r}")
        groups.append(Group(gname, int(g["count"]), tuple(g.get("attributes", {}).items()),
                            tuple((k, int(v)) for k, v in g.get("exact", {}).items()), tuple(pose.items())))
    files = tuple((suffix, tuple(src)) for suffix, src in d["files"].items())
    return Preset(name, d["scheme"], tuple(groups), files, tuple(d["real_groups"]))


@lru_cache(maxsize=1)
def presets() -> dict[str, Preset]:
    """All presets by name, in file order (wflw, 300w, cofw, aflw)."""
    return {k: _parse(k, v) for k, v in _raw().items() if isinstance(v, dict) and "scheme" in v}


def get_preset(name: str) -> Preset:
    known = presets()
    if name not in known:
        raise PresetError(f"unknown preset {name!r}; expected one of {list(known)}")
    return known[name]


def preset_for_scheme(scheme: str) -> Preset:
    for p in presets().values():
        if p.scheme == scheme:
            return p
    raise PresetError(f"no preset uses scheme {scheme!r}")


def scaled_count(count: int, scale: float) -> int:
    """Real size x scale, rounded, never below the minimum."""
    return max(int(settings()["min_count"]), int(round(count * scale)))


def group_flags(group: Group, n: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Attribute flags [n, 6] (bool) of a group: exact counts where given, else Bernoulli draws."""
    flags = np.zeros((n, len(keys.WFLW_ATTRIBUTES)), dtype=bool)
    probs = dict(group.attributes)
    exact = dict(group.exact)
    for j, attr in enumerate(keys.WFLW_ATTRIBUTES):
        if attr in exact:
            k = min(n, scaled_count(exact[attr], scale))
            flags[rng.choice(n, size=k, replace=False), j] = True
        else:
            flags[:, j] = rng.random(n) < probs.get(attr, 0.0)
    return flags


def sample_face(rng: np.random.Generator, group: Group, flags: np.ndarray) -> Face:
    """Latent pose, expression and identity of one face, given its attribute flags."""
    pose = dict(group.pose)
    f = dict(zip(keys.WFLW_ATTRIBUTES, flags))
    yaw_max = float(pose.get("yaw_max", 90))
    if f["largepose"]:
        lo, hi = pose["yaw_large"]
        yaw = rng.uniform(lo, hi) * rng.choice([-1.0, 1.0])
        pitch, roll = rng.normal(0, 1.6 * pose["pitch_sd"]), rng.normal(0, 1.6 * pose["roll_sd"])
    else:
        yaw = float(np.clip(rng.normal(0, pose["yaw_sd"]), -yaw_max, yaw_max))
        pitch, roll = rng.normal(0, pose["pitch_sd"]), rng.normal(0, pose["roll_sd"])
    if f["expression"]:
        mouth = rng.uniform(0.12, 0.65) if rng.random() < 0.75 else 0.0
        smile, brow = rng.uniform(-0.3, 1.0), rng.uniform(-0.04, 0.12)
        eyes = rng.uniform(0.15, 1.35)
    else:
        mouth = 0.0 if rng.random() < 0.3 else min(rng.exponential(0.14), 0.6)
        smile, brow = rng.normal(0.15, 0.25), rng.normal(0, 0.015)
        eyes = rng.normal(1.0, 0.12)
    identity = tuple(float(v) for v in rng.normal(0, [0.05, 0.06, 0.03, 0.08, 0.06, 0.07, 0.02]))
    pitch = float(np.clip(pitch, -40, 40))
    roll = float(np.clip(roll, -60, 60))
    return Face(float(yaw), pitch, roll, float(mouth), float(smile), float(brow),
                float(np.clip(eyes, 0.0, 1.4)), identity)


def sample_shapes(preset: Preset, sd: SchemeDef, n: int, seed: int = 0,
                  template: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """n projected landmark shapes [n, K, 2] drawn like the preset's real-file groups (calibration)."""
    rng = np.random.default_rng(seed)
    groups = [preset.group(g) for g in preset.real_groups]
    weights = np.array([g.count for g in groups], float)
    out = np.empty((n, len(sd.t), 2))
    counts = np.round(weights / weights.sum() * n).astype(int)
    counts[-1] = n - counts[:-1].sum()
    i = 0
    for g, c in zip(groups, counts):
        scale = c / g.count
        flags = group_flags(g, c, scale, rng)
        for row in flags:
            face = sample_face(rng, g, row)
            pts = scheme_points3d(silhouette_jaw(deform(face, template), face), sd, rng)
            out[i] = project(pts, face)[:, :2]
            i += 1
    return out
