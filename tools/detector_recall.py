"""Recall of the face detector on many variants of the packaged photos, and boxes off the faces.

    python tools/detector_recall.py                    # atf.facedetect (the detector of atf-predict)
    /tmp/tfref/bin/python tools/detector_recall.py --reference   # the mtcnn package's own (TensorFlow)

The variants (tools/real_photos.py's photos and annotated boxes): colour and grayscale, rotated by
-15..15 degrees in steps of 5, resized so that the face is 40, 60, 90, 140, 220, 320 or 420 px tall
(none over 1400 px), each also pasted into a canvas twice its size (those up to 800 px), and each
grayscale photo resized to 1024 x 817. A face counts as found when a box scoring >= 0.9 (atf-predict's
default) has IoU >= 0.5 with its annotated box; a box scoring >= 0.9 with IoU < 0.3 is off the face.
The photos without a face are scikit-image's and scikit-learn's other photographs. Prints one line.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import cv2

MIN_SCORE = 0.9
NO_FACES = ("coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry", "coins",
            "brick", "page", "text")


def _real_photos():
    spec = importlib.util.spec_from_file_location("real_photos", Path(__file__).resolve().parent / "real_photos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variants(rp):
    """Yield (label, RGB image, annotated face box)."""
    for name, box in rp.FACES.items():
        for colour in ("rgb", "gray"):
            image = rp.photo(name) if colour == "rgb" else rp.gray(rp.photo(name))
            for degrees in range(-15, 16, 5):
                rotated, rbox = rp._rotate(image, box, float(degrees)) if degrees else (image, box)
                for face in (40, 60, 90, 140, 220, 320, 420):
                    f = face / (box[3] - box[1])
                    if max(image.shape[:2]) * f > 1400:
                        continue
                    scaled, sbox = rp._resize(rotated, rbox, f, f)
                    yield f"{name}_{colour}_r{degrees}_f{face}", scaled, sbox
                    if max(scaled.shape[:2]) <= 800:
                        yield f"{name}_{colour}_r{degrees}_f{face}_canvas", *rp._canvas(scaled, sbox)
        src = rp.photo(name)
        yield f"{name}_gray_1024x817", *rp._resize(rp.gray(src), box, 1024 / src.shape[1], 817 / src.shape[0])


def no_faces(rp):
    from sklearn import datasets
    for name in NO_FACES:
        yield name, rp.photo(name)
    folder = os.path.join(os.path.dirname(datasets.__file__), "images")
    for name in ("china.jpg", "flower.jpg"):
        yield name, cv2.cvtColor(cv2.imread(os.path.join(folder, name)), cv2.COLOR_BGR2RGB)


def _detector(reference: bool):
    """image -> [(box, score)] of the chosen detector."""
    if reference:
        from mtcnn import MTCNN
        det = MTCNN()
        return lambda im: [(f["box"], float(f["confidence"]))
                           for f in det.detect_faces(im, box_format="xyxy", fit_to_image=False)]
    from atf.facedetect import detect_faces
    return lambda im: [(f.box, f.score) for f in detect_faces(im)]


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", action="store_true", help="the mtcnn package's TensorFlow detector instead")
    a = p.parse_args(argv)
    rp, detect, start = _real_photos(), _detector(a.reference), time.time()
    found, total, off, missed, scores = 0, 0, [], [], []
    for label, image, box in variants(rp):
        total += 1
        ious = [(_iou(b, box), s) for b, s in detect(image) if s >= MIN_SCORE]
        hits = [s for v, s in ious if v >= 0.5]
        found += bool(hits)
        scores += hits[:1]
        missed += [] if hits else [label]
        off += [f"{label} ({s:.2f})" for v, s in ious if v < 0.3]
    empty = {name: sum(s >= MIN_SCORE for _, s in detect(image)) for name, image in no_faces(rp)}
    print(f"{'mtcnn package (TensorFlow)' if a.reference else 'atf.facedetect'}: {found}/{total} faces found "
          f"(lowest score {min(scores):.3f}), {len(off)} box(es) off the faces {off}, "
          f"{sum(empty.values())} box(es) on {len(empty)} photos without a face; missed {missed}; "
          f"{time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
