"""Native formats: small WFLW/300W/COFW/AFLW releases built here, converted and read back."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
from _shared import ANNOTATIONS, needs_shared

from atf.cli.data import main as data_main
from atf.datasets import load_split
from atf.native import (
    NativeFormatError,
    convert,
    load_mat,
    read_300w,
    read_aflw,
    read_cofw,
    read_pts,
    read_wflw,
)
from atf.readers import landmark_box, read_csv


def _shape(k: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(50, 150, (k, 2))


# -- WFLW --------------------------------------------------------------------------------------

def _wflw_line(lm: np.ndarray, attrs: list[int], name: str) -> str:
    box = [lm[:, 0].min() - 5, lm[:, 1].min() - 5, lm[:, 0].max() + 5, lm[:, 1].max() + 5]
    return " ".join([*(f"{v:.6f}" for v in lm.reshape(-1)), *(f"{int(b)}" for b in box),
                     *(str(a) for a in attrs), name])


def test_wflw_list_files_convert_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "WFLW" / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    src.mkdir(parents=True)
    (tmp_path / "WFLW" / "WFLW_images").mkdir()
    train = [_shape(98, rng) for _ in range(3)]
    test = [_shape(98, rng) for _ in range(4)]
    attrs = [[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0]]
    (src / "list_98pt_rect_attr_train.txt").write_text(
        "\n".join(_wflw_line(lm, [0] * 6, f"1--Handshaking/{i}.jpg") for i, lm in enumerate(train)) + "\n")
    (src / "list_98pt_rect_attr_test.txt").write_text(
        "\n".join(_wflw_line(lm, a, f"2--Demo/{i}.jpg") for i, (lm, a) in enumerate(zip(test, attrs))))
    conv = read_wflw(tmp_path / "WFLW")
    assert len(conv.train) == 3 and len(conv.test["full"]) == 4
    assert conv.test["largepose"].images == ("2--Demo/0.jpg", "2--Demo/2.jpg")
    assert conv.test["blur"].images == ("2--Demo/0.jpg",) and len(conv.test["makeup"]) == 0
    assert np.allclose(conv.test["full"].landmarks[1], test[1], atol=1e-4)
    centers, scales = landmark_box(conv.train.landmarks)
    assert np.array_equal(conv.train.centers, centers) and np.array_equal(conv.train.scales, scales)

    out = tmp_path / "data"
    assert data_main(["convert", "--format", "wflw", str(tmp_path / "WFLW"), "--out", str(out), "--with-box"]) == 0
    assert (out / "wflw" / "images").resolve() == (tmp_path / "WFLW" / "WFLW_images").resolve()
    back = load_split("wflw", "test", "occlusion", root=out)
    assert back.source.endswith("face_landmarks_wflw_test_occlusion_with_box.csv")
    assert back.images == ("2--Demo/2.jpg",) and np.allclose(back.landmarks[0], test[2], atol=1e-4)
    assert np.allclose(back.boxes[0], [test[2][:, 0].min() - 5, test[2][:, 1].min() - 5,
                                       test[2][:, 0].max() + 5, test[2][:, 1].max() + 5], atol=1)
    assert len(load_split("wflw", "train", root=out)) == 3

    (src / "list_98pt_rect_attr_test.txt").write_text(_wflw_line(test[0], attrs[0], "x.jpg") + " extra\n")
    with pytest.raises(NativeFormatError, match=r"list_98pt_rect_attr_test.txt: line 1: 208 fields"):
        read_wflw(tmp_path / "WFLW")


# -- 300W --------------------------------------------------------------------------------------

def _write_pts(path: Path, lm: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in lm + 1.0)      # files are 1-based
    path.write_text(f"version: 1\nn_points:  {len(lm)}\n{{\n{body}\n}}\n")


def test_300w_tree_folder_rules_and_one_based_coordinates(tmp_path):
    rng = np.random.default_rng(1)
    layout = {"lfpw/trainset/a": "train", "helen/trainset/b": "train", "afw/c": "train",
              "lfpw/testset/d": "common", "helen/testset/e": "common", "ibug/f": "challenge",
              "300W/01_Indoor/indoor_001": "test", "300W/02_Outdoor/outdoor_001": "test",
              "misc/ignored": None}
    shapes = {}
    for rel in layout:
        shapes[rel] = _shape(68, rng)
        _write_pts(tmp_path / "src" / f"{rel}.pts", shapes[rel])
    (tmp_path / "src" / "ibug" / "f.jpg").write_bytes(b"")
    (tmp_path / "src" / "afw" / "c.png").write_bytes(b"")
    conv = read_300w(tmp_path / "src")
    assert sorted(conv.train.images) == ["afw/c.png", "helen/trainset/b.jpg", "lfpw/trainset/a.jpg"]
    assert conv.test["challenge"].images == ("ibug/f.jpg",)
    assert conv.test["full"].images == ("helen/testset/e.jpg", "lfpw/testset/d.jpg", "ibug/f.jpg")
    assert len(conv.test["test"]) == 2 and any("skipped" in n for n in conv.notes)
    i = conv.test["full"].images.index("lfpw/testset/d.jpg")
    assert np.allclose(conv.test["full"].landmarks[i], shapes["lfpw/testset/d"], atol=1e-3)

    out = tmp_path / "data"
    written = convert("300w", tmp_path / "src", out)
    assert sorted(p.name for p in written) == sorted([
        "face_landmarks_300w_train.csv", "face_landmarks_300w_valid.csv", "face_landmarks_300w_valid_common.csv",
        "face_landmarks_300w_valid_challenge.csv", "face_landmarks_300w_test.csv"])
    back = load_split("300w", "test", "full", root=out)
    assert np.array_equal(back.landmarks, conv.test["full"].landmarks) and (out / "300w" / "images").is_dir()

    bad = tmp_path / "bad.pts"
    bad.write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    with pytest.raises(NativeFormatError, match=r"bad.pts: expected 68 lines"):
        read_pts(bad)


# -- COFW --------------------------------------------------------------------------------------

def _cofw_data(n: int, rng: np.random.Generator):
    ims = [rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8) for i in range(n)]
    ims[-1] = ims[-1][..., 0]                          # COFW holds some grey images
    lm = np.stack([_shape(29, rng) for _ in range(n)]) / 4
    phis = np.concatenate([lm[..., 0] + 1, lm[..., 1] + 1, np.zeros((n, 29))], axis=1)
    boxes = np.tile([3.0, 4.0, 30.0, 20.0], (n, 1))
    return ims, lm, phis, boxes


def _write_v73(path: Path, ims, phis, boxes, names=("IsT", "phisT", "bboxesT")) -> None:
    """A MATLAB v7.3-like HDF5 file: matrices transposed, the image cell as object references."""
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        ref_list = []
        for i, im in enumerate(ims):
            ds = refs.create_dataset(f"im{i}", data=np.asarray(im).T)
            ds.attrs["MATLAB_class"] = np.bytes_("uint8")
            ref_list.append(ds.ref)
        cell = f.create_dataset(names[0], (1, len(ims)), dtype=h5py.ref_dtype)
        cell[0, :] = ref_list
        f.create_dataset(names[1], data=phis.T)
        f.create_dataset(names[2], data=boxes.T)


def test_cofw_mat_v5_and_v73_write_png_images(tmp_path):
    rng = np.random.default_rng(2)
    src = tmp_path / "cofw"
    src.mkdir()
    tr_ims, tr_lm, tr_phis, tr_boxes = _cofw_data(3, rng)
    cell = np.empty((3, 1), dtype=object)
    for i, im in enumerate(tr_ims):
        cell[i, 0] = im
    scipy.io.savemat(src / "COFW_train_color.mat", {"IsTr": cell, "phisTr": tr_phis, "bboxesTr": tr_boxes})
    te_ims, te_lm, te_phis, te_boxes = _cofw_data(2, rng)
    _write_v73(src / "COFW_test_color.mat", te_ims, te_phis, te_boxes)

    out = tmp_path / "data"
    assert data_main(["convert", "--format", "cofw", str(src), "--out", str(out)]) == 0
    train = load_split("cofw", "train", root=out)
    test = load_split("cofw", "test", root=out)
    assert train.images == ("train/0000.png", "train/0001.png", "train/0002.png")
    assert np.allclose(train.landmarks, tr_lm, atol=1e-4) and np.allclose(test.landmarks, te_lm, atol=1e-4)
    for split, ims in (("train", tr_ims), ("test", te_ims)):
        for i, im in enumerate(ims):
            png = cv2.imread(str(out / "cofw" / "images" / split / f"{i:04d}.png"), cv2.IMREAD_UNCHANGED)
            expect = im if im.ndim == 2 else im[..., ::-1]        # written as BGR for OpenCV
            assert png.shape == im.shape and np.array_equal(png, expect)
    conv = read_cofw(src)
    assert np.allclose(conv.train.boxes[0], [2, 3, 32, 23])       # x, y, w, h (1-based) -> l, t, r, b


def test_mat_errors_name_the_file(tmp_path):
    with pytest.raises(NativeFormatError, match="nope.mat: file not found"):
        load_mat(tmp_path / "nope.mat", ("x",))
    scipy.io.savemat(tmp_path / "a.mat", {"x": np.ones((2, 2))})
    with pytest.raises(NativeFormatError, match=r"a.mat: no variable 'y'"):
        load_mat(tmp_path / "a.mat", ("y",))
    (tmp_path / "b.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(NativeFormatError, match=r"b.mat: unreadable .mat file"):
        load_mat(tmp_path / "b.mat", ("x",))
    with pytest.raises(NativeFormatError, match="neither COFW_train_color.mat"):
        read_cofw(tmp_path)


# -- AFLW --------------------------------------------------------------------------------------

def test_aflw_info_mat_split_frontal_and_box_size(tmp_path):
    rng = np.random.default_rng(3)
    n = 6
    lm = np.stack([_shape(19, rng) for _ in range(n)])
    data = np.concatenate([lm[..., 0] + 1, lm[..., 1] + 1], axis=1)
    bbox = np.tile([11.0, 111.0, 21.0, 61.0], (n, 1))           # x1 x2 y1 y2, 1-based: 100 x 40
    ra = np.array([[5, 2, 6, 1, 3, 4]], dtype=np.float64)          # MATLAB 1-based permutation
    mask = np.ones((n, 19))
    mask[0, 4] = 0                                                 # face 1 not frontal
    names = np.empty((n, 1), dtype=object)
    for i in range(n):
        names[i, 0] = f"3/image{i:05d}.jpg"
    scipy.io.savemat(tmp_path / "AFLWinfo_release.mat",
                     {"data": data, "bbox": bbox, "ra": ra, "mask_new": mask, "nameList": names})
    conv = read_aflw(tmp_path, train_count=2)
    assert conv.train.images == ("3/image00004.jpg", "3/image00001.jpg")
    assert conv.test["full"].images == ("3/image00005.jpg", "3/image00000.jpg", "3/image00002.jpg",
                                        "3/image00003.jpg")
    assert "3/image00000.jpg" not in conv.test["frontal"].images and len(conv.test["frontal"]) == 3
    assert np.allclose(conv.test["full"].box_sizes, np.sqrt(100 * 40))
    assert np.allclose(conv.test["full"].scales, np.sqrt(4000) / 200)
    assert np.allclose(conv.test["full"].centers, [60, 40])
    assert np.allclose(conv.test["full"].landmarks[1], lm[0], atol=1e-4)

    out = tmp_path / "data"
    assert data_main(["convert", "--format", "aflw", str(tmp_path), "--out", str(out), "--train-count", "2"]) == 0
    back = read_csv(out / "aflw" / "face_landmarks_aflw_test_frontal.csv")
    assert len(back) == 3 and np.allclose(back.box_sizes, np.sqrt(4000))

    scipy.io.savemat(tmp_path / "AFLWinfo_release.mat",
                     {"data": data, "bbox": bbox, "ra": ra * 0 + 1, "mask_new": mask, "nameList": names})
    with pytest.raises(NativeFormatError, match="ra is not a permutation"):
        read_aflw(tmp_path)


@needs_shared
def test_landmark_box_reproduces_the_public_centre_and_scale():
    # the converter's centre/scale convention gives back the columns of the public WFLW/300W CSVs
    for dataset, subset in (("wflw", "largepose"), ("300w", "full"), ("300w", "test")):
        aset = load_split(dataset, "test", subset, root=ANNOTATIONS)
        centers, scales = landmark_box(aset.landmarks)
        same = (np.abs(aset.scales - scales) < 1e-4) & (np.abs(aset.centers - centers) < 1e-3).all(axis=1)
        assert same.mean() >= 0.99, (dataset, subset, same.mean())
