"""`atf-predict MODEL IMAGE...`: landmarks of every face in photos, with an exported atf model.

Writes DIR/landmarks.csv (the annotation layout) or DIR/landmarks.json, and DIR/<image>_landmarks.png
with each face's box and landmarks drawn.
"""

from __future__ import annotations

import argparse
import sys

from atf.cli.common import make_parser

__all__ = ["main", "build_parser", "parser"]

EXAMPLES = """
  atf-predict runs/demo_atf/model/wflw.pt2 group.jpg              # every face MTCNN finds
  atf-predict model/wflw.onnx a.jpg b.jpg --out pred --format json --flip
  atf-predict model/wflw.pt2 photo.jpg --boxes boxes.csv          # your own face boxes
  atf-predict old_export.pt crop.png --detector whole             # photo already cropped to a face
  atf-predict model/wflw.pt2 *.jpg --require-face || echo "some photo had no face"

exit status:
  0  every image was read and processed; an image with no face is named on stderr, not an error
  1  only with --require-face: some image had no face (the others are still written)
  2  bad input: a model, boxes CSV or image that cannot be read, a bad option, no detector
     available (readable images are still written; each bad one is named on stderr)
"""
DETECTORS = ("auto", "mtcnn", "haar", "yunet", "whole")   # atf.predict.DETECTORS (not imported: --help stays fast)


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("atf-predict", "Landmarks of every face in photos, with an exported atf model.", EXAMPLES)
    p.add_argument("model", help="exported model: .pt2 (torch.export, what training writes), .onnx (needs the "
                   "onnx extra) or an older TorchScript .pt. It is loaded only from this path, never found or "
                   "downloaded; a .pt file is a program: give only models you exported or trust")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--boxes", default=None, metavar="CSV",
                   help="face boxes instead of a detector: columns image, left, top, right, bottom; one row per face")
    p.add_argument("--out", default="predictions", metavar="DIR", help="output folder")
    p.add_argument("--format", choices=("csv", "json"), default="csv", dest="fmt", help="landmarks file format")
    p.add_argument("--flip", action="store_true", help="average with the mirrored image's prediction")
    p.add_argument("--detector", choices=DETECTORS, default="auto",
                   help="face detector when no --boxes: auto = mtcnn (weights from the mtcnn package), else "
                        "OpenCV's Haar cascade, else yunet with --detector-model; whole = the image is the face")
    p.add_argument("--detector-model", default=None, metavar="ONNX", help="YuNet ONNX file for --detector yunet")
    p.add_argument("--require-face", action="store_true",
                   help="exit 1 when some image has no face (default: name it on stderr and exit 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    return p


parser = build_parser   # the name older callers used


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every image was processed, 1 with --require-face and a faceless image, 2 for bad input."""
    a = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from atf.predict import DetectorUnavailable, NoFaceError, run
    unreadable: list[str] = []  # each bad or faceless image is named; the others are written
    faceless: list[str] = []
    try:
        faces = run(a.model, a.images, boxes=a.boxes, out=a.out, fmt=a.fmt, flip=a.flip, detector=a.detector,
                    detector_model=a.detector_model, device=a.device, skipped=unreadable, faceless=faceless)
    except (FileNotFoundError, ValueError, NoFaceError, DetectorUnavailable) as e:
        print(f"atf-predict: {e}", file=sys.stderr)
        return 2
    for line in unreadable + faceless:
        print(f"atf-predict: {line}", file=sys.stderr)
    done = len(a.images) - len(unreadable)
    print(f"atf-predict: {len(faces)} face(s) from {done} image(s) -> {a.out}"
          + (f"; {len(faceless)} without a face" if faceless else "")
          + (f"; {len(unreadable)} unreadable" if unreadable else ""))
    if unreadable:
        return 2
    return 1 if faceless and a.require_face else 0


if __name__ == "__main__":
    raise SystemExit(main())
