"""atf-predict on a batch where one image shows no face (no box row) and one cannot be read:
both are named, the others are still written, and the unreadable one makes it exit 2 (bad input)."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import torch

from atf.cli.predict import main
from atf.config import ModelConfig
from atf.export import export_torchscript
from atf.models import build_model
from atf.readers import read_csv

PERM19 = [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18]


def test_one_faceless_image_does_not_abort_the_batch(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="ocn", width_mult=0.25), {"aflw": 19}, input_size=32)
    path = export_torchscript(model.eval(), tmp_path / "m.pt", {"scheme": "aflw19", "crop": "box",
                                                               "crop_margin": 1.25, "flip_perm": PERM19})
    rng = np.random.default_rng(0)
    names = []
    for name in ("a.png", "faceless.png", "c.png"):
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 255, (80, 100, 3), dtype=np.uint8))
        names.append(str(tmp_path / name))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    names.append(str(tmp_path / "broken.png"))
    boxes = tmp_path / "boxes.csv"
    with open(boxes, "w", newline="") as f:
        csv.writer(f).writerows([["image", "left", "top", "right", "bottom"], ["a.png", 10, 10, 60, 60],
                                 ["c.png", 20, 5, 70, 55], ["broken.png", 0, 0, 10, 10]])
    rc = main([str(path), *names, "--boxes", str(boxes), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2       # broken.png is bad input; faceless.png alone would exit 0
    assert "faceless.png" in err and "broken.png" in err and len(err.strip().splitlines()) == 2
    pred = read_csv(tmp_path / "out" / "landmarks.csv")
    assert [n.split("/")[-1] for n in pred.images] == ["a.png", "c.png"]
    assert {p.name for p in (tmp_path / "out").glob("*.png")} == {"a_landmarks.png", "c_landmarks.png"}
