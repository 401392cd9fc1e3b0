"""`atf-eval --pred/--gt`: matching by image name, dataset normalisers, table/JSON output."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _shared import ANNOTATIONS, needs_shared

from atf import keys
from atf.cli.eval import main
from atf.readers import AnnotationSet, landmark_box, read_csv, write_csv


def _gt(dataset: str, k: int, n: int = 4, seed: int = 0) -> AnnotationSet:
    rng = np.random.default_rng(seed)
    lm = rng.uniform(100, 300, (n, k, 2)).astype(np.float32)
    centers, scales = landmark_box(lm)
    names = ("a.jpg", "b.jpg", "b.jpg", "c.jpg")[:n]      # an image may hold two faces
    return AnnotationSet(dataset=dataset, scheme="", source="mem", images=names, landmarks=lm,
                         centers=centers, scales=scales, boxes=np.full((n, 4), np.nan, np.float32),
                         box_sizes=np.array([100, 200, 400, 800][:n], np.float32))


def _files(tmp_path, dataset, k, shift, order=(0, 1, 2, 3)):
    gt = _gt(dataset, k)
    pred = gt.with_landmarks(gt.landmarks + np.float32(shift)).subset(list(order))
    g = write_csv(gt, tmp_path / "gt.csv")
    p = write_csv(pred, tmp_path / "pred.csv", box_size=False)
    return gt, g, p


def test_aflw_uses_gt_box_size_and_matches_by_name(tmp_path, capsys):
    # shift (3, 4): every point is 5 px off; NME_i = 5 / box_size_i
    gt, g, p = _files(tmp_path, "aflw", 19, [3.0, 4.0], order=(3, 2, 0, 1))
    assert "box_size" not in p.read_text().splitlines()[0]
    assert main(["--pred", str(p), "--gt", str(g), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    errors = 5 / np.array([100, 200, 400, 800])
    assert out["dataset"] == "aflw" and out["images"] == 4
    assert out[keys.NME] == pytest.approx(errors.mean() * 100, rel=1e-5)
    assert out[keys.FR] == pytest.approx(0.0)
    assert out[keys.AUC] == pytest.approx(np.mean(0.1 - errors) / 0.1, rel=1e-5)


def test_table_output_and_interocular_normaliser(tmp_path, capsys):
    gt, g, p = _files(tmp_path, "300w", 68, [0.0, 0.0])
    pred = read_csv(p)
    lm = pred.landmarks.copy()
    lm[0] += 10.0                    # 14.14 px on every point of the first face only
    write_csv(pred.with_landmarks(lm), p, box_size=False)
    assert main(["--pred", str(p), "--gt", str(g), "--dataset", "300w"]) == 0
    text = capsys.readouterr().out
    iod = np.linalg.norm(gt.landmarks[0, 36] - gt.landmarks[0, 45])
    expected = np.sqrt(200) / iod / 4 * 100
    assert "NME (%)" in text and "FR@0.1" in text and "AUC@0.1" in text
    row = text.splitlines()[1].split()
    assert row[0] == "300w" and row[1] == "4" and float(row[2]) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("drop,match", [
    ("missing", "1 image\\(s\\) of .*gt.csv have no prediction, first 'c.jpg'"),
    ("extra", "1 image name\\(s\\) with more rows than in .*gt.csv, first 'zzz.jpg'"),
    ("points", "pred.csv: 19 points, but .*gt.csv has 68"),
])
def test_name_and_point_mismatches_are_one_line_errors(tmp_path, capsys, drop, match):
    gt, g, p = _files(tmp_path, "300w", 68, [1.0, 1.0])
    pred = read_csv(p)
    if drop == "missing":
        write_csv(pred.subset([0, 1, 2]), p)
    elif drop == "extra":
        from dataclasses import replace
        write_csv(replace(pred, images=pred.images[:3] + ("zzz.jpg",)), p)
    else:
        write_csv(_gt("aflw", 19), p, box_size=False)
    assert main(["--pred", str(p), "--gt", str(g)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    import re
    assert re.search(match, err), err


def test_unknown_point_count_asks_for_dataset(tmp_path, capsys):
    gt = _gt("", 7)
    g = write_csv(gt, tmp_path / "gt.csv", box_size=False)
    assert main(["--pred", str(g), "--gt", str(g)]) == 2
    assert "no dataset with 7 points; name one with --dataset" in capsys.readouterr().err


def test_checkpoint_argument_is_dispatched(tmp_path, capsys):
    # not a --pred/--gt call: scored as a checkpoint, whose error is one line
    assert main([str(tmp_path / "run" / "best.pt")]) == 2
    assert "best.pt" in capsys.readouterr().err



@needs_shared
def test_real_files_in_another_row_order_score_zero(capsys):
    # the public 300W plain and _with_box files list the same faces in different orders
    folder = ANNOTATIONS / "300w"
    args = ["--pred", str(folder / "face_landmarks_300w_valid.csv"),
            "--gt", str(folder / "face_landmarks_300w_valid_with_box.csv"), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 689 and out[keys.NME] == pytest.approx(0.0, abs=1e-6) and out[keys.AUC] == pytest.approx(1.0)
