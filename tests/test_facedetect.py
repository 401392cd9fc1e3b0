"""The face detector of atf-predict (atf/facedetect.py: MTCNN with the weights the `mtcnn` wheel ships).

Parity with the `mtcnn` package's own TensorFlow detector, stage by stage, against the outputs it
gave once (tests/data/mtcnn_reference.npz, made by tools/mtcnn_reference.py); every face of the real
photographs that ship in packages (tools/real_photos.py: astronaut, cameraman, Grace Hopper, each
also in grayscale, rotated by 15 degrees, 40 px tall and in a larger canvas, and the 1024 x 817
grayscale portrait of issue 20), found with IoU >= 0.5 against its annotated box and nothing else
above the default score; a photo without a face; atf-predict end to end on those photos.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from atf.facedetect import _networks, candidates, detect_faces, mtcnn_available, pnet_level, pyramid
from atf.predict import DETECTOR_CALIBRATION, MIN_SCORE, training_box
from atf.readers import read_csv

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "mtcnn_reference.npz"
pytestmark = [
    pytest.mark.skipif(not mtcnn_available(), reason="the mtcnn package (detector weights) is absent"),
    pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="scikit-image (the photos) is absent"),
]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


photos = _tool("real_photos")
reference = _tool("mtcnn_reference")
CASES = photos.cases()


@pytest.fixture(scope="module")
def ref():
    return np.load(REFERENCE)


@lru_cache(maxsize=None)
def _detected(name: str, kind: str):
    """(image, annotated box, every detection) of one photo variant: the detector runs once per variant."""
    image, box = photos.variant(name, kind)
    return image, box, detect_faces(image)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _norm(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((x.astype(np.float32) - 127.5) / 128.0).permute(0, 3, 1, 2)


# -- parity with the reference, stage by stage ------------------------------------------------------

def test_the_three_networks_match_the_reference(ref):
    """Same weights, same layout: kernels [H, W, in, out] -> torch, the (W, H, C) flatten of R-Net and
    O-Net, TF's SAME pooling as ceil mode (odd input sizes), softmax channel 1 = face."""
    pnet, rnet, onet = _networks()
    with torch.no_grad():
        reg, prob = pnet(_norm(photos.photo("astronaut")[reference.NET_CROP][None]))
        np.testing.assert_allclose(prob[0].numpy(), ref["net/p_prob"], atol=1e-5)
        np.testing.assert_allclose(reg[0].permute(1, 2, 0).numpy(), ref["net/p_reg"], atol=1e-5)
        reg, prob = rnet(_norm(ref["net/r_in"]))
        np.testing.assert_allclose(prob.numpy(), ref["net/r_prob"], atol=1e-5)
        np.testing.assert_allclose(reg.numpy(), ref["net/r_reg"], atol=1e-5)
        reg, points, prob = onet(_norm(ref["net/o_in"]))
        np.testing.assert_allclose(prob.numpy(), ref["net/o_prob"], atol=1e-5)
        np.testing.assert_allclose(points.numpy(), ref["net/o_points"], atol=1e-5)
    assert (ref["net/r_prob"][:3] > 0.9).all() and (ref["net/o_prob"][:3] > 0.99).all()  # the faces are faces


def test_pnet_over_the_pyramid_matches_the_reference(ref):
    """Each pyramid level (area resampling, RGB scaled (x - 127.5) / 128) gives the reference's face
    probabilities and candidate boxes (cells at stride 2, offsets, back to image pixels; in the
    reference's window convention, which the detector does not use: see `candidates`), and our
    pyramid holds every level of the reference's, one in between each, down to as large a face."""
    pnet = _networks()[0]
    image = photos.photo("astronaut")[reference.PYR_CROP].astype(np.float32)
    scales = ref["pyr/scales"]
    for i, scale in enumerate(scales):
        size = tuple(int(v) for v in ref[f"pyr/{i}/size"])
        reg, prob = pnet_level(pnet, image, size)
        np.testing.assert_allclose(prob, ref[f"pyr/{i}/prob"], atol=5e-4, err_msg=f"level {i} {size}")
        ours, theirs = candidates(reg, prob, float(scale), window=(1, 12)), ref[f"pyr/{i}/boxes"]
        assert len(ours) == len(theirs), f"level {i}: {len(ours)} candidates, reference {len(theirs)}"
        np.testing.assert_allclose(ours[np.argsort(ours[:, 0])], theirs[np.argsort(theirs[:, 0])], atol=1e-2)
    ours = np.array([s for s, _ in pyramid(*image.shape[:2])])
    np.testing.assert_allclose(ours[::2][:len(scales)], scales, rtol=1e-9)
    assert ours[-1] <= scales[-1] * (1 + 1e-9) and len(ours) >= 2 * len(scales) - 1


# -- real photographs -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_every_face_of_a_real_photo_is_found(name, kind, ref):
    image, box, faces = _detected(name, kind)
    kept = [f for f in faces if f.score >= MIN_SCORE]
    ious = [round(_iou(f.box, box), 2) for f in kept]
    assert len(kept) == 1 and ious[0] >= 0.5, f"{name} {kind}: boxes {[f.box for f in kept]}, IoU {ious}"
    face = kept[0]
    theirs = ref[f"det/{name}/{kind}"]
    assert len(theirs) == 1 and _iou(face.box, theirs[0, :4]) >= 0.6     # where the reference puts it
    assert np.all((face.points >= np.array(face.box[:2])) & (face.points <= np.array(face.box[2:])))


def test_a_photo_without_a_face_has_no_box(ref):
    image = photos.photo(photos.NO_FACE)
    assert [f.score for f in detect_faces(image) if f.score >= MIN_SCORE] == []
    assert len(ref[f"det/{photos.NO_FACE}/original"]) == 0


def test_grayscale_and_rgba_layouts_and_bad_pixels():
    """A grayscale photo as [H, W] finds what its 3-channel decode finds; RGBA drops alpha;
    float pixels are refused in one line instead of silently scaled wrong."""
    image, _, faces = _detected("grace_hopper", "gray")
    want = [f.box for f in faces]
    assert [f.box for f in detect_faces(image[..., 0])] == want
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert [f.box for f in detect_faces(rgba)] == want
    with pytest.raises(ValueError, match="uint8 pixels"):
        detect_faces(image.astype(np.float32) / 255)
    with pytest.raises(ValueError, match=r"got \(4, 5, 2\)"):
        detect_faces(np.zeros((4, 5, 2), np.uint8))


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


# -- atf-predict on the photos ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def mean_shape_model(synth_root, tmp_path_factory):
    """A WFLW model that always predicts SynthFace-WFLW's mean training shape in its crop: where its
    landmarks land tests the path detector box -> calibrated training crop -> original pixels."""
    from atf.data import LandmarkDataset
    from atf.schemes import get_scheme
    from atf.transforms import AugmentParams, input_px_to_crop, transform_points
    aset = read_csv(synth_root / "wflw" / "face_landmarks_wflw_train.csv")
    ds = LandmarkDataset(aset, synth_root / "wflw" / "images", get_scheme("wflw98").flip_perm, 32,
                         crop="center_scale", crop_margin=1.25)
    pts = [transform_points(aset.landmarks[i], ds.affine(i, AugmentParams.identity())) for i in range(len(ds))]
    mean = torch.from_numpy(input_px_to_crop(np.mean(pts, axis=0), 32).astype(np.float32).reshape(1, -1))

    class MeanShape(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return mean.repeat(x.shape[0], 1) + 0 * x.mean()

    meta = {"dataset": "wflw", "scheme": "wflw98", "num_points": 98, "kind": "coords", "input_size": 32,
            "crop": "center_scale", "crop_margin": 1.25, "mean": [0.5] * 3, "std": [0.5] * 3}
    path = tmp_path_factory.mktemp("model") / "wflw_mean.pt"
    torch.jit.save(torch.jit.trace(MeanShape(), torch.zeros(1, 3, 32, 32)), str(path),
                   _extra_files={"atf.json": json.dumps(meta)})
    return path


def test_atf_predict_on_the_real_photos(mean_shape_model, tmp_path, capsys):
    """Exit 0 for a batch with a faceless photo, which gets one line; one face per photo, landmarks
    inside its annotated face box (grown by a tenth of its side: MTCNN's box runs brow to chin, the
    98-point contour out to the ears); --require-face makes the faceless photo exit 1."""
    from atf.cli.predict import main
    names, boxes = [], {}
    for name, kind in [(n, "original") for n in photos.FACES] + [("astronaut", "rot15"), ("camera", "face40")]:
        image, box = photos.variant(name, kind)
        path = tmp_path / f"{name}_{kind}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        names.append(str(path))
        boxes[str(path)] = box
    faceless = tmp_path / "coffee.png"
    cv2.imwrite(str(faceless), cv2.cvtColor(photos.photo(photos.NO_FACE), cv2.COLOR_RGB2BGR))
    out = tmp_path / "o"
    assert main([str(mean_shape_model), *names, str(faceless), "--out", str(out), "--format", "json"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no face found in" in err[0] and "coffee.png" in err[0], err
    doc = json.loads((out / "landmarks.json").read_text())
    assert sorted(f["image"] for f in doc["faces"]) == sorted(names)
    for f in doc["faces"]:
        left, top, right, bottom = boxes[f["image"]]
        pad = 0.1 * (right - left)
        left, top, right, bottom = left - pad, top - pad, right + pad, bottom + pad
        pts = np.asarray(f["landmarks"])
        assert f["box_source"] == "mtcnn" and pts.shape == (98, 2)
        inside = (pts[:, 0] >= left) & (pts[:, 0] <= right) & (pts[:, 1] >= top) & (pts[:, 1] <= bottom)
        assert inside.all(), f"{f['image']}: {np.count_nonzero(~inside)} of 98 landmarks outside the face box"
    assert main([str(mean_shape_model), str(faceless), "--out", str(out), "--require-face"]) == 1
    assert "coffee.png" in capsys.readouterr().err
