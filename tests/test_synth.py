"""SynthFace: determinism, counts, real layout, bad input, skip/force, sheet (tiny scales, real components)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from atf import datasets, keys
from atf.schemes import get_scheme
from atf.synth import generate
from atf.synth import presets as P
from atf.synth.cli import sheet_main, synth_main
from atf.synth.generate import SynthError, make_sample, plan
from atf.synth.presets import PresetError

TINY = 0.001  # every group and subset at the minimum count


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = generate(tmp_path / "a", TINY, seed=3, presets=["300w", "cofw"], workers=1)
    b = generate(tmp_path / "b", TINY, seed=3, presets=["300w", "cofw"], workers=2)
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b
    assert len(da) > 40 and da == db
    assert any(k.endswith(".jpg") for k in da) and any(k.endswith("_with_box.csv") for k in da)


def test_other_seed_other_faces():
    job3 = plan(TINY, 3, ["wflw"])[0]
    job4 = plan(TINY, 4, ["wflw"])[0]
    img3, row3 = make_sample(job3)
    img3b, row3b = make_sample(job3)
    img4, row4 = make_sample(job4)
    assert np.array_equal(img3, img3b) and np.array_equal(row3["landmarks"], row3b["landmarks"])
    assert not np.allclose(row3["landmarks"], row4["landmarks"])


def test_counts_per_preset_and_subset(synth_root):
    from conftest import SYNTH_SCALE
    marker = json.loads((synth_root / keys.SYNTH_MARKER).read_text())
    assert marker["generator"] == "synthface" and marker["version"] == 1 and marker["seed"] == 0
    assert marker["presets"] == ["wflw", "300w", "cofw", "aflw"]
    c = marker["counts"]
    n = lambda real: P.scaled_count(real, SYNTH_SCALE)  # noqa: E731
    assert c["wflw"]["train"] == n(7500) and c["aflw"]["train"] == n(20000)
    assert c["300w"]["train"] == n(3148) and c["cofw"]["train"] == n(1345)
    assert c["wflw"]["test"] == n(2500)
    for subset, real in (("largepose", 326), ("expression", 314), ("illumination", 698), ("makeup", 206),
                         ("occlusion", 736), ("blur", 773)):
        assert c["wflw"][f"test_{subset}"] == n(real), subset
    assert c["300w"]["valid"] == c["300w"]["valid_common"] + c["300w"]["valid_challenge"]
    assert c["300w"]["test"] == n(600) and c["cofw"]["test"] == n(507)
    assert c["aflw"]["test"] == n(1314) + n(3072) and c["aflw"]["test_frontal"] == n(1314)
    # relative sizes follow the real ones
    assert c["aflw"]["train"] > c["wflw"]["train"] > c["300w"]["train"] > c["cofw"]["train"]


@pytest.mark.parametrize("name", ["wflw", "300w", "cofw", "aflw"])
def test_every_registry_split_reads_back(synth_root, name):
    spec = datasets.get_dataset(name)
    k = get_scheme(spec.scheme).num_points
    marker = json.loads((synth_root / keys.SYNTH_MARKER).read_text())
    splits = [("train", "full")] + [("test", s) for s in spec.subsets]
    for split, subset in splits:
        aset = datasets.load_split(name, split, subset, root=synth_root)
        stem = datasets.csv_name(name, split, subset)[len(f"face_landmarks_{name}_"):-len(".csv")]
        assert len(aset) == marker["counts"][name][stem] > 0
        assert aset.landmarks.shape == (len(aset), k, 2)
        assert aset.has_boxes
        assert np.isfinite(datasets.normalizers(aset)).all()
        img = cv2.imread(str(datasets.images_dir(name, synth_root) / aset.images[0]))
        assert img is not None and img.shape == (176, 176, 3)
        inside = (aset.landmarks > -5) & (aset.landmarks < 181)
        assert inside.mean() > 0.99
    plain = synth_root / name / datasets.csv_name(name, "train")
    assert plain.read_bytes().count(b"\r\n") == marker["counts"][name]["train"] + 1


def test_subsets_are_subsets_of_full(synth_root):
    full = set(datasets.load_split("wflw", "test", root=synth_root).images)
    for s in ("largepose", "occlusion", "blur"):
        assert set(datasets.load_split("wflw", "test", s, root=synth_root).images) <= full
    frontal = datasets.load_split("aflw", "test", "frontal", root=synth_root)
    assert set(frontal.images) <= set(datasets.load_split("aflw", "test", root=synth_root).images)
    assert datasets.data_provenance(synth_root).startswith("synthetic(")


def test_preset_files_match_the_registry():
    for name, preset in P.presets().items():
        spec = datasets.get_dataset(name)
        stems = {spec.train, *dict(spec.test).values()}
        made = {f"{name}_{suffix}" for suffix, _ in preset.files}
        assert made == stems, name
        assert preset.scheme == spec.scheme


def test_large_pose_profiles_differ():
    """AFLW holds yaws that WFLW's non-largepose faces lack: the condition ATF exploits."""
    rng = np.random.default_rng(0)
    no_flags = np.zeros(len(keys.WFLW_ATTRIBUTES), bool)
    pose = np.zeros(len(keys.WFLW_ATTRIBUTES), bool)
    pose[keys.WFLW_ATTRIBUTES.index("largepose")] = True
    aflw = [abs(P.sample_face(rng, P.get_preset("aflw").group("train"), pose).yaw) for _ in range(300)]
    wflw = [abs(P.sample_face(rng, P.get_preset("wflw").group("train"), pose).yaw) for _ in range(300)]
    assert max(aflw) > 89 and max(wflw) <= 80
    frontal = [abs(P.sample_face(rng, P.get_preset("aflw").group("test_frontal"), no_flags).yaw)
               for _ in range(300)]
    assert max(frontal) <= 20


@pytest.mark.parametrize("kwargs, match", [
    ({"scale": 0}, "scale must be a positive"),
    ({"scale": -0.5}, "scale must be a positive"),
    ({"scale": float("nan")}, "scale must be a positive"),
    ({"presets": ["wflw", "lfpw"]}, "unknown preset 'lfpw'"),
    ({"presets": []}, "at least one preset"),
    ({"workers": 0}, "workers must be >= 1"),
])
def test_bad_input_is_refused(tmp_path, kwargs, match):
    args = {"scale": TINY, "presets": ["cofw"], **kwargs}
    with pytest.raises((SynthError, PresetError), match=match):
        generate(tmp_path / "out", seed=0, **args)
    assert not (tmp_path / "out" / keys.SYNTH_MARKER).exists()


def test_skip_existing_and_force(tmp_path, capsys):
    out = tmp_path / "d"
    argv = ["--out", str(out), "--scale", str(TINY), "--seed", "1", "--presets", "cofw", "--workers", "1"]
    assert synth_main(argv) == 0
    marker = (out / keys.SYNTH_MARKER).read_text()
    csv = out / "cofw" / "face_landmarks_cofw_train.csv"
    before = csv.stat().st_mtime_ns
    assert synth_main(argv + ["--skip-existing"]) == 0           # same dataset: nothing rewritten
    assert csv.stat().st_mtime_ns == before and (out / keys.SYNTH_MARKER).read_text() == marker
    capsys.readouterr()
    assert synth_main(argv) == 2                                  # same dataset, no flag: refused
    assert "holds this dataset already" in capsys.readouterr().err
    other = ["--out", str(out), "--scale", str(TINY), "--seed", "2", "--presets", "cofw", "--workers", "1"]
    assert synth_main(other + ["--skip-existing"]) == 2           # different dataset: refused
    err = capsys.readouterr().err.strip()
    assert "different SynthFace dataset" in err and str(out) in err and len(err.splitlines()) == 1
    assert (out / keys.SYNTH_MARKER).read_text() == marker
    assert synth_main(other + ["--force"]) == 0                   # --force replaces it
    assert json.loads((out / keys.SYNTH_MARKER).read_text())["seed"] == 2
    assert csv.read_bytes() != b"" and csv.stat().st_mtime_ns != before


def test_force_removes_the_replaced_sets_datasets_only(tmp_path):
    generate(tmp_path, TINY, seed=0, presets=["cofw", "300w"])
    (tmp_path / "mine.txt").write_text("keep")
    marker = generate(tmp_path, TINY, seed=1, presets=["cofw"], force=True)
    assert marker["presets"] == ["cofw"] and not (tmp_path / "300w").exists()
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_foreign_folder_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert synth_main(["--out", str(tmp_path), "--scale", str(TINY), "--presets", "cofw"]) == 2
    assert "not a SynthFace dataset" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_rejects_bad_numbers(capsys):
    for argv in (["--out", "x", "--scale", "0"], ["--out", "x", "--scale", "-1"], ["--out", "x", "--workers", "0"]):
        with pytest.raises(SystemExit) as e:
            synth_main(argv)
        assert e.value.code == 2
    assert "must be" in capsys.readouterr().err
    assert synth_main(["--out", "x", "--presets", "wflw,nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_sheet(synth_root, tmp_path):
    out = tmp_path / "sheet.png"
    assert sheet_main(["--data", str(synth_root), "--out", str(out), "--per-preset", "3"]) == 0
    img = cv2.imread(str(out))
    assert img.shape == (4 * 176, 3 * 176, 3)
    assert img.std() > 20
    assert sheet_main(["--data", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    with pytest.raises(SystemExit) as e:
        sheet_main(["--data", str(synth_root), "--out", str(out), "--per-preset", "0"])
    assert e.value.code == 2    # a usage error, not a crash


def test_preset_order_does_not_matter(tmp_path):
    a = generate(tmp_path / "a", TINY, seed=0, presets=["cofw", "300w"])
    again = generate(tmp_path / "a", TINY, seed=0, presets=["300w", "cofw"], skip_existing=True)
    assert a == again and a["presets"] == ["300w", "cofw"]


def test_landmarks_sit_on_drawn_features():
    """Learnable from pixels: pupils are dark blobs and the jaw landmarks lie on an edge."""
    from atf.synth.generate import Job
    pupil, cheek, jaw_grad, inner_grad = [], [], [], []
    for i in range(12):
        img, row = make_sample(Job("wflw", "train", i, (False,) * 6, seed=5))
        grey = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 1.2)
        grad = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
        grad = cv2.dilate(grad, np.ones((3, 3), np.uint8))  # within a pixel of the landmark
        lm = np.round(row["landmarks"]).astype(int)
        at = lambda a, idx: a[lm[idx, 1], lm[idx, 0]]  # noqa: E731
        pupil.append(at(grey, [96, 97]).mean())
        cheek.append(grey[(lm[[5, 27], 1] + lm[[54, 54], 1]) // 2, (lm[[5, 27], 0] + lm[[54, 54], 0]) // 2].mean())
        jaw_grad.append(np.median(at(grad, list(range(4, 29)))))
        cheeks = ((lm[[8, 24]] + lm[[54, 54]]) // 2)
        inner_grad.append(grad[cheeks[:, 1], cheeks[:, 0]].mean())
    assert np.median(pupil) < 0.6 * np.median(cheek)
    assert np.median(jaw_grad) > 2 * np.median(inner_grad)
