"""atf-predict end to end with tiny exported models: boxes CSV, detectors, outputs, errors."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from atf import heatmaps, transforms
from atf.cli.predict import main
from atf.config import ModelConfig
from atf.data import LandmarkDataset
from atf.export import export_torchscript, load_exported
from atf.models import build_model
from atf.predict import DetectorUnavailable, NoFaceError, detect_face, haar_available, read_boxes
from atf.readers import AnnotationSet, read_csv

PERM19 = [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18]


@pytest.fixture(scope="module")
def ocn_model(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="ocn", width_mult=0.25), {"aflw": 19}, input_size=32)
    path = tmp_path_factory.mktemp("model") / "aflw_ocn.pt"
    return export_torchscript(model.eval(), path, {"scheme": "aflw19", "crop": "box", "crop_margin": 1.25,
                                                   "flip_perm": PERM19})


@pytest.fixture()
def photo(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    path = tmp_path / "face one.png"
    cv2.imwrite(str(path), img)
    return path


def _boxes(tmp_path, rows):
    path = tmp_path / "boxes.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "left", "top", "right", "bottom"])
        w.writerows(rows)
    return path


def test_boxes_csv_end_to_end_matches_training_crop(tmp_path, ocn_model, photo):
    box = (40.0, 20.0, 110.0, 100.0)
    boxes = _boxes(tmp_path, [[photo.name, *box]])
    out = tmp_path / "out"
    assert main([str(ocn_model), str(photo), "--boxes", str(boxes), "--out", str(out)]) == 0
    pred = read_csv(out / "landmarks.csv")
    assert pred.images == (str(photo),) and pred.landmarks.shape == (1, 19, 2)
    assert (out / "face one_landmarks.png").is_file()
    np.testing.assert_allclose(pred.boxes[0], box)
    # the same face through the evaluation Dataset (box crop) + to_original gives the same landmarks
    f32 = np.float32
    aset = AnnotationSet("aflw", "aflw19", "t.csv", (photo.name,), np.zeros((1, 19, 2), f32),
                         np.full((1, 2), np.nan, f32), np.full(1, np.nan, f32), np.array([box], f32),
                         np.full(1, np.nan, f32))
    s = LandmarkDataset(aset, photo.parent, PERM19, 32, crop="box", crop_margin=1.25)[0]
    module, meta = load_exported(ocn_model)
    with torch.no_grad():
        u = module(s["image"][None]).reshape(1, 19, 2).numpy()
    want = transforms.to_original(u, s["inverse"][None].numpy(), 32)[0]
    np.testing.assert_allclose(pred.landmarks[0], want, atol=1e-2)


def test_json_flip_and_whole_image_detector(tmp_path, ocn_model, photo):
    out = tmp_path / "out"
    assert main([str(ocn_model), str(photo), str(photo), "--detector", "whole", "--format", "json", "--flip",
                 "--out", str(out)]) == 0
    doc = json.loads((out / "landmarks.json").read_text())
    assert len(doc["faces"]) == 2 and doc["faces"][0] == doc["faces"][1]
    assert (out / "face one_landmarks.png").is_file() and (out / "face one_2_landmarks.png").is_file()
    face = doc["faces"][0]
    assert face["box"] == [0.0, 0.0, 160.0, 120.0] and face["box_source"] == "whole"
    assert np.array(face["landmarks"]).shape == (19, 2) and doc["dataset"] == "aflw"


def test_heatmap_model_predicts_its_own_peaks(tmp_path, photo):
    """A heatmap export decodes and maps back: a fake model placing a peak at a known crop point."""
    class Peaks(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pts = torch.tensor([[0.3, 0.6]]).repeat(x.shape[0], 19, 1)
            return heatmaps.encode_batch(heatmaps.crop_to_hm(pts, 8), 8, 1.0)
    path = tmp_path / "peaks.pt"
    meta = {"dataset": "aflw", "scheme": "aflw19", "num_points": 19, "kind": "heatmap", "input_size": 32,
            "heatmap_size": 8, "crop": "box", "crop_margin": 1.0, "mean": [0.5] * 3, "std": [0.5] * 3,
            "decode": "subpixel"}
    torch.jit.save(torch.jit.trace(Peaks(), torch.zeros(1, 3, 32, 32)), str(path),
                   _extra_files={"atf.json": json.dumps(meta)})
    boxes = _boxes(tmp_path, [[photo.name, 0, 0, 100, 100]])
    assert main([str(path), str(photo), "--boxes", str(boxes), "--out", str(tmp_path / "o")]) == 0
    pred = read_csv(tmp_path / "o" / "landmarks.csv")
    np.testing.assert_allclose(pred.landmarks[0], np.tile([[30.0, 60.0]], (19, 1)), atol=0.05)


def test_detector_path_on_blank_image(tmp_path, ocn_model, capsys):
    """No face is reported in one line, not an error (exit 0), unless --require-face (exit 1)."""
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((64, 64, 3), 128, np.uint8))
    rc = main([str(ocn_model), str(blank), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 0 and "no face found in" in err and "blank.png" in err and len(err.strip().splitlines()) == 1
    assert main([str(ocn_model), str(blank), "--out", str(tmp_path / "o"), "--require-face"]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    img = np.full((64, 64, 3), 128, np.uint8)
    if haar_available():
        with pytest.raises(NoFaceError, match="no face found in blank.png"):
            detect_face(img, "blank.png", "haar")
    else:
        with pytest.raises(DetectorUnavailable, match="ships no Haar cascades"):
            detect_face(img, "blank.png", "auto")
    with pytest.raises(DetectorUnavailable, match="ONNX model"):
        detect_face(img, "blank.png", "yunet", None)


def test_missing_image_and_bad_boxes_are_one_line_errors(tmp_path, ocn_model, photo, capsys):
    """Exit 2 for bad input (an unreadable image or model, a bad boxes CSV), each in one line naming
    the file; an image the CSV has no row for is a photo without a face (exit 0, or 1 with
    --require-face)."""
    assert main([str(ocn_model), str(tmp_path / "nope.jpg"), "--detector", "whole"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read image" in err[0] and "nope.jpg" in err[0]
    assert main([str(tmp_path / "no_model.pt2"), str(photo), "--detector", "whole"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_model.pt2" in err[0]
    boxes = _boxes(tmp_path, [["other.png", 0, 0, 10, 10]])
    assert main([str(ocn_model), str(photo), "--boxes", str(boxes), "--out", str(tmp_path / "o")]) == 0
    assert "no box row for image" in capsys.readouterr().err
    assert main([str(ocn_model), str(photo), "--boxes", str(boxes), "--out", str(tmp_path / "o"), "--require-face"]) == 1
    assert "no box row for image" in capsys.readouterr().err
    bad = _boxes(tmp_path, [[photo.name, 10, 0, 5, 10]])
    with pytest.raises(ValueError, match=r"boxes.csv row 1: box .* right > left"):
        read_boxes(bad)
