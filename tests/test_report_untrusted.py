"""atf-report reads a store and a storage path that several users share: a run id, a tag, a data
root's image names and its files may be crafted or broken. None may run LaTeX, leave a folder, or
cost the report (audit: Fig. 5 names and images, the artifact cache's run ids, LaTeX escaping)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from test_report_store import shared_store

from atf import keys
from atf.datasets import csv_name
from atf.readers import AnnotationSet, write_csv
from reports.collect import DATA_ROOT_PARAM, METRIC_COLUMNS, RUN_COLUMNS, Runs, collect
from reports.compute import compute_table
from reports.figures import ArtifactCache, ced_figures, comparison_figure
from reports.layouts import load_tables
from reports.render import render_index, render_latex, render_markdown

INPUT = "synthetic\\input{/home/u/.netrc}"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri, info = shared_store(tmp_path_factory)
    return uri, info, collect(uri)


def _png_height(path: Path) -> int:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    return int.from_bytes(head[20:24], "big")


# -- LaTeX ----------------------------------------------------------------------------------------

def test_latex_escapes_store_tags():
    r = compute_table(load_tables()["IV"], Runs("none", pd.DataFrame(columns=list(RUN_COLUMNS)),
                                                pd.DataFrame(columns=list(METRIC_COLUMNS))))
    r.data, r.run_ids = (INPUT,), ("a" * 32,)
    r.selection = ("val_{\\input{/etc/passwd}}", "^~{}&%#$_")   # the subscript markup must not carry it
    tex = render_latex(r)
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    assert "\\input" not in body
    assert r"synthetic\textbackslash{}input\{/home/u/.netrc\}" in body
    assert r"val\_\{\textbackslash{}input\{/etc/passwd\}\}" in body
    assert r"\textasciicircum{}\textasciitilde{}\{\}\&\%\#\$\_" in body
    # the labels' mini-markup and symbols still render as before
    assert r"ATF$_{\mathrm{3W}}$ &" in body and r"\quad \textit{paper}" in body



def test_markdown_escapes_store_tags():
    """A tag's `|` or newline would break the tables; its HTML would reach a Markdown preview."""
    r = compute_table(load_tables()["IV"], Runs("none", pd.DataFrame(columns=list(RUN_COLUMNS)),
                                                pd.DataFrame(columns=list(METRIC_COLUMNS))))
    r.data, r.run_ids = ("synthetic|x\n<script>alert(1)</script>",), ("a" * 32,)
    r.selection = ("val [x](http://evil)",)
    md = render_markdown(r, [], [])
    index = render_index([r], {}, [], "sqlite:///m.db", [])
    for text in (md, index):
        assert "<script>" not in text and "&lt;script&gt;" in text
        assert not re.search(r"(?<!\\)\]\(http://evil\)", text)  # no live link
    row = next(line for line in index.splitlines() if line.startswith("| IV |"))
    assert row.count("|") - row.count("\\|") == 6, row  # the table's own separators only
    assert r"synthetic\|x" in md and "Model selection: val \\[x\\](http://evil)" in md

# -- the artifact cache ---------------------------------------------------------------------------

def test_cache_refuses_run_ids_that_are_not_mlflows(tmp_path):
    victim = tmp_path / "x"
    (victim / "predictions").mkdir(parents=True)
    (victim / "predictions" / "a.csv").write_text("secret")
    good, real = "0123456789abcdef" * 2, tmp_path / "real"
    (real / "predictions").mkdir(parents=True)
    (real / "predictions" / "a.csv").write_text("ok")
    link = tmp_path / "link"
    (link / "predictions").parent.mkdir(parents=True)
    os.symlink(victim / "predictions", link / "predictions")
    cache = ArtifactCache(f"sqlite:///{tmp_path / 'none.db'}", {"../../x": str(victim), good: real.as_uri(),
                                                "f" * 32: str(link), "A" * 32: str(real)})
    try:
        for bad in ("../../x", "../" * 8 + "tmp", "A" * 32, "a" * 31, "a" * 32 + "/.."):
            assert cache.get(bad, "predictions/a.csv") is None, bad
        assert cache.get("f" * 32, "predictions/a.csv") is None          # a symlinked artifact folder
        assert cache.get(good, "predictions/a.csv") == real / "predictions" / "a.csv"
        assert not any(cache.dir.iterdir())                               # nothing written for a bad id
    finally:
        cache.close()


# -- Fig. 5 ---------------------------------------------------------------------------------------

def _aset(names: list[str]) -> AnnotationSet:
    angle = np.linspace(0, 2 * np.pi, 98, endpoint=False)
    ring = np.stack([32 + 20 * np.cos(angle), 32 + 20 * np.sin(angle)], axis=1)
    n = len(names)
    return AnnotationSet("wflw", "wflw98", "test", tuple(names), np.repeat(ring[None], n, 0).astype(np.float32),
                         np.full((n, 2), 32, np.float32), np.full(n, 0.3, np.float32),
                         np.full((n, 4), np.nan, np.float32), np.full(n, np.nan, np.float32))


def _fig5_inputs(tmp: Path, runs: Runs, names: list[str]) -> tuple[Runs, dict[str, str]]:
    """A data root whose CSV lists `names` (good, broken and escaping images, all present on
    disk), and every run's predictions of those names in a local artifact folder."""
    images = tmp / "data" / "wflw" / "images"
    images.mkdir(parents=True)
    grey = np.full((64, 64, 3), 128, np.uint8)
    cv2.imwrite(str(images / "good.png"), grey)
    (images / "empty.png").write_bytes(b"")
    (images / "truncated.png").write_bytes((images / "good.png").read_bytes()[:40])
    cv2.imwrite(str(tmp / "data" / "wflw" / "outside.png"), grey)   # "../outside.png"
    cv2.imwrite(str(tmp / "secret.png"), grey)
    os.symlink(tmp / "secret.png", images / "link.png")
    write_csv(_aset(names), tmp / "data" / "wflw" / csv_name("wflw", "test", "full"))
    pred = tmp / "artifacts" / keys.pred_artifact("wflw", "full")
    pred.parent.mkdir(parents=True)
    write_csv(_aset(names), pred)
    moved = Runs(runs.uri, runs.runs.assign(**{DATA_ROOT_PARAM: str(tmp / "data")}), runs.metrics)
    return moved, {r: (tmp / "artifacts").as_uri() for r in moved.runs["run_id"]}


def test_fig5_leaves_out_broken_and_escaping_images(store, tmp_path):
    uri, _, runs = store
    bad = ["empty.png", "../outside.png", "link.png", "truncated.png", str(tmp_path / "a" / "secret.png")]
    moved, uris = _fig5_inputs(tmp_path / "a", runs, bad + ["good.png"])
    cache = ArtifactCache(uri, uris)
    try:
        path, why = comparison_figure(compute_table(load_tables()["I"], moved), moved, cache, tmp_path)
        assert why == "" and _png_height(path) == 260        # one row: good.png, nothing else
    finally:
        cache.close()


def test_fig5_without_usable_images_is_a_note(store, tmp_path, monkeypatch):
    uri, _, runs = store
    moved, uris = _fig5_inputs(tmp_path / "a", runs, ["empty.png", "../outside.png", "link.png"])
    cache = ArtifactCache(uri, uris)
    try:
        result = compute_table(load_tables()["I"], moved)
        path, why = comparison_figure(result, moved, cache, tmp_path)
        assert path is None and why.startswith("Fig. 5 skipped: no readable test images"), why
        monkeypatch.setattr("reports.figures._pairs", lambda r: 1 / 0)   # anything unexpected
        path, why = comparison_figure(result, moved, cache, tmp_path)
        assert path is None and why == "Fig. 5 skipped: drawing it failed (ZeroDivisionError: division by zero)"
    finally:
        cache.close()


def test_a_dollar_tag_does_not_fail_the_figures(store, tmp_path):
    uri, _, runs = store
    result = compute_table(load_tables()["I"], runs)
    result.data = ("synthetic$\\input{x}$",)   # matplotlib would parse it as mathtext and raise
    cache = ArtifactCache(uri, dict(zip(runs.runs["run_id"], runs.runs["artifact_uri"])))
    try:
        paths, notes = ced_figures(result, cache, tmp_path)
        assert paths and not any("unreadable" in n for n in notes)
        path, why = comparison_figure(result, runs, cache, tmp_path)
        assert path is not None and why == ""
    finally:
        cache.close()
