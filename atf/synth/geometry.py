"""SynthFace geometry: one 3D face model, sampled by four landmark schemes.

Why: the paper's premise is that datasets annotate the same faces with different, partly similar
point sets. Here every face is one set of 3D facial curves (jaw, brows, eyes, nose, lips, pupils)
with identity and expression variation, posed by yaw/pitch/roll and projected orthographically.
A scheme's landmark is a fractional vertex index along one curve plus a systematic per-scheme
offset (its annotation convention); per-point noise is added per face. Curve shapes come from the
real WFLW mean shape and the offsets are fitted so that each scheme's synthetic mean shape matches
its real mean shape (`atf/synth/calibrate.py`, run by `tools/calibrate_synth.py` -> `calibration.json`).

Units: the template's outer eye corners sit at (-0.5, 0, z) and (0.5, 0, z); y points down and z
toward the camera.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "CURVES", "SCHEME_CURVES", "Face", "Calibration", "calibration", "template_curves", "template_from_mean",
    "SchemeDef", "deform", "silhouette_jaw", "rotation", "project", "scheme_points3d", "initial_scheme",
]

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")

# template curves as runs of WFLW-98 mean-shape indices (the densest real scheme)
CURVES: dict[str, tuple[int, ...]] = {
    "jaw": tuple(range(0, 33)),
    "brow_l_top": (33, 34, 35, 36, 37), "brow_l_bot": (33, 41, 40, 39, 38),
    "brow_r_top": (42, 43, 44, 45, 46), "brow_r_bot": (50, 49, 48, 47, 46),
    "nose_bridge": (51, 52, 53, 54), "nose_base": (55, 56, 57, 58, 59),
    "eye_l_up": (60, 61, 62, 63, 64), "eye_l_lo": (64, 65, 66, 67, 60),
    "eye_r_up": (68, 69, 70, 71, 72), "eye_r_lo": (72, 73, 74, 75, 68),
    "lip_out_up": (76, 77, 78, 79, 80, 81, 82), "lip_out_lo": (82, 83, 84, 85, 86, 87, 76),
    "lip_in_up": (88, 89, 90, 91, 92), "lip_in_lo": (92, 93, 94, 95, 88),
    "pupil_l": (96,), "pupil_r": (97,),
}
# derived curves: midline between two curves (second one reversed so both run left to right)
DERIVED = {"brow_l_mid": ("brow_l_top", "brow_l_bot"), "brow_r_mid": ("brow_r_top", "brow_r_bot"),
           "lip_mid": ("lip_in_up", "lip_in_lo")}

# which curve each scheme point lies on, as (curve, run length) in point order
SCHEME_CURVES: dict[str, tuple[tuple[str, int], ...]] = {
    "wflw98": (("jaw", 33), ("brow_l_top", 5), ("brow_l_bot", 4), ("brow_r_top", 5), ("brow_r_bot", 4),
               ("nose_bridge", 4), ("nose_base", 5), ("eye_l_up", 5), ("eye_l_lo", 3), ("eye_r_up", 5),
               ("eye_r_lo", 3), ("lip_out_up", 7), ("lip_out_lo", 5), ("lip_in_up", 5), ("lip_in_lo", 3),
               ("pupil_l", 1), ("pupil_r", 1)),
    "300w68": (("jaw", 17), ("brow_l_top", 5), ("brow_r_top", 5), ("nose_bridge", 4), ("nose_base", 5),
               ("eye_l_up", 4), ("eye_l_lo", 2), ("eye_r_up", 4), ("eye_r_lo", 2), ("lip_out_up", 7),
               ("lip_out_lo", 5), ("lip_in_up", 5), ("lip_in_lo", 3)),
    "cofw29": (("brow_l_top", 1), ("brow_r_top", 1), ("brow_l_top", 1), ("brow_r_top", 1),
               ("brow_l_top", 1), ("brow_l_bot", 1), ("brow_r_top", 1), ("brow_r_bot", 1),
               ("eye_l_up", 1), ("eye_r_up", 1), ("eye_l_up", 1), ("eye_r_up", 1),
               ("eye_l_up", 1), ("eye_l_lo", 1), ("eye_r_up", 1), ("eye_r_lo", 1),
               ("pupil_l", 1), ("pupil_r", 1), ("nose_base", 2), ("nose_bridge", 1), ("nose_base", 1),
               ("lip_out_up", 3), ("lip_in_up", 1), ("lip_in_lo", 1), ("lip_out_lo", 1), ("jaw", 1)),
    "aflw19": (("brow_l_mid", 3), ("brow_r_mid", 3), ("eye_l_up", 1), ("pupil_l", 1), ("eye_l_up", 1),
               ("eye_r_up", 1), ("pupil_r", 1), ("eye_r_up", 1), ("nose_base", 1), ("nose_bridge", 1),
               ("nose_base", 1), ("lip_out_up", 1), ("lip_mid", 1), ("lip_out_up", 1), ("jaw", 1)),
}

# annotation noise per scheme, inter-ocular units (isotropic) and jaw slide along the contour (vertices)
NOISE = {"wflw98": (0.010, 0.25), "300w68": (0.012, 0.3), "cofw29": (0.014, 0.0), "aflw19": (0.018, 0.0)}


def _depth(name: str, xy: np.ndarray) -> np.ndarray:
    """A plausible face profile: z of template points from their frontal (x, y)."""
    x, y = xy[:, 0], xy[:, 1]
    if name == "jaw":
        return 0.15 - 0.8 * (x / 0.86) ** 2
    if name.startswith("brow"):
        return 0.08 - 0.45 * x ** 2
    if name.startswith("eye") or name.startswith("pupil"):
        return -0.02 - 0.5 * x ** 2 + (0.03 if name.startswith("pupil") else 0.0)
    if name == "nose_bridge":
        return 0.08 + 0.34 * np.clip(y / 0.44, 0, 1.2)
    if name == "nose_base":
        return 0.28 - 1.5 * x ** 2
    if name.startswith("lip"):
        return 0.18 - 0.9 * x ** 2
    raise KeyError(name)


@lru_cache(maxsize=1)
def _calibration_json() -> dict:
    return json.loads(CALIBRATION_FILE.read_text())


def template_from_mean(mean98: np.ndarray) -> dict[str, np.ndarray]:
    """Neutral 3D template curves [M, 3] from a WFLW-98 mean shape (canonical frame), mouth closed."""
    mean = np.asarray(mean98, dtype=np.float64)
    curves = {}
    for name, idx in CURVES.items():
        xy = mean[list(idx)].copy()
        curves[name] = np.concatenate([xy, _depth(name, xy)[:, None]], axis=1)
    # close the mouth of the neutral face: inner lips meet at their midline, outer lower lip follows
    gap = curves["lip_in_lo"][2, 1] - curves["lip_in_up"][2, 1]
    for name, sign in (("lip_in_up", 0.5), ("lip_in_lo", -0.5), ("lip_out_lo", -1.0)):
        w = _mouth_weight(curves[name][:, 0])
        curves[name][:, 1] += sign * gap * w
    curves["jaw"][:, 1] -= gap * 0.8 * _chin_weight(len(curves["jaw"]))
    return curves


@lru_cache(maxsize=1)
def template_curves() -> dict[str, np.ndarray]:
    """The committed template: built from the real WFLW mean stored in calibration.json."""
    return template_from_mean(np.asarray(_calibration_json()["real"]["wflw98"]["mean"]))


def _mouth_weight(x: np.ndarray) -> np.ndarray:
    """1 at the mouth centre, small at the corners: how much a lip point follows the jaw."""
    return 0.15 + 0.85 * np.cos(np.clip(np.abs(x) / 0.32, 0, 1) * np.pi / 2)


def _chin_weight(m: int) -> np.ndarray:
    """1 at the chin, 0 from the jaw angles up: how much a contour point follows the jaw."""
    u = np.abs(np.linspace(-1, 1, m))
    return np.clip(1 - u / 0.75, 0, 1) ** 1.5


@dataclass(frozen=True)
class Face:
    """One face's latent variables (all a renderer and a scheme need)."""
    yaw: float = 0.0          # degrees, + turns the face toward image right
    pitch: float = 0.0        # degrees, + looks down
    roll: float = 0.0         # degrees, in-plane
    mouth: float = 0.0        # inner-lip gap, inter-ocular units (0 = closed)
    smile: float = 0.0        # mouth corners out and up (negative: down)
    brow: float = 0.0         # brow raise, inter-ocular units
    eyes: float = 1.0         # eye openness (1 neutral, 0 closed)
    identity: tuple[float, ...] = field(default=(0.0,) * 7)  # width, length, eye gap, eye size, nose, mouth, brow


def deform(face: Face, template: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Template curves with the face's identity and expression applied (frontal, before pose)."""
    c = {k: v.copy() for k, v in (template or template_curves()).items()}
    width, length, eye_gap, eye_size, nose, mouth_w, brow_h = face.identity
    c["jaw"][:, 0] *= 1 + width
    for k in ("jaw", "lip_out_up", "lip_out_lo", "lip_in_up", "lip_in_lo", "nose_base"):
        low = c[k][:, 1] > 0
        c[k][low, 1] *= 1 + length
    for k in ("nose_bridge", "nose_base"):
        c[k][:, 1] *= 1 + nose
    for side, sgn in (("l", -1), ("r", 1)):
        names = [f"eye_{side}_up", f"eye_{side}_lo", f"pupil_{side}"]
        ctr = c[f"eye_{side}_up"][[0, -1]].mean(0)
        for k in names:
            c[k][:, :2] = ctr[:2] + (c[k][:, :2] - ctr[:2]) * (1 + eye_size)
            c[k][:, 0] += sgn * eye_gap / 2
        # openness: lids scale toward the corner line
        for k in names[:2]:
            c[k][:, 1] = ctr[1] + (c[k][:, 1] - ctr[1]) * face.eyes
        for k in (f"brow_{side}_top", f"brow_{side}_bot"):
            c[k][:, 1] -= face.brow + brow_h
    for k in ("lip_out_up", "lip_out_lo", "lip_in_up", "lip_in_lo"):
        x = c[k][:, 0]
        rel = x / 0.3
        c[k][:, 0] = x * (1 + mouth_w) + face.smile * 0.06 * rel
        c[k][:, 1] -= face.smile * 0.06 * rel ** 2
    for k, f in (("lip_in_up", -0.15), ("lip_out_up", -0.1), ("lip_in_lo", 0.85), ("lip_out_lo", 0.85)):
        c[k][:, 1] += f * face.mouth * _mouth_weight(c[k][:, 0])
    c["jaw"][:, 1] += 0.85 * face.mouth * _chin_weight(len(c["jaw"]))
    for k in c:
        c[k][:, 2] = _depth(k, c[k][:, :2]) if k != "nose_bridge" else c[k][:, 2]
    for name, (a, b) in DERIVED.items():
        c[name] = (c[a] + c[b][::-1]) / 2
    return c


def silhouette_jaw(curves: dict[str, np.ndarray], face: Face, front: float = 0.2) -> dict[str, np.ndarray]:
    """Curves with the jaw moved to the visible face outline for this yaw.

    Why: annotators put contour points on the visible boundary of the face, so on the far side of a
    turned face they slide forward over the cheek. Each jaw point gets a horizontal arc through the
    cheek to the face front (depth `front`); the point used is the arc's outermost one in the view.
    Frontal faces are unchanged (the jaw point itself is outermost).
    """
    jaw = curves["jaw"]
    phi = np.linspace(0, np.pi / 2, 25)                 # 0: the jaw point, pi/2: the face front
    yaw = np.deg2rad(face.yaw)
    x = jaw[:, :1] * np.cos(phi)[None]                  # [M, P]
    z = jaw[:, 2:3] + (front - jaw[:, 2:3]) * np.sin(phi)[None]
    xv = x * np.cos(yaw) + z * np.sin(yaw)              # image x of the arc points (before roll)
    side = np.sign(jaw[:, :1])
    best = np.argmax(xv * side, axis=1)
    out = dict(curves)
    rows = np.arange(len(jaw))
    out["jaw"] = np.stack([x[rows, best], jaw[:, 1], z[rows, best]], axis=1)
    return out


@lru_cache(maxsize=256)
def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation (degrees): roll about z after pitch about x after yaw about y."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    m = rz @ rx @ ry
    m.setflags(write=False)  # cached: shared between callers
    return m


def project(points: np.ndarray, face: Face) -> np.ndarray:
    """Pose 3D points [..., 3] and keep (x, y, depth): orthographic projection."""
    return points @ rotation(face.yaw, face.pitch, face.roll).T


def _along(curve: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points at fractional vertex indices t along a polyline [M, 3]."""
    m = len(curve)
    if m == 1:
        return np.repeat(curve, len(t), axis=0)
    t = np.clip(t, 0, m - 1)
    i = np.minimum(np.floor(t).astype(int), m - 2)
    f = (t - i)[:, None]
    return curve[i] * (1 - f) + curve[i + 1] * f


@dataclass(frozen=True)
class SchemeDef:
    """A scheme as data: per point its curve, fractional vertex index and systematic offset."""
    name: str
    curves: tuple[str, ...]
    t: np.ndarray            # [K]
    bias: np.ndarray         # [K, 2] frontal-plane offset, inter-ocular units


def _curve_names(scheme: str) -> tuple[str, ...]:
    return tuple(n for n, cnt in SCHEME_CURVES[scheme] for _ in range(cnt))


def scheme_points3d(curves: dict[str, np.ndarray], sd: SchemeDef, rng: np.random.Generator | None = None,
                    noise: bool = True) -> np.ndarray:
    """The scheme's K points [K, 3] on deformed frontal curves, with offset and annotation noise."""
    sigma, slide = NOISE[sd.name]
    t = sd.t.copy()
    if noise and rng is not None and slide:
        jaw = np.array([n == "jaw" for n in sd.curves])
        t[jaw] += rng.normal(0, slide, jaw.sum())
    out = np.empty((len(t), 3))
    for name in set(sd.curves):
        sel = np.array([n == name for n in sd.curves])
        out[sel] = _along(curves[name], t[sel])
    out[:, :2] += sd.bias
    if noise and rng is not None:
        out[:, :2] += rng.normal(0, sigma, (len(t), 2))
    return out


@dataclass(frozen=True)
class Calibration:
    schemes: dict[str, SchemeDef]
    real: dict


@lru_cache(maxsize=1)
def calibration() -> Calibration:
    data = _calibration_json()
    schemes = {}
    for name, d in data["schemes"].items():
        schemes[name] = SchemeDef(name, _curve_names(name), np.asarray(d["t"], float),
                                  np.asarray(d["bias"], float))
    return Calibration(schemes, data["real"])


# -- calibration start (the fit itself: atf/synth/calibrate.py) --------------------------------

def initial_scheme(scheme: str, mean: np.ndarray, template: dict[str, np.ndarray]) -> SchemeDef:
    """Project each real mean point onto its curve of the neutral template: t and residual offset."""
    base = deform(Face(), template)
    names = _curve_names(scheme)
    t = np.zeros(len(names))
    bias = np.zeros((len(names), 2))
    for i, name in enumerate(names):
        curve = base[name]
        if len(curve) == 1:
            t[i] = 0.0
        else:
            dense = np.linspace(0, len(curve) - 1, 400)
            pts = _along(curve, dense)[:, :2]
            t[i] = dense[np.argmin(np.linalg.norm(pts - mean[i], axis=1))]
        bias[i] = mean[i] - _along(curve, t[i:i + 1])[0, :2]
    return SchemeDef(scheme, names, t, bias)
