"""A group photo for atf-predict, composed from the real photographs that ship inside packages,
and (with --model) the README's picture: every face found, landmarks drawn, each checked.

    python tools/group_photo.py --out docs/img/group.jpg
    python tools/group_photo.py --out docs/img/group.jpg --model <demo run>/model/wflw.pt2 \
        --picture docs/img/group_predict.png

No photograph of several people ships in a registry package we can use, so the picture is
composed, and says so: tiles of tools/real_photos.py's variants (scikit-image's astronaut and
cameraman, matplotlib's Grace Hopper; in colour, in grayscale, rotated by 15 degrees, with a
40 px face) side by side on one canvas. `compose()` also returns each face's annotated box where
it ended up. With --model, atf-predict's own `run` marks the canvas; the script then checks, on the
canvas and on each photo variant of the detector tests, that every annotated face got exactly one
detection (IoU >= 0.5 with the annotated box) and that each face's landmarks lie inside the box the
detector found, grown by a tenth of its side (MTCNN's box runs brow to chin, a 98-point contour out
to the ears), prints one line per face and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

# (photo, variant, placed height: None keeps the variant's own size)
TILES = (("astronaut", "original", 330), ("grace_hopper", "gray", 330), ("camera", "rot15", 300),
         ("astronaut", "face40", None), ("grace_hopper", "original", 200), ("camera", "original", 240))
GROW = 0.1     # landmarks may lie this far (in box sides) outside the annotated face box


def _real_photos():
    spec = importlib.util.spec_from_file_location("real_photos", Path(__file__).resolve().parent / "real_photos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose(height: int = 360, seed: int = 0) -> tuple[np.ndarray, list[tuple[str, tuple[float, ...]]]]:
    """(RGB canvas, [(tile name, face box (left, top, right, bottom))]) of the tiles side by side."""
    rp = _real_photos()
    tiles = []
    for name, kind, placed in TILES:
        image, box = rp.variant(name, kind)
        f = placed / image.shape[0] if placed else 1.0
        if f != 1.0:
            image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        tiles.append((f"{name}_{kind}", image, tuple(v * f for v in box)))
    gap = 16
    width = sum(im.shape[1] for _, im, _ in tiles) + gap * (len(tiles) + 1)
    rng = np.random.default_rng(seed)
    ramp = np.linspace(70, 150, width, dtype=np.float32)[None, :, None]
    canvas = np.clip(ramp + rng.normal(0, 6, (height, width, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    x, faces = gap, []
    for label, image, box in tiles:
        y = (height - image.shape[0]) // 2
        canvas[y:y + image.shape[0], x:x + image.shape[1]] = image
        faces.append((label, (box[0] + x, box[1] + y, box[2] + x, box[3] + y)))
        x += image.shape[1] + gap
    return canvas, faces


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih)


def check(boxes, landmarks, annotated) -> list[str]:
    """One line per annotated face: its detection (the detector's box with IoU >= 0.5) and how many
    of its landmarks lie outside that face box grown by GROW; lines of failures start with 'FAIL'."""
    lines = []
    for label, box in annotated:
        mine = [i for i, b in enumerate(boxes) if _iou(b, box) >= 0.5]
        if len(mine) != 1:
            lines.append(f"FAIL {label}: {len(mine)} detections on the face")
            continue
        found = boxes[mine[0]]
        pad = GROW * (found[2] - found[0])
        lo, hi = np.array(found[:2]) - pad, np.array(found[2:]) + pad
        pts = landmarks[mine[0]]
        outside = int(np.count_nonzero(~np.all((pts >= lo) & (pts <= hi), axis=1)))
        lines.append(f"{'FAIL ' if outside else ''}{label}: found (IoU {_iou(boxes[mine[0]], box):.2f}), "
                     f"{outside} of {len(pts)} landmarks outside the face box")
    return lines


def check_cases(model: Path, tmp: Path) -> list[str]:
    """check() on every photo variant of the detector tests (tools/real_photos.py), one at a time."""
    from atf.predict import detect_faces, run
    rp, lines = _real_photos(), []
    for name, kind in rp.cases():
        image, box = rp.variant(name, kind)
        path = tmp / f"{name}_{kind}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        faces = run(model, [str(path)], out=tmp / "pred", flip=True)
        boxes, _ = detect_faces(image, str(path), "mtcnn")
        lines += check(boxes, [f.landmarks for f in faces], [(f"{name} {kind}", box)])
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="composed photo to write (.jpg or .png)")
    p.add_argument("--model", type=Path, default=None, help="exported model: predict, check, draw")
    p.add_argument("--picture", type=Path, default=None, help="with --model: where the marked picture goes")
    a = p.parse_args(argv)
    canvas, annotated = compose()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(a.out), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    print(f"{a.out}: {canvas.shape[1]}x{canvas.shape[0]}, faces " +
          ", ".join(f"{n} {tuple(round(v) for v in b)}" for n, b in annotated))
    if a.model is None:
        return 0
    from atf.predict import detect_faces, run
    with tempfile.TemporaryDirectory() as tmp:
        faces = run(a.model, [str(a.out)], out=tmp, flip=True)
        drawn = Path(tmp) / f"{a.out.stem}_landmarks.png"
        if a.picture:
            a.picture.parent.mkdir(parents=True, exist_ok=True)
            a.picture.write_bytes(drawn.read_bytes())
    # the detector is deterministic: run() got these boxes, in this order, before calibrating them
    boxes, _ = detect_faces(cv2.cvtColor(cv2.imread(str(a.out)), cv2.COLOR_BGR2RGB), str(a.out), "mtcnn")
    lines = check(boxes, [f.landmarks for f in faces], annotated)
    with tempfile.TemporaryDirectory() as tmp:
        lines += check_cases(a.model, Path(tmp))
    print("\n".join(lines) + f"\n{len(faces)} face(s) detected, {len(annotated)} annotated")
    return 1 if any(line.startswith("FAIL") for line in lines) or len(faces) != len(annotated) else 0


if __name__ == "__main__":
    sys.exit(main())
