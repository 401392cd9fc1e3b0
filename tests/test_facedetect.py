"""The face detector of atf-predict: every face of a group photo (composed from faces that ship in
packages: scikit-image, matplotlib, SynthFace), the box mapped to the training crop, end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from atf.config import ModelConfig
from atf.export import export_model
from atf.facedetect import detect_faces, mtcnn_available
from atf.models import build_model
from atf.predict import DETECTOR_CALIBRATION, MIN_SCORE, training_box
from atf.readers import read_csv

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not mtcnn_available(), reason="the mtcnn package (detector weights) is absent")


def _group_photo_module():
    spec = importlib.util.spec_from_file_location("group_photo", REPO / "tools" / "group_photo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def group(synth_root):
    if importlib.util.find_spec("skimage") is None:
        pytest.skip("scikit-image (the astronaut and cameraman photos) is not installed")
    return _group_photo_module().compose(synth_root, synth_count=2)


def _matches(boxes, centres) -> dict[str, int]:
    """Face name -> the index of the box whose centre is nearest, within a third of its side."""
    out = {}
    for name, x, y in centres:
        dist = [np.hypot((b[0] + b[2]) / 2 - x, (b[1] + b[3]) / 2 - y) / (b[2] - b[0]) for b in boxes]
        if dist and min(dist) < 0.34:
            out[name] = int(np.argmin(dist))
    return out


def test_every_face_of_a_group_photo_is_found(group):
    canvas, centres = group
    faces = [f for f in detect_faces(canvas) if f.score >= MIN_SCORE]
    boxes = [f.box for f in faces]
    found = _matches(boxes, centres)
    assert sorted(found) == sorted(n for n, _, _ in centres), f"missed {set(n for n, _, _ in centres) - set(found)}"
    assert len(faces) == len(centres)                    # and nothing else (no painted wall, no flag)
    assert len(set(found.values())) == len(centres)      # one box per face
    for f in faces:                                       # O-Net's five points lie inside their box
        assert np.all((f.points >= np.array(f.box[:2]) - 2) & (f.points <= np.array(f.box[2:]) + 2))


def test_a_blank_image_has_no_face():
    assert [f for f in detect_faces(np.full((200, 300, 3), 127, np.uint8)) if f.score >= MIN_SCORE] == []


def test_calibrated_box_matches_the_annotation_crop(synth_root):
    """The calibration (fitted on another SynthFace draw) maps detector boxes to the annotation's
    centre and scale*200 on these faces: the crop the model was trained with."""
    errors, ratios, tried = [], [], 0
    for dataset in ("wflw", "300w"):
        for split in ("train", "test"):
            aset = read_csv(synth_root / dataset / f"face_landmarks_{dataset}_{split}.csv")
            for i in range(len(aset.images)):
                tried += 1
                image = cv2.imread(str(synth_root / dataset / "images" / aset.images[i]))
                (cx, cy), side = aset.centers[i], aset.scales[i] * 200
                meta = {"crop": "center_scale", "dataset": dataset}
                boxes = [training_box(f.box, meta, "mtcnn")
                         for f in detect_faces(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)) if f.score >= MIN_SCORE]
                if not boxes:
                    continue
                b = min(boxes, key=lambda b: np.hypot((b[0] + b[2]) / 2 - cx, (b[1] + b[3]) / 2 - cy))
                errors.append(np.hypot((b[0] + b[2]) / 2 - cx, (b[1] + b[3]) / 2 - cy) / side)
                ratios.append((b[2] - b[0]) / side)
    print(f"{len(errors)}/{tried} found; centre error median {np.median(errors):.3f}, side ratio {np.median(ratios):.3f}")
    assert len(errors) >= 0.6 * tried
    assert np.median(errors) < 0.06 and abs(np.median(ratios) - 1) < 0.1
    raw = (10.0, 20.0, 110.0, 120.0)
    assert training_box(raw, {"crop": "box", "dataset": "wflw"}, "mtcnn") == raw          # box models: as is
    assert training_box(raw, {"crop": "center_scale", "dataset": "wflw"}, "haar") == raw  # uncalibrated
    dx, dy, k = DETECTOR_CALIBRATION["wflw"]
    left, top, right, bottom = training_box(raw, {"crop": "center_scale", "dataset": "wflw"}, "mtcnn")
    assert (right - left) == pytest.approx(100 * k) and (top + bottom) / 2 == pytest.approx(70 + 100 * dy)


def test_atf_predict_marks_every_face(group, tmp_path):
    from atf.cli.predict import main
    canvas, centres = group
    photo = tmp_path / "group.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="ocn", width_mult=0.25), {"wflw": 98}, input_size=32).eval()
    exported = export_model(model, tmp_path / "wflw.pt2", {"scheme": "wflw98", "crop": "center_scale",
                                                            "crop_margin": 1.25})
    assert main([str(exported), str(photo), "--out", str(tmp_path / "o"), "--format", "json"]) == 0
    doc = json.loads((tmp_path / "o" / "landmarks.json").read_text())
    assert len(doc["faces"]) == len(centres) and {f["box_source"] for f in doc["faces"]} == {"mtcnn"}
    assert len(_matches([f["box"] for f in doc["faces"]], centres)) == len(centres)
    assert all(np.asarray(f["landmarks"]).shape == (98, 2) for f in doc["faces"])
    assert (tmp_path / "o" / "group_landmarks.png").stat().st_size > 10_000
