"""A group photo for atf-predict, composed from faces that ship inside installed packages.

    python tools/group_photo.py --out docs/img/group.jpg [--synth-root data/synth]
    atf-predict runs/demo_atf/model/wflw.pt2 docs/img/group.jpg --out pred   # then look at pred/*.png

No photograph of several people ships in a registry package we can use, so the picture is
composed, and says so: scikit-image's astronaut (Eileen Collins) and cameraman, matplotlib's
Grace Hopper, and, with --synth-root, SynthFace faces, side by side on one canvas at different
sizes. `compose()` also returns where each face's centre ended up (hand-placed for the real
photographs, the annotation's for SynthFace), which the detector test checks against.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

# (loader, crop rows, crop cols, face centre (x, y) in the source image, placed height)
REAL = {
    "astronaut": ((0, 330), (60, 400), (224.0, 117.0), 300),
    "grace_hopper": ((40, 470), (60, 470), (267.0, 223.0), 340),
    "camera": ((0, 300), (150, 420), (226.0, 157.0), 260),
}


def _real(name: str) -> np.ndarray:
    """RGB uint8 image `name` from the package that ships it."""
    if name == "grace_hopper":
        import matplotlib.cbook as cbook
        bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    from skimage import data
    image = getattr(data, name)()
    return np.ascontiguousarray(np.stack([image] * 3, axis=2) if image.ndim == 2 else image)


def _synth_faces(root: Path, count: int) -> list[tuple[np.ndarray, tuple[float, float]]]:
    """The first `count` SynthFace 300W-like test faces (mostly frontal) with their annotated centres."""
    from atf.readers import read_csv
    aset = read_csv(root / "300w" / "face_landmarks_300w_test.csv")
    out = []
    for i in range(len(aset.images)):
        bgr = cv2.imread(str(root / "300w" / "images" / aset.images[i]))
        if bgr is not None:
            out.append((cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (float(aset.centers[i][0]), float(aset.centers[i][1]))))
        if len(out) == count:
            break
    return out


def compose(synth_root: Path | None = None, synth_count: int = 2, height: int = 360,
            seed: int = 0) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """(RGB canvas, [(face name, centre x, centre y)]) of the faces side by side."""
    tiles: list[tuple[str, np.ndarray, tuple[float, float]]] = []
    for name, (rows, cols, (cx, cy), placed) in REAL.items():
        crop = _real(name)[rows[0]:rows[1], cols[0]:cols[1]]
        tiles.append((name, crop, (cx - cols[0], cy - rows[0])))
    if synth_root is not None:
        for i, (image, centre) in enumerate(_synth_faces(synth_root, synth_count)):
            tiles.append((f"synthface_{i}", image, centre))
    gap = 16
    scaled = []
    for i, (name, image, (cx, cy)) in enumerate(tiles):
        target = REAL[name][3] if name in REAL else int(height * (0.55 + 0.2 * (i % 2)))
        f = target / image.shape[0]
        scaled.append((name, cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA), (cx * f, cy * f)))
    width = sum(im.shape[1] for _, im, _ in scaled) + gap * (len(scaled) + 1)
    rng = np.random.default_rng(seed)
    ramp = np.linspace(70, 150, width, dtype=np.float32)[None, :, None]
    canvas = np.clip(ramp + rng.normal(0, 6, (height, width, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    x, centres = gap, []
    for name, image, (cx, cy) in scaled:
        y = (height - image.shape[0]) // 2
        canvas[y:y + image.shape[0], x:x + image.shape[1]] = image
        centres.append((name, x + cx, y + cy))
        x += image.shape[1] + gap
    return canvas, centres


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="image to write (.jpg or .png)")
    p.add_argument("--synth-root", type=Path, default=None, help="SynthFace data root: add two of its faces")
    a = p.parse_args(argv)
    canvas, centres = compose(a.synth_root)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(a.out), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    print(f"{a.out}: {canvas.shape[1]}x{canvas.shape[0]}, faces at " +
          ", ".join(f"{n} ({x:.0f}, {y:.0f})" for n, x, y in centres))
    return 0


if __name__ == "__main__":
    sys.exit(main())
