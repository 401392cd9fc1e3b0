"""CSV readers/writer and the dataset registry, on the real annotation files and on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _shared import ANNOTATIONS, needs_shared

from atf.config import DataConfig, DatasetPaths
from atf.datasets import (
    DatasetError,
    csv_name,
    csv_path,
    data_provenance,
    dataset_for_points,
    dataset_names,
    get_dataset,
    images_dir,
    load_split,
    normalizers,
    register_file,
    test_subsets,
)
from atf.readers import AnnotationError, AnnotationSet, landmark_box, read_csv, write_csv

# REFERENCE.md row counts of the public files: (dataset, split, subset) -> rows
_ROWS = {
    ("wflw", "test", "blur"): 773, ("wflw", "test", "expression"): 314, ("wflw", "test", "illumination"): 698,
    ("wflw", "test", "largepose"): 326, ("wflw", "test", "makeup"): 206, ("wflw", "test", "occlusion"): 736,
    ("300w", "test", "full"): 689, ("300w", "test", "common"): 554, ("300w", "test", "challenge"): 135,
    ("300w", "test", "test"): 600, ("cofw", "train", "full"): 1345, ("cofw", "test", "full"): 507,
    ("aflw", "test", "full"): 4386, ("aflw", "test", "frontal"): 1314,
}


# -- the registry ----------------------------------------------------------------------------

def test_registry_names_and_subsets():
    assert dataset_names()[:4] == ["wflw", "300w", "cofw", "aflw"]
    assert test_subsets("wflw") == ("full", "largepose", "expression", "illumination", "makeup", "occlusion", "blur")
    assert test_subsets("300w") == ("full", "common", "challenge", "test")
    assert test_subsets("aflw") == ("full", "frontal") and test_subsets("cofw") == ("full",)
    assert csv_name("wflw", "test") == "face_landmarks_wflw_test.csv"
    assert csv_name("wflw", "test", "largepose", with_box=True) == "face_landmarks_wflw_test_largepose_with_box.csv"
    assert csv_name("300w", "test", "full") == "face_landmarks_300w_valid.csv"
    assert csv_name("aflw", "train") == "face_landmarks_aflw_train.csv"
    assert get_dataset("cofw").style == "cofw" and get_dataset("aflw").box_size
    assert dataset_for_points(68) == "300w" and dataset_for_points(19) == "aflw"
    with pytest.raises(DatasetError, match="unknown dataset 'lfw'; known datasets: wflw, 300w, cofw, aflw"):
        get_dataset("lfw")
    with pytest.raises(DatasetError, match="unknown test subset 'pose'.*largepose"):
        csv_name("wflw", "test", "pose")
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        csv_name("wflw", "val")
    with pytest.raises(DatasetError, match="no dataset with 7 points"):
        dataset_for_points(7)


def test_csv_path_prefers_with_box_and_paths_override(tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    plain = folder / "face_landmarks_cofw_test.csv"
    plain.write_text("filename,landmark_0_x,landmark_0_y\n")
    paths = DatasetPaths(annotations=str(folder))
    assert csv_path("cofw", "test", paths=paths) == plain
    boxed = folder / "face_landmarks_cofw_test_with_box.csv"
    boxed.write_text("")
    assert csv_path("cofw", "test", paths=paths) == boxed
    assert images_dir("cofw", paths=paths) == folder / "images"
    cfg = DataConfig(root=str(tmp_path), paths={"cofw": DatasetPaths(images="/imgs")})
    assert images_dir("cofw", cfg) == Path("/imgs")
    with pytest.raises(DatasetError, match=r"cofw test/full: neither .*cofw/face_landmarks_cofw_test_with_box"):
        csv_path("cofw", "test", root=tmp_path)


def test_data_provenance(tmp_path):
    assert data_provenance(tmp_path) == "real"
    (tmp_path / "synthface.json").write_text(json.dumps({"generator": "synthface", "scale": 0.02, "seed": 3}))
    assert data_provenance(tmp_path) == "synthetic(scale=0.02,seed=3)"
    assert data_provenance(DataConfig(root=str(tmp_path))) == "synthetic(scale=0.02,seed=3)"
    (tmp_path / "synthface.json").write_text("{")
    with pytest.raises(DatasetError, match="synthface.json: unreadable SynthFace marker"):
        data_provenance(tmp_path)


def test_registry_yaml_adds_a_dataset_without_code(tmp_path):
    reg = tmp_path / "mine.yaml"
    reg.write_text(
        "schemes:\n"
        "  - {name: tri3, num_points: 3, points: [{names: [eye_l, eye_r, mouth]}], flip: [[0, 1]],\n"
        "     normalizer: {kind: interocular, points: [0, 1]}}\n"
        "datasets:\n"
        "  - {name: tri, scheme: tri3, train: tri_train, test: {full: tri_test, hard: tri_test_hard}}\n")
    data = tmp_path / "tri"
    data.mkdir()
    (data / "face_landmarks_tri_test_hard.csv").write_text(
        "image_name,scale,center_w,center_h,original_0_x,original_0_y,original_1_x,original_1_y,"
        "original_2_x,original_2_y\na.jpg,1,50,50,30,40,70,40,50,80")   # no final newline
    cfg = DataConfig(root=str(tmp_path), registry=(str(reg),))
    aset = load_split("tri", "test", "hard", root=cfg)
    assert aset.scheme == "tri3" and len(aset) == 1 and test_subsets("tri") == ("full", "hard")
    assert normalizers(aset).tolist() == [40.0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  - {name: x, scheme: nope5, test: {full: x_test}}\n")
    with pytest.raises(DatasetError, match=r"bad.yaml: datasets\[0\]: dataset x: unknown scheme 'nope5'"):
        register_file(bad)
    # names become metric keys, file names and folders: a registry on shared storage cannot climb out
    for i, (entry, where) in enumerate([("{name: ../../x, scheme: tri3, test: {full: x_test}}", "dataset name"),
                                        ("{name: y, scheme: tri3, test: {../up: y_test}}", r"dataset y\.test\.\.\./up"),
                                        ("{name: z, scheme: tri3, test: {full: /etc/z}}", r"dataset z\.test\.full"),
                                        ("{name: w, scheme: tri3, train: ../w, test: {full: w_t}}", r"dataset w\.train")]):
        bad = tmp_path / f"bad{i}.yaml"
        bad.write_text(f"datasets:\n  - {entry}\n")
        with pytest.raises(DatasetError, match=rf"bad{i}.yaml: datasets\[0\]: {where}"):
            register_file(bad)


# -- the real files --------------------------------------------------------------------------

@needs_shared
@pytest.mark.parametrize("key", sorted(_ROWS))
def test_real_files_row_counts(key):
    dataset, split, subset = key
    folder = ANNOTATIONS / dataset
    plain = read_csv(folder / csv_name(dataset, split, subset), dataset, get_dataset(dataset).scheme)
    boxed = load_split(dataset, split, subset, root=ANNOTATIONS)
    assert len(plain) == len(boxed) == _ROWS[key]
    assert boxed.source.endswith("_with_box.csv") and boxed.has_boxes and not plain.has_boxes
    # the public _with_box files list the same faces, not always in the same order
    assert sorted(plain.images) == sorted(boxed.images)
    assert np.isclose(np.sort(plain.landmarks.sum(axis=(1, 2))), np.sort(boxed.landmarks.sum(axis=(1, 2)))).all()
    assert boxed.landmarks.dtype == np.float32 and (boxed.scales > 0).all()
    norm = normalizers(boxed)
    assert norm.shape == (len(boxed),) and (norm > 0).all()
    if dataset == "aflw":
        assert np.allclose(norm, boxed.box_sizes) and np.allclose(boxed.box_sizes, boxed.scales * 200, rtol=0.02, atol=1)


@needs_shared
def test_real_cofw_centre_scale_from_landmark_box():
    aset = load_split("cofw", "test", root=ANNOTATIONS)
    lm = aset.landmarks[0].astype(np.float64)
    side = max(np.ceil(lm[:, 0].max()) - np.floor(lm[:, 0].min()), np.ceil(lm[:, 1].max()) - np.floor(lm[:, 1].min()))
    assert aset.scales[0] == pytest.approx(side / 200)
    assert aset.centers[0, 0] == pytest.approx((np.floor(lm[:, 0].min()) + np.ceil(lm[:, 0].max())) / 2)


@needs_shared
@pytest.mark.parametrize("dataset,subset", [("wflw", "makeup"), ("cofw", "full"), ("aflw", "frontal")])
def test_real_round_trip_is_byte_exact_in_values(tmp_path, dataset, subset):
    aset = load_split(dataset, "test", subset, root=ANNOTATIONS)
    for with_box in (True, False):
        out = write_csv(aset, tmp_path / csv_name(dataset, "test", subset, with_box), with_box=with_box)
        back = read_csv(out, dataset, aset.scheme)
        assert back.images == aset.images
        for f in ("landmarks", "centers", "scales", "box_sizes"):
            assert np.array_equal(getattr(back, f), getattr(aset, f), equal_nan=True), f
        assert np.array_equal(back.boxes, aset.boxes) if with_box else not back.has_boxes
    src_header = (ANNOTATIONS / dataset / csv_name(dataset, "test", subset, True)).open("rb").readline()
    assert (tmp_path / csv_name(dataset, "test", subset, True)).open("rb").readline() == src_header
    assert src_header.endswith(b"\r\n")


# -- synthetic sets and bad input ------------------------------------------------------------

def _aset(n=3, k=5, boxes=True, dataset="", seed=0) -> AnnotationSet:
    rng = np.random.default_rng(seed)
    lm = (rng.uniform(20, 80, (n, k, 2))).astype(np.float32)
    centers, scales = landmark_box(lm)
    box = np.concatenate([lm.min(1) - 2, lm.max(1) + 2], axis=1).astype(np.float32)
    return AnnotationSet(dataset=dataset, scheme="", source="mem", images=tuple(f"d/{i}.jpg" for i in range(n)),
                         landmarks=lm, centers=centers, scales=scales,
                         boxes=box if boxes else np.full((n, 4), np.nan, np.float32),
                         box_sizes=(scales * 200).astype(np.float32))


@pytest.mark.parametrize("style", ["original", "cofw"])
def test_round_trip_both_styles(tmp_path, style):
    a = _aset()
    out = write_csv(a, tmp_path / "x.csv", style=style, box_size=(style == "original"))
    back = read_csv(out)
    assert back.images == a.images and np.array_equal(back.landmarks, a.landmarks)
    assert np.array_equal(back.boxes, a.boxes) and np.allclose(back.scales, a.scales)
    head = out.read_text().splitlines()[0].split(",")
    assert head[0] == ("image_name" if style == "original" else "filename")
    assert head[-1] == ("original_4_y" if style == "original" else "landmark_4_y")
    sub = back.subset([2, 0])
    assert sub.images == ("d/2.jpg", "d/0.jpg") and np.array_equal(sub.landmarks[1], a.landmarks[0])
    assert len(back.subset(np.array([True, False, True]))) == 2


_HEAD = "image_name,scale,center_w,center_h,left,top,right,bottom,original_0_x,original_0_y,original_1_x,original_1_y"
_GOOD = "a.jpg,0.5,10,10,0,0,20,20,1,2,3,4"


@pytest.mark.parametrize("rows,match", [
    ([_GOOD, "b.jpg,0.5,10,10,0,0,20,20,1,nan,3,4"], r"row 2: column 'original_0_y' is 'nan'"),
    ([_GOOD, _GOOD, "c.jpg,0.5,10,10,0,0,20,20,1,2,inf,4"], r"row 3: column 'original_1_x' is 'inf'"),
    (["b.jpg,0.5,10,10,0,0,20,20,1,2,3,"], r"row 1: column 'original_1_y' is ''"),
    ([_GOOD, "b.jpg,0.5,10,10,0,0,20,20,1,2,3"], r"row 2: 11 fields, header has 12"),
    (["b.jpg,0.5,10,10,0,0,20,20,1,2,3,x"], r"row 1: column 'original_1_y' is 'x'"),
    ([_GOOD, "b.jpg,0,10,10,0,0,20,20,1,2,3,4"], r"row 2: scale must be positive"),
    (["b.jpg,0.5,10,10,5,0,5,20,1,2,3,4"], r"row 1: box has zero or negative size"),
    ([",0.5,10,10,0,0,20,20,1,2,3,4"], r"row 1: empty image_name"),
    (["b.jpg,0.5,10,10,0,0,20,20,1,2,3,4,5,6"], r"row 1: 14 fields, header has 12"),
])
def test_bad_rows_name_file_and_row(tmp_path, rows, match):
    f = tmp_path / "bad.csv"
    f.write_text("\n".join([_HEAD, *rows]))
    with pytest.raises(AnnotationError, match=match) as e:
        read_csv(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(AnnotationError, match=r"missing.csv: cannot read annotation file"):
        read_csv(tmp_path / "missing.csv")
    f = tmp_path / "pts.csv"
    f.write_text(f"{_HEAD}\n{_GOOD}\n")
    with pytest.raises(AnnotationError, match=r"pts.csv: header has 2 points, scheme wflw98 expects 98"):
        read_csv(f, "wflw", "wflw98")
    f.write_text("name,scale\n")
    with pytest.raises(AnnotationError, match=r"pts.csv: header: first column"):
        read_csv(f)
    f.write_text(_HEAD.replace("original_1_x", "original_2_x") + "\n")
    with pytest.raises(AnnotationError, match=r"pts.csv: header: column 11 is 'original_2_x'"):
        read_csv(f)
    f.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AnnotationError, match="pts.csv"):
        read_csv(f)
    a = _aset(boxes=False)
    with pytest.raises(AnnotationError, match="cannot write boxes"):
        write_csv(a, tmp_path / "o.csv", with_box=True)


def test_normaliser_errors_name_the_row(tmp_path):
    a = _aset(k=98, dataset="wflw")
    a = AnnotationSet(**{**a.__dict__, "scheme": "wflw98"})
    a.landmarks[1, 72] = a.landmarks[1, 60]
    with pytest.raises(AnnotationError, match=r"mem: row 2: NME normaliser \(distance of points 60 and 72\) is 0"):
        normalizers(a)
