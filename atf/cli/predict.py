"""`atf-predict MODEL IMAGE... [--boxes BOXES.csv] [--out DIR] [--format csv|json] [--flip]`.

Landmarks on photos with an exported model (see atf.predict); writes DIR/landmarks.csv (annotation
layout) or DIR/landmarks.json, and DIR/<image>_landmarks.png with the landmarks drawn.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atf-predict", description="Landmarks on photos with an exported atf model.")
    p.add_argument("model", help="exported TorchScript model (atf.export). A TorchScript file is a program: it is "
                   "loaded only from this path, never found or downloaded; give models you exported or trust")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--boxes", help="CSV with columns image, left, top, right, bottom (one row per face)")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument("--format", choices=("csv", "json"), default="csv", dest="fmt")
    p.add_argument("--flip", action="store_true", help="average with the mirrored image's prediction")
    p.add_argument("--detector", choices=("auto", "haar", "yunet", "whole"), default="auto",
                   help="face detector when no --boxes: auto = haar if this OpenCV ships it, else yunet "
                        "when --detector-model is given; whole = the whole image is the face")
    p.add_argument("--detector-model", help="ONNX model file for --detector yunet")
    p.add_argument("--device", default="cpu")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(sys.argv[1:] if argv is None else argv)
    from atf.predict import DetectorUnavailable, NoFaceError, run
    skipped: list[str] = []  # an image without a face (or unreadable) is named; the others are written
    try:
        faces = run(a.model, a.images, boxes=a.boxes, out=a.out, fmt=a.fmt, flip=a.flip, detector=a.detector,
                    detector_model=a.detector_model, device=a.device, skipped=skipped)
    except (FileNotFoundError, ValueError, NoFaceError, DetectorUnavailable) as e:
        print(f"atf-predict: {e}", file=sys.stderr)
        return 2
    for line in skipped:
        print(f"atf-predict: skipped: {line}", file=sys.stderr)
    if len(skipped) == len(a.images):
        return 2
    print(f"atf-predict: {len(faces)} face(s) from {len(a.images) - len(skipped)} image(s) -> {a.out}"
          + (f"; {len(skipped)} image(s) skipped" if skipped else ""))
    return 1 if skipped else 0


if __name__ == "__main__":
    raise SystemExit(main())
