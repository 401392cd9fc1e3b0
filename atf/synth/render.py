"""SynthFace renderer: draws a posed face with OpenCV so that landmarks are learnable from pixels.

Why this way: every feature (jaw silhouette, brows, lids, iris, nose, lips) is drawn from the same
deformed 3D curves the landmark schemes sample, so each landmark sits on a visible edge or blob.
Nuisance variation (background clutter, illumination, make-up, occlusion, blur, noise) is drawn
per image from the image's own random generator, following its attribute flags.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from atf.synth.geometry import Face, project

__all__ = ["Placement", "place", "render_face"]

_SHIFT = 4                      # sub-pixel drawing: coordinates x 16
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Placement:
    """Frontal-units -> pixels: p_img = p * ppu + offset."""
    ppu: float                  # pixels per inter-ocular unit
    offset: tuple[float, float]


def place(curves2d: dict[str, np.ndarray], size: int, fraction: float, rng: np.random.Generator) -> Placement:
    """Scale and centre the face so its feature box covers `fraction` of the image side."""
    pts = np.concatenate([v[:, :2] for k, v in curves2d.items() if k != "forehead"])
    lo, hi = pts.min(0), pts.max(0)
    ppu = fraction * size / float((hi - lo).max())
    centre = size / 2 + rng.normal(0, 0.03 * size, 2)
    off = centre - (lo + hi) / 2 * ppu
    return Placement(ppu, (float(off[0]), float(off[1])))


def _pix(p: np.ndarray, pl: Placement) -> np.ndarray:
    return p[..., :2] * pl.ppu + np.asarray(pl.offset)


def _poly(img: np.ndarray, pts: np.ndarray, colour, closed: bool = True, thickness: int = -1) -> None:
    q = np.round(pts * _ONE).astype(np.int32).reshape(-1, 1, 2)
    if thickness < 0:
        cv2.fillPoly(img, [q], colour, cv2.LINE_AA, _SHIFT)
    else:
        cv2.polylines(img, [q], closed, colour, thickness, cv2.LINE_AA, _SHIFT)


def _circle(img: np.ndarray, c: np.ndarray, r: float, colour, thickness: int = -1) -> None:
    cv2.circle(img, tuple(int(v) for v in np.round(c * _ONE)), max(1, int(round(r * _ONE))), colour,
               thickness, cv2.LINE_AA, _SHIFT)


def _forehead(curves: dict[str, np.ndarray], top: float) -> np.ndarray:
    """3D arc over the head from the jaw's right end to its left end (rendering only)."""
    jaw = curves["jaw"]
    a, b = jaw[-1], jaw[0]
    th = np.linspace(0, np.pi, 15)
    half = (a[0] - b[0]) / 2
    cx = (a[0] + b[0]) / 2
    x = cx + half * np.cos(th)
    y = (a[1] + b[1]) / 2 + (top - (a[1] + b[1]) / 2) * np.sin(th)
    z = a[2] + (0.15 - a[2]) * np.sin(th) ** 0.7
    return np.stack([x, y, z], 1)


def _skull(curves: dict[str, np.ndarray]) -> np.ndarray:
    """Points on the back and top of the head, so profile views show a whole head of hair."""
    jaw = curves["jaw"]
    half = (jaw[-1, 0] - jaw[0, 0]) / 2 * 1.05
    phi = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    rings = []
    for y, r in ((-1.2, 0.55), (-0.7, 0.95), (-0.1, 1.0)):
        rings.append(np.stack([half * r * np.cos(phi), np.full_like(phi, y), -0.5 + 0.95 * r * np.sin(phi)], 1))
    return np.concatenate(rings)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gradient plus random clutter shapes."""
    c0, c1 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    t = np.linspace(0, 1, size, dtype=np.float32)
    ang = rng.uniform(0, np.pi)
    ramp = np.cos(ang) * t[None, :] + np.sin(ang) * t[:, None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    img = (c0[None, None] * (1 - ramp[..., None]) + c1[None, None] * ramp[..., None]).astype(np.uint8)
    for _ in range(int(rng.integers(4, 14))):
        col = tuple(int(v) for v in rng.uniform(0, 255, 3))
        kind = rng.integers(0, 3)
        p = rng.uniform(-0.1, 1.1, 2) * size
        if kind == 0:
            w = rng.uniform(0.05, 0.4, 2) * size
            cv2.rectangle(img, tuple(int(v) for v in p), tuple(int(v) for v in p + w), col, -1)
        elif kind == 1:
            cv2.circle(img, tuple(int(v) for v in p), int(rng.uniform(0.03, 0.2) * size), col, -1, cv2.LINE_AA)
        else:
            q = rng.uniform(-0.1, 1.1, 2) * size
            cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), col, int(rng.integers(1, 6)),
                     cv2.LINE_AA)
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 2.5))


def _skin(rng: np.random.Generator) -> np.ndarray:
    """A skin tone (BGR) between dark and light."""
    dark, light = np.array([70, 95, 140]), np.array([185, 205, 240])
    t = rng.beta(2.5, 1.6)
    return dark + (light - dark) * t + rng.normal(0, 6, 3)


def _c(v) -> tuple[int, int, int]:
    return tuple(int(x) for x in np.clip(v, 0, 255))


def render_face(face: Face, curves: dict[str, np.ndarray], pl: Placement, flags: dict[str, bool],
                rng: np.random.Generator, size: int) -> np.ndarray:
    """The image (BGR uint8, size x size) of one face; `curves` are deformed frontal 3D curves.
    Painted back to front; every step draws from `rng` in a fixed order (same seed, same bytes)."""
    ppu = pl.ppu
    fore3d = _forehead(curves, top=-1.05 - rng.uniform(0, 0.1))
    hair3d = _forehead(curves, top=-1.25 - rng.uniform(0, 0.12))
    hair3d[:, 0] *= 1.08
    line3d = _forehead(curves, top=-0.72 - rng.uniform(0, 0.15))
    P = {k: _pix(project(v, face), pl) for k, v in curves.items()}
    fore, hair, hline, skull = (_pix(project(v, face), pl) for v in (fore3d, hair3d, line3d, _skull(curves)))
    img = _background(rng, size)
    skin = _skin(rng)
    hair_col = rng.uniform(10, 70) * np.array([1.0, 1.1, 1.3]) if rng.random() < 0.8 else rng.uniform(60, 200, 3)
    _paint_body(img, P["jaw"], skin, rng, ppu, size)
    _paint_head_hair(img, P["jaw"], np.concatenate([hair, fore, skull]), hair_col, rng, ppu)
    _paint_ears(img, P["jaw"], face, skin, ppu)
    img = _paint_face_skin(img, P, fore, face, skin, rng, ppu, size)
    _poly(img, np.concatenate([fore[2:-2], hline[::-1][2:-2]]), _c(hair_col))  # fringe over the forehead
    makeup = flags.get("makeup", False)
    if makeup:
        img = _paint_makeup(img, P, skin, rng, ppu)
    brow_col = _c(hair_col * 0.8)
    for s in ("l", "r"):
        _poly(img, np.concatenate([P[f"brow_{s}_top"], P[f"brow_{s}_bot"][::-1]]), brow_col)
    img = _paint_eyes(img, P, skin, rng, ppu, size)
    img = _paint_nose(img, P, face, skin, ppu)
    _paint_mouth(img, P, face, skin, rng, makeup, ppu)
    if flags.get("occlusion", False):
        img = _occlude(img, P, rng, ppu, skin)
    return _finish(img, flags, rng)


def _paint_body(img: np.ndarray, jaw: np.ndarray, skin: np.ndarray, rng: np.random.Generator,
                ppu: float, size: int) -> None:
    """Neck and shoulders (clothes of a random colour)."""
    neck = np.array([jaw[9], jaw[23], jaw[23] + [0, size], jaw[9] + [0, size]])
    _poly(img, neck, _c(skin * 0.6))
    chin = jaw[16]
    cloth = _c(rng.uniform(0, 255, 3))
    cv2.ellipse(img, (int(chin[0]), int(chin[1] + 0.9 * ppu)), (int(1.6 * ppu), int(0.7 * ppu)),
                0, 180, 360, cloth, -1, cv2.LINE_AA)
    cv2.rectangle(img, (int(chin[0] - 1.6 * ppu), int(chin[1] + 0.9 * ppu)), (size, size), cloth, -1)


def _paint_head_hair(img: np.ndarray, jaw: np.ndarray, head_hair: np.ndarray, hair_col: np.ndarray,
                     rng: np.random.Generator, ppu: float) -> None:
    """Hair behind the head; sometimes long, falling behind the face to the shoulders."""
    if rng.random() < 0.4:
        drop = jaw[16, 1] + rng.uniform(0.1, 0.6) * ppu
        left, right = head_hair[:, 0].min(), head_hair[:, 0].max()
        head_hair = np.concatenate([head_hair, [[left + 0.05 * ppu, drop], [right - 0.05 * ppu, drop]]])
    _poly(img, cv2.convexHull(head_hair.astype(np.float32))[:, 0], _c(hair_col))


def _paint_ears(img: np.ndarray, jaw: np.ndarray, face: Face, skin: np.ndarray, ppu: float) -> None:
    for i in (1, 31):
        e = jaw[i]
        cv2.ellipse(img, (int(e[0]), int(e[1])), (max(1, int(0.1 * ppu)), max(1, int(0.2 * ppu))),
                    face.roll, 0, 360, _c(skin * 0.85), -1, cv2.LINE_AA)


def _paint_face_skin(img: np.ndarray, P: dict, fore: np.ndarray, face: Face, skin: np.ndarray,
                     rng: np.random.Generator, ppu: float, size: int) -> np.ndarray:
    """The face's skin: darker toward the silhouette, lit from one side, with an edge the jaw points sit on."""
    outline = np.concatenate([P["jaw"], fore[1:-1], P["nose_bridge"], P["nose_base"], P["lip_out_up"]])
    hull = cv2.convexHull(outline.astype(np.float32))[:, 0]
    mask = np.zeros((size, size), np.uint8)
    _poly(mask, hull, 255)
    dist = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 3)
    shade = 0.72 + 0.28 * np.clip(dist / (0.25 * ppu), 0, 1)
    lx = rng.normal(0, 0.25) + np.sin(np.deg2rad(face.yaw)) * 0.3
    xs = (np.arange(size, dtype=np.float32) - size / 2) / size
    shade = shade * (1 + lx * xs)[None, :]
    face_layer = np.clip(skin[None, None] * shade[..., None], 0, 255).astype(np.uint8)
    m3 = (mask.astype(np.float32) / 255)[..., None]
    img = (img * (1 - m3) + face_layer * m3).astype(np.uint8)
    _poly(img, hull, _c(skin * 0.55), closed=True, thickness=1)
    return img


def _paint_makeup(img: np.ndarray, P: dict, skin: np.ndarray, rng: np.random.Generator, ppu: float) -> np.ndarray:
    """Eye shadow and blush, half transparent."""
    paint = img.copy()
    shadow = _c(rng.uniform(30, 220, 3))
    for s in ("l", "r"):
        lid = np.concatenate([P[f"eye_{s}_up"], P[f"brow_{s}_bot"][::-1] * 0.5 + P[f"eye_{s}_up"][::-1] * 0.5])
        _poly(paint, lid, shadow)
    blush = _c(skin * np.array([0.8, 0.75, 1.2]))
    for i in (5, 27):
        c = P["jaw"][i] * 0.55 + P["nose_base"][2] * 0.45
        _circle(paint, c, 0.14 * ppu, blush)
    return cv2.addWeighted(img, 0.45, paint, 0.55, 0)


def _paint_eyes(img: np.ndarray, P: dict, skin: np.ndarray, rng: np.random.Generator, ppu: float,
                size: int) -> np.ndarray:
    """Sclera, iris, pupil (clipped to the eye's outline), then the lids."""
    iris_col = _c(rng.choice([[30, 60, 90], [20, 40, 60], [140, 110, 60], [90, 120, 80]]) + rng.normal(0, 10, 3))
    for s in ("l", "r"):
        eye = np.concatenate([P[f"eye_{s}_up"], P[f"eye_{s}_lo"][1:-1]])
        emask = np.zeros((size, size), np.uint8)
        _poly(emask, eye, 255)
        tmp = img.copy()
        _poly(tmp, eye, (225, 230, 235))
        _circle(tmp, P[f"pupil_{s}"][0], 0.085 * ppu, iris_col)
        _circle(tmp, P[f"pupil_{s}"][0], 0.04 * ppu, (10, 10, 10))
        em = (emask.astype(np.float32) / 255)[..., None]
        img = (img * (1 - em) + tmp * em).astype(np.uint8)
        _poly(img, P[f"eye_{s}_up"], (25, 20, 20), closed=False, thickness=2)
        _poly(img, P[f"eye_{s}_lo"], _c(skin * 0.45), closed=False, thickness=1)
    return img


def _paint_nose(img: np.ndarray, P: dict, face: Face, skin: np.ndarray, ppu: float) -> np.ndarray:
    """Side shading of the bridge (away from the yaw), the base and the nostrils."""
    nb, base = P["nose_bridge"], P["nose_base"]
    side = 1 if face.yaw >= 0 else -1
    paint = img.copy()
    wing = base[0] if side > 0 else base[-1]
    _poly(paint, np.concatenate([nb[:1], nb[-1:], base[2:3], wing[None]]), _c(skin * 0.7))
    img = cv2.addWeighted(img, 0.5, paint, 0.5, 0)
    _poly(img, nb[1:], _c(skin * 0.8), closed=False, thickness=1)
    _poly(img, base, _c(skin * 0.5), closed=False, thickness=2)
    for i in (1, 3):
        _circle(img, base[i] - [0, 0.02 * ppu], 0.035 * ppu, _c(skin * 0.3))
    _circle(img, nb[-1], 0.04 * ppu, _c(np.minimum(skin * 1.15, 255)))
    return img


def _paint_mouth(img: np.ndarray, P: dict, face: Face, skin: np.ndarray, rng: np.random.Generator,
                 makeup: bool, ppu: float) -> None:
    """Lips (painted with makeup), and the open mouth's inside and teeth."""
    lip_col = skin * np.array([0.7, 0.65, 1.05])
    if makeup:
        lip_col = rng.choice([[60, 30, 200], [120, 60, 190], [90, 70, 160], [40, 20, 120]]) + rng.normal(0, 10, 3)
    _poly(img, np.concatenate([P["lip_out_up"], P["lip_out_lo"][1:-1]]), _c(lip_col))
    inner = np.concatenate([P["lip_in_up"], P["lip_in_lo"][1:-1]])
    if face.mouth > 0.03:
        _poly(img, inner, (35, 25, 45))
        teeth = np.concatenate([P["lip_in_up"], P["lip_in_up"][::-1] + [0, 0.05 * ppu]])
        _poly(img, teeth, (200, 210, 215))
    _poly(img, P["lip_mid"], _c(lip_col * 0.45), closed=False, thickness=1)


def _occlude(img: np.ndarray, P: dict, rng: np.random.Generator, ppu: float, skin: np.ndarray) -> np.ndarray:
    """One to three objects over parts of the face: bars, blobs, hands, sunglasses, masks, hats."""
    anchors = ["pupil_l", "pupil_r", "nose_base", "lip_mid", "jaw", "brow_l_top", "brow_r_top"]
    for _ in range(int(rng.integers(1, 3))):
        kind = rng.choice(["bar", "blob", "hand", "glasses", "mask", "hat"])
        col = _c(rng.uniform(0, 255, 3))
        a = P[anchors[int(rng.integers(len(anchors)))]]
        c = a[int(rng.integers(len(a)))] + rng.normal(0, 0.1 * ppu, 2)
        if kind == "bar":
            w, h = rng.uniform(0.25, 0.9) * ppu, rng.uniform(0.8, 2.0) * ppu
            box = cv2.boxPoints(((float(c[0]), float(c[1])), (float(w), float(h)), float(rng.uniform(0, 180))))
            _poly(img, box, col)
        elif kind == "blob":
            ax = (max(1, int(rng.uniform(0.2, 0.5) * ppu)), max(1, int(rng.uniform(0.15, 0.4) * ppu)))
            cv2.ellipse(img, (int(c[0]), int(c[1])), ax, float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA)
        elif kind == "hand":
            hc = _c(skin * rng.uniform(0.85, 1.1))
            ang = float(rng.uniform(0, 180))
            cv2.ellipse(img, (int(c[0]), int(c[1])), (int(0.32 * ppu), int(0.22 * ppu)), ang, 0, 360, hc, -1,
                        cv2.LINE_AA)
            d = np.array([np.cos(np.deg2rad(ang)), np.sin(np.deg2rad(ang))])
            n = np.array([-d[1], d[0]])
            for k in range(4):
                p0 = c + n * (k - 1.5) * 0.1 * ppu
                cv2.line(img, tuple(int(v) for v in p0), tuple(int(v) for v in p0 + d * 0.55 * ppu), hc,
                         max(1, int(0.08 * ppu)), cv2.LINE_AA)
        elif kind == "glasses":
            for s in ("pupil_l", "pupil_r"):
                p = P[s][0]
                cv2.ellipse(img, (int(p[0]), int(p[1])), (int(0.2 * ppu), int(0.14 * ppu)), 0, 0, 360,
                            _c(rng.uniform(0, 50, 3)), -1, cv2.LINE_AA)
            cv2.line(img, tuple(int(v) for v in P["pupil_l"][0]), tuple(int(v) for v in P["pupil_r"][0]),
                     (20, 20, 20), 2, cv2.LINE_AA)
        elif kind == "mask":
            jaw = P["jaw"]
            top = P["nose_base"].mean(0) - [0, rng.uniform(0, 0.15) * ppu]
            poly = np.concatenate([jaw[6:27], [jaw[26] * 0.6 + top * 0.4, top, jaw[6] * 0.6 + top * 0.4]])
            _poly(img, poly, col)
        else:  # hat brim across the brows
            b = np.concatenate([P["brow_l_top"], P["brow_r_top"]])
            y = b[:, 1].min() + rng.uniform(-0.1, 0.15) * ppu
            x0, x1 = b[:, 0].min() - 0.5 * ppu, b[:, 0].max() + 0.5 * ppu
            _poly(img, np.array([[x0, y], [x1, y], [x1 - 0.2 * ppu, y - 1.2 * ppu], [x0 + 0.2 * ppu, y - 1.2 * ppu]]), col)
    return img


def _finish(img: np.ndarray, flags: dict[str, bool], rng: np.random.Generator) -> np.ndarray:
    """Illumination, blur and sensor noise over the whole picture."""
    f = img.astype(np.float32)
    size = img.shape[0]
    if flags.get("illumination", False):
        ang = rng.uniform(0, 2 * np.pi)
        t = np.linspace(-1, 1, size, dtype=np.float32)
        ramp = np.cos(ang) * t[None, :] + np.sin(ang) * t[:, None]
        gain = rng.uniform(0.35, 0.8) + rng.uniform(0.4, 0.9) * (ramp + 1) / 2
        tint = rng.uniform(0.75, 1.25, 3).astype(np.float32)
        f = f * gain[..., None] * tint[None, None]
    else:
        f = f * rng.uniform(0.85, 1.15)
    if flags.get("blur", False):
        if rng.random() < 0.5:
            f = cv2.GaussianBlur(f, (0, 0), rng.uniform(1.5, 3.0))
        else:
            k = int(rng.integers(5, 12))
            kern = np.zeros((k, k), np.float32)
            kern[k // 2, :] = 1.0 / k
            rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
            kern = cv2.warpAffine(kern, rot, (k, k))
            f = cv2.filter2D(f, -1, kern / max(float(kern.sum()), 1e-6))
    elif rng.random() < 0.5:
        f = cv2.GaussianBlur(f, (0, 0), 0.6)
    f = f + rng.normal(0, rng.uniform(1, 5), f.shape).astype(np.float32)
    return np.clip(f, 0, 255).astype(np.uint8)
