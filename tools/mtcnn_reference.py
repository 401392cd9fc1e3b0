"""Reference outputs of the `mtcnn` package's own MTCNN (TensorFlow) for the parity tests of
atf/facedetect.py: tests/data/mtcnn_reference.npz.

    python3.11 -m venv /tmp/tfref
    /tmp/tfref/bin/pip install tensorflow-cpu==2.21.0 mtcnn==1.0.0 "opencv-python-headless<5" \
        scikit-image matplotlib
    /tmp/tfref/bin/python tools/mtcnn_reference.py --out tests/data/mtcnn_reference.npz

Run once, by hand: TensorFlow is never a dependency of atf. The package is only called through
its public classes (MTCNN, its stage objects and their Keras models, the pyramid helpers of
mtcnn.utils); no code of it is copied. What is stored, all on the photos of tools/real_photos.py:
  net/*   the three networks' outputs for fixed uint8 inputs (a 141 x 121 crop of a face for P-Net,
          odd sizes so that pooling edges count; 24 px and 48 px crops of faces and of clutter)
  pyr/*   P-Net over the reference's image pyramid of that crop: each level's size, face
          probability map and candidate boxes (x1, y1, x2, y2, score) in image pixels
  det/*   the detector's final faces (box, score, five points) on every test photo variant
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np

TOOLS = Path(__file__).resolve().parent
PYR_CROP = (slice(0, 255), slice(96, 347))      # astronaut rows, cols: the pyramid's image (odd sizes)
NET_CROP = (slice(40, 181), slice(160, 281))     # astronaut rows, cols: P-Net's input (her face)
# (photo, box) crops fed to R-Net and O-Net: three faces, three of clutter
NET_CROPS = [("astronaut", (181, 63, 266, 172)), ("grace_hopper", (178, 110, 353, 332)),
             ("camera", (197, 116, 256, 198)), ("astronaut", (140, 200, 180, 240)),
             ("grace_hopper", (20, 400, 120, 500)), ("camera", (300, 300, 400, 400))]


def _photos():
    spec = importlib.util.spec_from_file_location("real_photos", TOOLS / "real_photos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _crops(rp, size: int) -> np.ndarray:
    return np.stack([cv2.resize(rp.photo(n)[b[1]:b[3], b[0]:b[2]], (size, size), interpolation=cv2.INTER_AREA)
                     for n, b in NET_CROPS])


def _norm(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32) - 127.5) / 128.0


def networks(det, rp, out: dict) -> None:
    pnet, rnet, onet = (s._model for s in det.stages)
    p_in = rp.photo("astronaut")[NET_CROP]
    reg, cls = pnet(_norm(p_in)[None])
    out.update({"net/p_reg": reg.numpy()[0], "net/p_prob": cls.numpy()[0, ..., 1]})
    for name, size, model in (("r", 24, rnet), ("o", 48, onet)):
        x = _crops(rp, size)
        outs = [t.numpy() for t in model(_norm(x))]
        out[f"net/{name}_in"] = x
        out[f"net/{name}_reg"], out[f"net/{name}_prob"] = outs[0], outs[-1][:, 1]
        if name == "o":
            out["net/o_points"] = outs[1]


def pyramid(det, rp, out: dict) -> None:
    from mtcnn.utils.bboxes import generate_bounding_box, upscale_bboxes
    from mtcnn.utils.images import apply_scales, build_scale_pyramid
    image = _norm(rp.photo("astronaut")[PYR_CROP])[None]
    scales = build_scale_pyramid(image.shape[2], image.shape[1], min_face_size=20, scale_factor=0.709)
    levels, scales = apply_scales(image, [scales])
    out["pyr/scales"] = np.asarray(scales, np.float64)
    for i, level in enumerate(levels):
        reg, cls = det.stages[0]._model(level)
        boxes = upscale_bboxes(generate_bounding_box(reg, cls, 0.6), np.asarray([scales[i]]))
        out[f"pyr/{i}/size"] = np.asarray(level.shape[1:3])
        out[f"pyr/{i}/prob"] = cls.numpy()[0, ..., 1]
        out[f"pyr/{i}/boxes"] = boxes[:, 1:6]


def detections(det, rp, out: dict) -> None:
    for name, kind in rp.cases() + [(rp.NO_FACE, "original")]:
        image = rp.photo(name) if name == rp.NO_FACE else rp.variant(name, kind)[0]
        faces = det.detect_faces(image, box_format="xyxy", fit_to_image=False, output_type="numpy")
        faces = np.asarray(faces, np.float64).reshape(-1, 16)
        out[f"det/{name}/{kind}"] = faces[:, 1:]      # x1, y1, x2, y2, score, 5 x, 5 y


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="the .npz to write")
    a = p.parse_args(argv)
    from importlib.metadata import version

    import tensorflow as tf
    from mtcnn import MTCNN
    rp, det, out = _photos(), MTCNN(), {}
    networks(det, rp, out)
    pyramid(det, rp, out)
    detections(det, rp, out)
    about = {"made_by": "tools/mtcnn_reference.py", "mtcnn": version("mtcnn"), "tensorflow": tf.__version__,
             "opencv": cv2.__version__, "numpy": np.__version__}
    out["about"] = np.asarray(json.dumps(about))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(a.out, **out)
    print(f"{a.out}: {len(out)} arrays, {a.out.stat().st_size / 1024:.0f} KiB; {about}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
