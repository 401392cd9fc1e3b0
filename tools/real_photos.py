"""Real photographs that ship inside installed packages, each with its face box annotated once,
and the variants the detector tests and the README picture use.

    python tools/real_photos.py --out DIR      # writes every variant as PNG, with its box drawn

No atf import: tools/mtcnn_reference.py loads this file in the TensorFlow venv that makes the
reference fixture, so both sides build the same pixels.

The photos: scikit-image's astronaut (Eileen Collins, NASA portrait) and cameraman, matplotlib's
Grace Hopper (US Navy portrait). Each face box was annotated by hand on the original in MTCNN's
convention (brow to chin, cheek to cheek), checked against the boxes of the `mtcnn` package's
own detector. The variants, per photo: the original; grayscale; rotated by 15 degrees about the
image centre; downscaled so that the face is 40 px tall; pasted into a larger canvas (a noisy
grey ramp, 2x the photo, off centre). `portrait_1024x817` is the issue's failing shape: the
Grace Hopper portrait in grayscale resized to 1024 x 817 px (face about 340 x 420 px).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

Box = tuple[float, float, float, float]
# photo -> face box (left, top, right, bottom) in the original's pixels, annotated once
FACES: dict[str, Box] = {
    "astronaut": (181.0, 63.0, 266.0, 172.0),
    "grace_hopper": (178.0, 110.0, 353.0, 332.0),
    "camera": (197.0, 116.0, 256.0, 198.0),
}
VARIANTS = ("original", "gray", "rot15", "face40", "canvas")
NO_FACE = "coffee"          # scikit-image's cup of coffee: a real photo with no face


def photo(name: str) -> np.ndarray:
    """RGB uint8 photo `name` from the package that ships it."""
    if name == "grace_hopper":
        import matplotlib.cbook as cbook
        bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    from skimage import data
    image = getattr(data, name)()
    return np.ascontiguousarray(np.stack([image] * 3, axis=2) if image.ndim == 2 else image[..., :3])


def gray(image: np.ndarray) -> np.ndarray:
    """The grayscale photo as three equal channels (what a grayscale JPEG decodes to)."""
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def _rotate(image: np.ndarray, box: Box, degrees: float) -> tuple[np.ndarray, Box]:
    """Rotated about the image centre (corners mid-grey); the box keeps its size, about its moved centre."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    out = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(128, 128, 128))
    cx, cy = m @ np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 1.0])
    hw, hh = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
    return out, (cx - hw, cy - hh, cx + hw, cy + hh)


def _resize(image: np.ndarray, box: Box, fx: float, fy: float) -> tuple[np.ndarray, Box]:
    size = (round(image.shape[1] * fx), round(image.shape[0] * fy))
    interp = cv2.INTER_AREA if fx * fy < 1 else cv2.INTER_LINEAR
    out = cv2.resize(image, size, interpolation=interp)
    sx, sy = size[0] / image.shape[1], size[1] / image.shape[0]
    return out, (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def _canvas(image: np.ndarray, box: Box, seed: int = 0) -> tuple[np.ndarray, Box]:
    """The photo pasted at (w/3, h/4) into a canvas twice its size: a noisy grey ramp."""
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    ramp = np.linspace(60, 170, 2 * w, dtype=np.float32)[None, :, None]
    out = np.clip(ramp + rng.normal(0, 8, (2 * h, 2 * w, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    x0, y0 = w // 3, h // 4
    out[y0:y0 + h, x0:x0 + w] = image
    return out, (box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0)


def variant(name: str, kind: str) -> tuple[np.ndarray, Box]:
    """(RGB uint8 image, face box) of photo `name` as `kind` (one of VARIANTS, or portrait_1024x817)."""
    image, box = photo(name), FACES[name]
    if kind == "original":
        return image, box
    if kind == "gray":
        return gray(image), box
    if kind == "rot15":
        return _rotate(image, box, 15.0)
    if kind == "face40":
        f = 40.0 / (box[3] - box[1])
        return _resize(image, box, f, f)
    if kind == "canvas":
        return _canvas(image, box)
    if kind == "portrait_1024x817":
        return _resize(gray(image), box, 1024 / image.shape[1], 817 / image.shape[0])
    raise ValueError(f"unknown variant {kind!r}; expected one of {', '.join(VARIANTS)} or portrait_1024x817")


def cases() -> list[tuple[str, str]]:
    """Every (photo, variant) the detector tests run: 3 photos x 5 variants, and the issue's portrait."""
    return [(n, v) for n in FACES for v in VARIANTS] + [("grace_hopper", "portrait_1024x817")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    for name, kind in cases():
        image, box = variant(name, kind)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        cv2.rectangle(bgr, (round(box[0]), round(box[1])), (round(box[2]), round(box[3])), (0, 0, 255), 1)
        cv2.imwrite(str(a.out / f"{name}_{kind}.png"), bgr)
        print(f"{name}_{kind}: {image.shape[1]}x{image.shape[0]}, face box {tuple(round(v) for v in box)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
