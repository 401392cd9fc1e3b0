"""Landmarks on arbitrary photos with an exported model (`atf-predict`): every face of every photo.

The crop is the training crop. A model trained with the HRNet centre/scale crop (SynthFace and
the HRNet CSVs: a square of side scale*200*margin about the annotated centre) gets, for each
detected face, the box its annotation would have had: the detector's box moved and resized by the
per-dataset calibration `DETECTOR_CALIBRATION` (fitted by tools/calibrate_detector.py: the
detector's boxes are tighter than the annotation boxes and sit higher on the face). A model
trained with the plain box crop gets the detector's box. Predictions are mapped back to original
pixels with the same inverse affine the evaluator uses.

Face boxes come from a CSV (columns image, left, top, right, bottom; one row per face) or from a
detector, which reports every face it finds:
  mtcnn  the default: MTCNN (atf.facedetect) with the weights the `mtcnn` package ships in its wheel
  haar   OpenCV's Haar cascade, the fallback where MTCNN's package is absent (OpenCV 4.x wheels only)
  yunet  cv2.FaceDetectorYN with a YuNet ONNX file the user supplies (--detector-model)
  whole  the whole image is the face box (photos already cropped to one face)
"auto" takes the first of mtcnn, haar, yunet that can run here and says clearly when none can.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch

from atf import heatmaps, transforms
from atf.data import flip_average, load_image

__all__ = ["Face", "NoFaceError", "DetectorUnavailable", "read_boxes", "haar_available", "detect_face",
           "detect_faces", "training_box", "predict_face", "flip_perm_of", "draw", "write_csv", "write_json",
           "run", "Detector", "DETECTORS", "DETECTOR_CALIBRATION"]

Detector = Literal["auto", "mtcnn", "haar", "yunet", "whole"]
DETECTORS = ("auto", "mtcnn", "haar", "yunet", "whole")
HAAR_FILE = "haarcascade_frontalface_default.xml"
MIN_SCORE = 0.9    # MTCNN face probability kept (real faces score 0.976-1.0 in tools/detector_recall.py; clutter 0.8-0.98)
Box = tuple[float, float, float, float]
# MTCNN box -> the annotation's HRNet centre and side, per dataset, in units of the box's side:
# (centre dx, centre dy, side ratio). Fitted by `tools/calibrate_detector.py --data-root data/synth`
# on SynthFace at scale 0.02, seed 0 (WFLW 166, 300W 97, COFW 27, AFLW 185 detected faces; median
# absolute deviations 0.01-0.07). Other datasets use the mean of the four.
DETECTOR_CALIBRATION: dict[str, tuple[float, float, float]] = {
    "wflw": (-0.009, 0.130, 0.839),
    "300w": (-0.005, 0.118, 0.784),
    "cofw": (-0.014, 0.096, 0.735),
    "aflw": (-0.025, 0.071, 1.006),
}


class NoFaceError(RuntimeError):
    """The detector found no face in an image."""


class DetectorUnavailable(RuntimeError):
    """The requested face detector cannot run in this OpenCV build or without its model file."""


@dataclass(frozen=True)
class Face:
    """One predicted face: landmarks [K, 2] in original pixels, the box used, and where it came from."""
    image: str
    box: tuple[float, float, float, float]   # left, top, right, bottom
    landmarks: np.ndarray
    box_source: str                          # "boxes.csv row 3", "haar", "yunet", "whole"


# -- face boxes -------------------------------------------------------------------------------------

def read_boxes(path: str | Path) -> dict[str, list[tuple[tuple[float, float, float, float], str]]]:
    """image name -> [(box, "file row r"), ...]; every bad row raises naming the file and row."""
    path = Path(path)
    try:
        handle = open(path, newline="")
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read boxes CSV ({e.strerror})") from None
    out: dict[str, list[tuple[tuple[float, float, float, float], str]]] = {}
    with handle:
        reader = csv.DictReader(handle)
        need = ["image", "left", "top", "right", "bottom"]
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: boxes CSV lacks column {missing[0]!r} (needs {', '.join(need)})")
        for r, row in enumerate(reader, start=1):
            where = f"{path} row {r}"
            try:
                box = tuple(float(row[c]) for c in need[1:])
            except (TypeError, ValueError):
                raise ValueError(f"{where}: left, top, right, bottom must be numbers") from None
            if not (np.all(np.isfinite(box)) and box[2] > box[0] and box[3] > box[1]):
                raise ValueError(f"{where}: box {box} must have right > left and bottom > top")
            out.setdefault(row["image"], []).append((box, where))  # type: ignore[arg-type]
    return out


def haar_available() -> bool:
    """True when this OpenCV build has CascadeClassifier and ships the frontal-face cascade."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
    return hasattr(cv2, "CascadeClassifier") and os.path.isfile(os.path.join(folder, HAAR_FILE))


def _largest(boxes: list[Box]) -> Box:
    return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))


def _choose(detector: str, name: str, model_path: str | Path | None) -> str:
    """The detector "auto" means here: MTCNN, else Haar, else YuNet with a model file."""
    if detector != "auto":
        return detector
    from atf.facedetect import mtcnn_available
    if mtcnn_available():
        return "mtcnn"
    if haar_available():
        return "haar"
    if model_path:
        return "yunet"
    raise DetectorUnavailable(
        f"no face detector for {name}: the mtcnn package (its weights) is not installed and OpenCV "
        f"{cv2.__version__} ships no Haar cascades; pip install mtcnn, or pass --boxes CSV, --detector yunet "
        "--detector-model FILE.onnx, or --detector whole")


def detect_faces(image_rgb: np.ndarray, name: str, detector: Detector = "auto",
                 model_path: str | Path | None = None, min_score: float = MIN_SCORE) -> tuple[list[Box], str]:
    """Every face's box (left, top, right, bottom) in the detector's own convention, and the detector
    that found them; NoFaceError when there is none."""
    detector = _choose(detector, name, model_path)   # type: ignore[assignment]
    h, w = image_rgb.shape[:2]
    if detector == "whole":
        return [(0.0, 0.0, float(w), float(h))], "whole"
    found: list[Box] = []
    if detector == "mtcnn":
        from atf.facedetect import MtcnnUnavailable
        from atf.facedetect import detect_faces as mtcnn_faces
        try:
            found = [f.box for f in mtcnn_faces(image_rgb) if f.score >= min_score]
        except MtcnnUnavailable as e:
            raise DetectorUnavailable(str(e)) from None
    elif detector == "haar":
        if not haar_available():
            raise DetectorUnavailable(f"Haar cascade detector not available in OpenCV {cv2.__version__}")
        gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
        cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, HAAR_FILE))
        rects = cascade.detectMultiScale(cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=5,
                                         minSize=(max(24, min(h, w) // 20),) * 2)
        found = [(float(x), float(y), float(x + bw), float(y + bh)) for x, y, bw, bh in np.reshape(rects, (-1, 4))]
    elif detector == "yunet":
        if not model_path or not Path(model_path).is_file():
            raise DetectorUnavailable(f"yunet detector needs its ONNX model file, got {model_path!r}")
        net = cv2.FaceDetectorYN.create(str(model_path), "", (w, h))
        _, faces = net.detect(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
        found = [(float(f[0]), float(f[1]), float(f[0] + f[2]), float(f[1] + f[3]))
                 for f in (faces if faces is not None else [])]
    else:
        raise ValueError(f"unknown detector {detector!r}; expected one of {', '.join(DETECTORS)}")
    if not found:
        score = f", score >= {min_score}" if detector == "mtcnn" else ""
        raise NoFaceError(f"no face found in {name} (detector {detector}{score}); pass its box with --boxes")
    return found, detector


def detect_face(image_rgb: np.ndarray, name: str, detector: Detector = "auto",
                model_path: str | Path | None = None) -> tuple[Box, str]:
    """The largest face's box and the detector that found it (for one-face photos)."""
    found, used = detect_faces(image_rgb, name, detector, model_path)
    return _largest(found), used


def training_box(box: Box, meta: dict[str, Any], detector: str) -> Box:
    """The box whose crop (`max side x crop_margin` about its centre) is the crop the model was
    trained with: for a centre/scale model and an MTCNN box, the calibrated annotation box."""
    if detector != "mtcnn" or meta.get("crop") != "center_scale":
        return box
    table = DETECTOR_CALIBRATION
    dx, dy, k = table.get(str(meta.get("dataset")), tuple(np.mean(list(table.values()), axis=0)))
    left, top, right, bottom = box
    side = max(right - left, bottom - top)
    cx, cy = (left + right) / 2 + dx * side, (top + bottom) / 2 + dy * side
    half = k * side / 2
    return (cx - half, cy - half, cx + half, cy + half)


# -- prediction -------------------------------------------------------------------------------------

def _mean_std(meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(meta.get("mean", transforms.IMAGENET_MEAN), dtype=np.float32)
    std = np.asarray(meta.get("std", transforms.IMAGENET_STD), dtype=np.float32)
    return mean, std


def flip_perm_of(meta: dict[str, Any]) -> np.ndarray:
    """The model's flip permutation: from its metadata, else from its scheme's registry entry."""
    if "flip_perm" in meta:
        return np.asarray(meta["flip_perm"], dtype=np.int64)
    from atf.schemes import get_scheme
    return np.asarray(get_scheme(meta["scheme"]).flip_perm, dtype=np.int64)


@torch.no_grad()
def predict_face(module: torch.nn.Module, meta: dict[str, Any], image_rgb: np.ndarray,
                 box: tuple[float, float, float, float], flip: bool = False,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """Landmarks [K, 2] in original pixels for the face in `box` of an RGB uint8 image."""
    size = int(meta["input_size"])
    cx, cy, side = transforms.crop_box("box", None, None, np.asarray(box, dtype=np.float64),
                                       float(meta["crop_margin"]))
    m = transforms.build_affine(cx, cy, side, size, transforms.AugmentParams.identity())
    crop = transforms.warp(image_rgb, m, size).astype(np.float32) / 255.0
    mean, std = _mean_std(meta)
    x = torch.from_numpy(np.ascontiguousarray(((crop - mean) / std).transpose(2, 0, 1)))[None].to(device)
    kind = meta["kind"]

    def fn(t: torch.Tensor) -> torch.Tensor:
        y = module(t)
        return y if kind == "heatmap" else y.reshape(t.shape[0], -1, 2)

    out = flip_average(fn, x, flip_perm_of(meta), kind) if flip else fn(x)
    if kind == "heatmap":
        coords = heatmaps.hm_to_crop(heatmaps.decode(out, meta.get("decode", "argmax_shift")), out.shape[-1])
    else:
        coords = out
    inv = transforms.invert_affine(m)[None]
    return transforms.to_original(coords.float().cpu().numpy(), inv, size)[0]


# -- outputs ----------------------------------------------------------------------------------------

def draw(image_rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
    """BGR image with each face's box and landmarks drawn (for the PNG next to the predictions)."""
    out = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    r = max(1, round(min(out.shape[:2]) / 200))
    for f in faces:
        left, top, right, bottom = (int(round(v)) for v in f.box)
        cv2.rectangle(out, (left, top), (right, bottom), (255, 160, 0), max(1, r // 2))
        for x, y in f.landmarks:
            cv2.circle(out, (int(round(x * 16)), int(round(y * 16))), r * 16, (0, 255, 0), -1, cv2.LINE_AA, 4)
    return out


def write_csv(faces: list[Face], meta: dict[str, Any], path: Path) -> Path:
    """Predictions in the annotation layout of the model's dataset (atf.readers.write_csv)."""
    from atf.readers import AnnotationSet
    from atf.readers import write_csv as write_annotations
    boxes = np.array([f.box for f in faces], dtype=np.float32).reshape(-1, 4)
    centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    k = int(meta["num_points"])
    aset = AnnotationSet(
        dataset=str(meta.get("dataset", "")), scheme=str(meta.get("scheme", "")), source=str(path),
        images=tuple(f.image for f in faces),
        landmarks=np.array([f.landmarks for f in faces], dtype=np.float32).reshape(-1, k, 2),
        centers=centers.astype(np.float32), scales=(sides / 200.0).astype(np.float32), boxes=boxes,
        box_sizes=np.full(len(faces), np.nan, dtype=np.float32))
    return write_annotations(aset, path, with_box=True, box_size=False, style=_style_of(aset.dataset))


def _style_of(dataset: str) -> str:
    """CSV column style of a registered dataset ("original" for an unknown one)."""
    from atf.datasets import DatasetError, get_dataset
    try:
        return get_dataset(dataset).style
    except DatasetError:
        return "original"


def write_json(faces: list[Face], meta: dict[str, Any], model: str, path: Path) -> Path:
    doc = {"model": model, "dataset": meta.get("dataset"), "scheme": meta.get("scheme"),
           "num_points": meta.get("num_points"),
           "faces": [{"image": f.image, "box": list(f.box), "box_source": f.box_source,
                      "landmarks": np.round(f.landmarks.astype(np.float64), 3).tolist()} for f in faces]}
    path.write_text(json.dumps(doc, indent=1))
    return path


def run(model: str | Path, images: list[str], boxes: str | Path | None = None, out: str | Path = "predictions",
        fmt: Literal["csv", "json"] = "csv", flip: bool = False, detector: Detector = "auto",
        detector_model: str | Path | None = None, device: str = "cpu",
        skipped: list[str] | None = None, faceless: list[str] | None = None) -> list[Face]:
    """Predict every face of `images`; write landmarks (CSV/JSON) and one annotated PNG per image.

    With a `skipped` list, an image that cannot be read is listed there (one line naming it) and
    the others are still written; an image with no face goes to `faceless` (else to `skipped`).
    Without the lists, the first such image raises (FileNotFoundError, NoFaceError).
    """
    from atf.export import load_exported
    module, meta = load_exported(model, device=device)
    table = read_boxes(boxes) if boxes else None
    out_dir = Path(out)
    faces: list[Face] = []
    pngs: set[str] = set()
    for name in images:
        try:
            img = load_image(Path(name))
            if img is None:
                raise FileNotFoundError(f"cannot read image {name}")
            if table is not None:
                rows = table.get(name) or table.get(Path(name).name)
                if not rows:
                    raise NoFaceError(f"{boxes}: no box row for image {name} (column image must match it "
                                      "or its file name)")
                found = [(box, where) for box, where in rows]
            else:
                boxes_found, used = detect_faces(img, name, detector, detector_model)
                found = [(training_box(box, meta, used), used) for box in boxes_found]
        except (FileNotFoundError, NoFaceError) as e:
            listed = faceless if isinstance(e, NoFaceError) and faceless is not None else skipped
            if listed is None:
                raise
            listed.append(str(e))
            continue
        mine = [Face(name, tuple(float(v) for v in box), predict_face(module, meta, img, box, flip, device), where)
                for box, where in found]
        faces.extend(mine)
        png = f"{Path(name).stem}_landmarks.png"
        n = 1
        while png in pngs:            # two inputs with one file name (a/x.jpg, b/x.jpg)
            n += 1
            png = f"{Path(name).stem}_{n}_landmarks.png"
        pngs.add(png)
        out_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out_dir / png), draw(img, mine))
    if not faces and (skipped or faceless):
        return faces  # no image had a face to write (the caller names each one)
    if fmt == "csv":
        write_csv(faces, meta, out_dir / "landmarks.csv")
    else:
        write_json(faces, meta, str(model), out_dir / "landmarks.json")
    return faces
