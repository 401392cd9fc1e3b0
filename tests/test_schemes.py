"""Schemes: flip tables, official/rich similar pairs, registry errors, checks on real faces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from _shared import ANNOTATIONS, needs_shared

from atf.datasets import dataset_names, get_dataset, load_split
from atf.schemes import (
    OFFICIAL_SEMANTIC,
    SchemeError,
    get_scheme,
    pair_names,
    register_file,
    scheme_from_dict,
    scheme_names,
    similar_pairs,
)

SCHEMES = ("wflw98", "300w68", "cofw29", "aflw19")

# REFERENCE.md, "Horizontal flip permutations (official ATF configs)"
_REF_FLIP = {
    "wflw98": list(range(32, -1, -1)) + [
        46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38, 51, 52, 53, 54, 59, 58, 57, 56,
        55, 72, 71, 70, 69, 68, 75, 74, 73, 64, 63, 62, 61, 60, 67, 66, 65, 82, 81, 80, 79, 78, 77, 76, 87, 86,
        85, 84, 83, 92, 91, 90, 89, 88, 95, 94, 93, 97, 96],
    "300w68": list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31] + [
        45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
        64, 63, 62, 61, 60, 67, 66, 65],
    "cofw29": [1, 0, 3, 2, 6, 7, 4, 5, 9, 8, 11, 10, 14, 15, 12, 13, 17, 16, 19, 18, 20, 21, 23, 22, 24, 25, 26,
               27, 28],
    "aflw19": [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18],
}
# REFERENCE.md, "Similar landmarks used by the official ATF code"
_REF_SIMILAR = {
    "wflw98": [33, 46, 60, 64, 68, 72, 54, 76, 82, 16],
    "300w68": [17, 26, 36, 39, 42, 45, 30, 48, 54, 8],
    "cofw29": [0, 1, 8, 10, 11, 9, 20, 22, 23, 28],
    "aflw19": [0, 5, 6, 8, 9, 11, 13, 15, 17, 18],
}
_REF_NORM = {"wflw98": (60, 72), "300w68": (36, 45), "cofw29": (8, 9), "aflw19": ()}


@pytest.mark.parametrize("name", SCHEMES)
def test_flip_matches_reference_and_is_an_involution(name):
    s = get_scheme(name)
    assert s.num_points == len(s.point_names) == len(s.flip_perm)
    assert s.flip_perm.tolist() == _REF_FLIP[name]
    assert sorted(s.flip_perm.tolist()) == list(range(s.num_points))
    assert (s.flip_perm[s.flip_perm] == np.arange(s.num_points)).all()
    assert s.normalizer.points == _REF_NORM[name]
    assert s.normalizer.kind == ("box" if name == "aflw19" else "interocular")


@pytest.mark.parametrize("name", SCHEMES)
def test_point_names_agree_with_declared_sides(name):
    s = get_scheme(name)
    left, right = set(s.left), set(s.right)
    assert not left & right
    for i, n in enumerate(s.point_names):
        if "_left" in n:
            assert i in left, f"{name}: {n} is named left but is not declared on the left"
        if "_right" in n:
            assert i in right, f"{name}: {n} is named right but is not declared on the right"
    for sem, i in s.semantic.items():
        side = "left" if sem.endswith("_left") else "right" if sem.endswith("_right") else None
        if side:
            assert i in (left if side == "left" else right), f"{name}: semantic {sem} -> {i} on the wrong side"


@pytest.mark.parametrize("a", SCHEMES)
@pytest.mark.parametrize("b", SCHEMES)
def test_official_pairs_match_reference(a, b):
    pairs = similar_pairs(a, b, "official") if a != b else None
    if pairs is None:
        assert (similar_pairs(a, a)[:, 0] == np.arange(get_scheme(a).num_points)).all()
        return
    assert pairs.shape == (10, 2)
    assert pairs[:, 0].tolist() == _REF_SIMILAR[a]
    assert pairs[:, 1].tolist() == _REF_SIMILAR[b]


def test_rich_tables_are_consistent():
    for i, a in enumerate(SCHEMES):
        for b in SCHEMES[i + 1:]:
            rich = similar_pairs(a, b, "rich")
            assert 8 <= len(rich), (a, b)
            assert (rich[:10] == similar_pairs(a, b, "official")).all(), "official pairs come first"
            assert len(set(rich[:, 0])) == len(rich) and len(set(rich[:, 1])) == len(rich), "one-to-one"
            # the reverse direction is the same table with columns swapped
            assert (similar_pairs(b, a, "rich") == rich[:, ::-1]).all()
            # symmetric under the mirror: the mirror image of every pair is also a pair
            fa, fb = get_scheme(a).flip_perm, get_scheme(b).flip_perm
            rows = {tuple(r) for r in rich.tolist()}
            assert {(int(fa[x]), int(fb[y])) for x, y in rows} == rows, (a, b)
    assert ("pupil_left", "eye_centre_left") in pair_names("wflw98", "aflw19", "rich")


@needs_shared
def test_rich_tables_regenerate_from_real_annotations():
    spec = importlib.util.spec_from_file_location(
        "derive_rich_pairs", Path(__file__).resolve().parents[1] / "tools" / "derive_rich_pairs.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    committed = (Path(__file__).resolve().parents[1] / "atf" / "schemes" / "pairs_rich.yaml").read_text()
    assert tool.build(ANNOTATIONS) == committed
    # beyond the 10 official anchors, every pair lies within the stated threshold
    tables: list[list[float]] = []
    for line in committed.splitlines():
        if line.startswith("  ") and not line.startswith("    "):
            tables.append([])
        elif line.startswith("    - "):
            tables[-1].append(float(line.rsplit("#", 1)[1]))
    assert len(tables) == 6
    for dists in tables:
        assert len(dists) >= 10 and max(dists[10:], default=0.0) < tool.THRESHOLD


@needs_shared
@pytest.mark.parametrize("dataset", ["wflw", "300w", "cofw", "aflw"])
def test_flip_on_real_faces(dataset):
    subsets = {"wflw": ["largepose", "blur"], "300w": ["full"], "cofw": ["full"], "aflw": ["frontal"]}[dataset]
    lm = np.concatenate([load_split(dataset, "test", s, root=ANNOTATIONS).landmarks for s in subsets])
    s = get_scheme(get_dataset(dataset).scheme)
    width = 2000.0

    def mirror(x, perm):
        m = x.copy()
        m[..., 0] = width - m[..., 0]
        return m[:, perm]

    once = mirror(lm, s.flip_perm)
    assert np.allclose(mirror(once, s.flip_perm), lm, atol=1e-3), "flipping twice is the identity"

    def left_ok(m):
        mid = m[..., 0].mean(axis=1)
        left, right = list(s.left), list(s.right)
        centroid = (m[:, left, 0].mean(axis=1) < mid) & (m[:, right, 0].mean(axis=1) > mid)
        pairwise = (m[:, left, 0] < m[:, right, 0]).mean(axis=0)
        return centroid.mean(), pairwise.min()

    centroid, worst_pair = left_ok(once)
    assert centroid >= 0.95, f"{dataset}: left points left of the midline on only {centroid:.1%} of faces"
    assert worst_pair >= 0.95, f"{dataset}: some left point right of its partner on > 5% of faces"
    # the check has teeth: mirroring without the permutation puts left points on the right
    assert left_ok(mirror(lm, np.arange(s.num_points)))[0] < 0.05


def test_unknown_scheme_and_table():
    with pytest.raises(SchemeError, match="unknown scheme 'nope'.*wflw98"):
        get_scheme("nope")
    with pytest.raises(SchemeError, match="unknown table"):
        similar_pairs("wflw98", "300w68", "fancy")


def _toy(**over):
    d = {"name": "toy5", "num_points": 5,
         "points": [{"names": ["eye_outer_left", "eye_outer_right"]}, {"group": "mid", "count": 3}],
         "flip": [[0, 1]], "normalizer": {"kind": "interocular", "points": ["eye_outer_left", 1]},
         "semantic": {"nose_tip": "mid_1"}}
    d.update(over)
    return d


def test_scheme_from_dict_builds_and_validates():
    s = scheme_from_dict(_toy(), "toy.yaml")
    assert s.point_names == ("eye_outer_left", "eye_outer_right", "mid_0", "mid_1", "mid_2")
    assert s.flip_perm.tolist() == [1, 0, 2, 3, 4] and s.normalizer.points == (0, 1)
    assert s.semantic == {"nose_tip": 3} and s.index("mid_2") == 4
    bad = [
        (_toy(flip=[[0, 1], [1, 2]]), "paired twice"),
        (_toy(flip=[["0..1", "2"]]), "differ in length"),
        (_toy(flip=[[0, 7]]), "bad pair"),
        (_toy(flip=[[0, 0]]), "bad pair"),
        (_toy(num_points=6), "5 names generated"),
        (_toy(semantic={"nose_tip": "ear"}), "semantic.nose_tip"),
        (_toy(normalizer={"kind": "interocular", "points": [0]}), "normalizer.points"),
        (_toy(colour="red"), "unknown key 'colour'"),
    ]
    for spec, msg in bad:
        with pytest.raises(SchemeError, match=msg) as e:
            scheme_from_dict(spec, "toy.yaml")
        assert "toy.yaml" in str(e.value) and "\n" not in str(e.value)


def test_register_file_adds_scheme_and_pairs(tmp_path):
    import yaml
    f = tmp_path / "novel.yaml"
    toy = _toy(name="toy5reg", semantic={n: 0 for n in OFFICIAL_SEMANTIC})
    f.write_text(yaml.safe_dump({"schemes": [toy], "pairs": {"toy5reg/wflw98": [["mid_1", "nose_tip"],
                                                                                   [0, 60]]}}))
    assert register_file(f) == ["toy5reg"]
    assert "toy5reg" in scheme_names()
    assert similar_pairs("wflw98", "toy5reg", "rich").tolist() == [[54, 3], [60, 0]]
    assert similar_pairs("toy5reg", "300w68", "official").shape == (10, 2)
    with pytest.raises(SchemeError, match="no rich pair table"):
        similar_pairs("toy5reg", "cofw29", "rich")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"pairs": {"wflw98/cofw29": [["eye_left_0", "third_eye"]]}}))
    with pytest.raises(SchemeError, match=r"bad.yaml: pairs.wflw98/cofw29\[0\].*no point named 'third_eye'"):
        register_file(bad)
    twice = tmp_path / "twice.yaml"
    twice.write_text(yaml.safe_dump({"pairs": {"wflw98/cofw29": [[60, 8], ["eye_left_0", 9]]}}))
    with pytest.raises(SchemeError, match=r"twice.yaml: pairs.wflw98/cofw29\[1\]: point 'eye_left_0' .* twice"):
        register_file(twice)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"pairs": {"wflw98/abc3": []}}))
    with pytest.raises(SchemeError, match=r"unknown.yaml: pairs.wflw98/abc3: unknown scheme 'abc3'"):
        register_file(unknown)


def test_every_builtin_dataset_has_a_scheme():
    assert {get_dataset(d).scheme for d in dataset_names()} >= set(SCHEMES)
