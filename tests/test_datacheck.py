"""`atf-data check` and data.bad_rows: every bad row of a damaged copy of SynthFace is named."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from atf.config import ConfigError, RunConfig, override
from atf.datacheck import PROBLEMS_FILE, DataCheckError, check_csv, check_root

TINY = {"data.max_train": 24, "data.max_test": 8, "optim.epochs": 1, "optim.batch_size": 8,
        "model.width_mult": 0.25, "model.input_size": 48}


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _write(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.fixture()
def damaged(synth_root, tmp_path):
    """A copy of the tiny SynthFace root with one bad row of each kind in WFLW's train file (the one
    runs read) and an AFLW test subset left with its header only. Returns (root, expected)."""
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    path = root / "wflw" / "face_landmarks_wflw_train_with_box.csv"
    rows = _rows(path)
    head, data = rows[0], rows[1:]
    x0 = head.index("original_0_x")
    data[1][x0 + 1] = "nan"                              # row 2: NaN
    data[2][x0] = "5000"                                 # row 3: a point far outside its 176 px image
    data[3][0] = "../../../etc/passwd"                   # row 4: escapes the images folder
    data[4][0] = "/etc/hostname"                         # row 5: absolute
    (root / "wflw" / "images" / data[5][0]).unlink()     # row 6: image missing
    (root / "wflw" / "images" / data[6][0]).write_bytes(b"\xff\xd8 not a jpeg")  # row 7: does not decode
    data[7][head.index("right")] = data[7][head.index("left")]  # row 8: zero-width box
    data[8] = data[8][:10]                               # row 9: truncated
    for i in range(x0, len(head)):                       # row 10: every point on one spot
        data[9][i] = "50"
    _write(path, [head, *data])
    empty = root / "aflw" / "face_landmarks_aflw_test_frontal_with_box.csv"
    _write(empty, _rows(empty)[:1])
    expected = {str(path): {2: "'original_0_y' is 'nan'", 3: "outside the 176x176 image",
                            4: "leaves the images folder", 5: "leaves the images folder",
                            6: "no such file", 7: "does not decode", 8: "degenerate box",
                            9: "fields, header has", 10: "degenerate landmarks"},
                str(empty): {0: "no data rows"},  # and the plain file shares the two broken images:
                str(root / "wflw" / "face_landmarks_wflw_train.csv"): {6: "no such file", 7: "does not decode"}}
    return root, expected


def test_check_names_every_bad_row(damaged, capsys):
    root, expected = damaged
    problems = check_root(root)
    got: dict[str, dict[int, str]] = {}
    for p in problems:
        got.setdefault(p.file, {})[p.row] = str(p)
    assert set(got) == set(expected)  # nothing else in the copy is flagged
    for file, rows in expected.items():
        assert set(got[file]) == set(rows), file
        for row, text in rows.items():
            assert text in got[file][row] and file in got[file][row]
            if row:
                assert f": row {row}: " in got[file][row]
    from atf.cli.data import main
    assert main(["check", str(root)]) == 1
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == len(problems) and "problem(s)" in err
    assert main(["check", str(damaged[0].parent / "nowhere")]) == 1


def test_clean_data_passes(synth_root, capsys):
    from atf.cli.data import main
    assert main(["check", str(synth_root)]) == 0
    assert "OK, no problems" in capsys.readouterr().out


def test_margin_allows_points_slightly_outside(synth_root, tmp_path):
    src = synth_root / "wflw" / "face_landmarks_wflw_train_with_box.csv"
    rows = _rows(src)
    x0 = rows[0].index("original_0_x")
    rows[1][x0] = "-10"  # a contour point cut by the border: real annotations have these
    _write(tmp_path / "a.csv", rows)
    assert check_csv(tmp_path / "a.csv", synth_root / "wflw" / "images", 98) == []


def test_refuse_by_default_skip_lists_rows(damaged, tmp_path):
    from atf.train import train
    root, expected = damaged
    shutil.copy(root / "aflw" / "face_landmarks_aflw_test_frontal.csv",
                root / "aflw" / "face_landmarks_aflw_test_frontal_with_box.csv")  # only bad rows remain
    cfg = override(RunConfig(), {**TINY, "data.root": str(root)})
    with pytest.raises(DataCheckError, match=r"9 data problem\(s\): .*wflw_train_with_box.csv: row 2: .*"
                                             r"atf-data check .*data.bad_rows: skip"):
        train(cfg, tmp_path / "refused")
    assert not (tmp_path / "refused" / "checkpoints").exists()  # refused before training
    res = train(override(cfg, {"data.bad_rows": "skip"}), tmp_path / "skipped")
    listed = (tmp_path / "skipped" / PROBLEMS_FILE).read_text().splitlines()
    assert sorted(int(line.split(": row ")[1].split(":")[0]) for line in listed) == list(range(2, 11))
    assert any("9 bad row(s) skipped" in n for n in res.notes)


def test_cli_train_refuses_bad_data_and_bad_ranges(damaged, tmp_path):
    root, _ = damaged
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{root: {root}, max_train: 16}}\noptim: {{epochs: 1}}\n")
    run = [sys.executable, "-m", "atf.cli.train", str(cfg), "--out", str(tmp_path / "o")]
    out = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "wflw_train_with_box.csv: row 2" in out.stderr
    for bad, key in (("optim.lr=-0.001", "optim.lr: -0.001 is out of range"),
                     ("optim.lr=1.0e+30", "optim.lr: 1e+30 is out of range"),
                     ("augment.flip=1.5", "augment.flip: 1.5 is out of range")):
        out = subprocess.run([*run, "--set", bad], capture_output=True, text=True, timeout=300)
        assert out.returncode == 2 and key in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    with pytest.raises(ConfigError, match=r"optim.lr: .* out of range"):
        override(RunConfig(), {"optim.lr": 1e30})


def test_empty_split_names_the_file(synth_root, tmp_path):
    from atf.train import train
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    for name in ("face_landmarks_aflw_train_with_box.csv", "face_landmarks_aflw_train.csv"):
        p = root / "aflw" / name
        _write(p, _rows(p)[:1])
    cfg = override(RunConfig(), {**TINY, "data.root": str(root), "scenario": "atf", "aux": ["aflw"]})
    with pytest.raises(DataCheckError, match=r"face_landmarks_aflw_train_with_box.csv: no data rows"):
        train(cfg, tmp_path / "o")
