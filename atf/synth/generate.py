"""Generate the SynthFace benchmark: images and annotation CSVs in the real datasets' layout.

Why: the real images are not redistributable, yet a newcomer, the tests, CI and the demo must run
the whole project in minutes. Every image is a pure function of (seed, preset, group, index), so
the output is byte-identical for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from atf import keys
from atf.synth import geometry, presets
from atf.synth.geometry import deform, project, scheme_points3d, silhouette_jaw
from atf.synth.render import place, render_face

__all__ = ["GENERATOR", "VERSION", "SynthError", "generate", "plan", "read_marker", "make_sample",
           "expected_counts"]

GENERATOR = "synthface"
VERSION = 1
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 64, 4096   # --image-size: real benchmark photos are ~1024 px and more


class SynthError(ValueError):
    """Bad generator input (preset, scale, output folder); the message names it."""


@dataclass(frozen=True)
class Job:
    preset: str
    group: str
    index: int
    flags: tuple[bool, ...]
    seed: int
    image_size: int = 0     # square image side in pixels; 0 = presets.yaml's (176)

    @property
    def image_name(self) -> str:
        return f"{self.group}/{self.index:05d}.jpg"


def _key(*parts: object) -> list[int]:
    """Stable integers for a SeedSequence (str hashes vary per process; crc32 does not)."""
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


def plan(scale: float, seed: int, names: Sequence[str], image_size: int = 0) -> list[Job]:
    """All images to draw, in output order, with their attribute flags."""
    jobs = []
    for name in names:
        preset = presets.get_preset(name)
        for group in preset.groups:
            n = presets.scaled_count(group.count, scale)
            rng = np.random.default_rng(_key(seed, name, group.name, "flags"))
            flags = presets.group_flags(group, n, scale, rng)
            jobs += [Job(name, group.name, i, tuple(bool(v) for v in flags[i]), seed, image_size)
                     for i in range(n)]
    return jobs


def make_sample(job: Job) -> tuple[np.ndarray, dict]:
    """Render one image and its annotation row (landmarks, centre, scale, box) from its job alone."""
    cv2.setNumThreads(1)
    preset = presets.get_preset(job.preset)
    group = preset.group(job.group)
    cal = geometry.calibration()
    real = cal.real[preset.scheme]
    st = presets.settings()
    rng = np.random.default_rng(_key(job.seed, job.preset, job.group, job.index))
    face = presets.sample_face(rng, group, np.array(job.flags))
    curves = silhouette_jaw(deform(face), face)
    size = int(job.image_size or st["image_size"])
    posed = {k: project(v, face) for k, v in curves.items()}
    pl = place(posed, size, float(rng.uniform(*st["face_fraction"])), rng)
    pts3d = scheme_points3d(curves, cal.schemes[preset.scheme], rng)
    lm = project(pts3d, face)[:, :2] * pl.ppu + np.asarray(pl.offset)
    flags = dict(zip(keys.WFLW_ATTRIBUTES, job.flags))
    img = render_face(face, curves, pl, flags, rng, size)
    lo, hi = lm.min(0), lm.max(0)
    side = float((hi - lo).max())
    mid = (lo + hi) / 2
    # the real conventions: HRNet centre/scale and the detector box, relative to the landmark box
    centre = mid + (np.asarray(real.get("center_rel_median", [0, 0]))
                    + rng.normal(0, 0.5, 2) * np.asarray(real.get("center_rel_std", [0, 0]))) * side
    scale200 = side * float(real.get("scale200_over_side", 1.0))
    rel = np.asarray(real["box_rel_median"]) + rng.normal(0, 0.4, 4) * np.asarray(real["box_rel_std"])
    box = np.concatenate([mid, mid]) + rel * side
    row = {"image": job.image_name, "landmarks": lm, "center": centre, "scale": scale200 / 200,
           "box": box, "box_size": scale200}
    return img, row


def _work(args: tuple[Job, str]) -> dict:
    job, root = args
    img, row = make_sample(job)
    path = Path(root) / job.preset / "images" / job.image_name
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise SynthError(f"{path}: JPEG encoding failed")
    path.write_bytes(buf.tobytes())
    return row


def read_marker(out: Path) -> dict | None:
    """The marker of a SynthFace folder, or None when absent or unreadable."""
    try:
        return json.loads((Path(out) / keys.SYNTH_MARKER).read_text())
    except (OSError, ValueError):
        return None


def _check_args(scale: float, names: Sequence[str], workers: int, image_size: int = 0) -> None:
    if not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
        raise SynthError(f"scale must be a positive number, got {scale!r}")
    if image_size and not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise SynthError(f"image_size must be 0 (the default) or in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], "
                         f"got {image_size!r}")
    if workers < 1:
        raise SynthError(f"workers must be >= 1, got {workers!r}")
    if not names:
        raise SynthError("presets: at least one preset is needed")
    for n in names:
        presets.get_preset(n)
    if len(set(names)) != len(names):
        raise SynthError(f"presets: duplicate names in {list(names)}")


def _progress(total: int):
    """tqdm on a terminal, plain lines every ~10% otherwise."""
    if sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=total, desc="synthface", unit="img")
        return bar.update, bar.close
    step = max(1, total // 10)
    state = {"n": 0}

    def update(k: int = 1) -> None:
        before = state["n"]
        state["n"] += k
        if state["n"] // step != before // step or state["n"] == total:
            print(f"synthface: {state['n']}/{total} images", file=sys.stderr, flush=True)
    return update, lambda: None


def generate(out: Path, scale: float, seed: int, presets: Sequence[str] | None = None, workers: int = 1,
             force: bool = False, skip_existing: bool = False, image_size: int = 0) -> dict:
    """Write the SynthFace benchmark under `out`; returns the marker dict.

    `skip_existing` returns the existing marker when `out` already holds the same dataset; a folder
    holding anything else is refused unless `force` (which replaces the preset folders and marker).
    `image_size` renders every image at that side instead of the default 176 px (the face keeps its
    share of the image), e.g. 1024 for real benchmark sizes in the loader bench; the marker then
    records it, and the data provenance names it.
    """
    from atf.synth import presets as _presets
    names = list(presets) if presets is not None else list(_presets.presets())
    _check_args(scale, names, workers, image_size)
    names = [n for n in _presets.presets() if n in names]  # canonical order: the data does not depend on it
    out = Path(out)
    want = {"generator": GENERATOR, "version": VERSION, "scale": float(scale), "seed": int(seed),
            "presets": names}
    if image_size and image_size != int(_presets.settings()["image_size"]):
        want["image_size"] = int(image_size)   # only when not the default: older markers stay the same data
    have = _prepare_folder(out, want, force, skip_existing)
    if have is not None:
        return have
    jobs = plan(scale, seed, names, int(want.get("image_size", 0)))
    rows = _render_all(jobs, out, workers)
    marker = {**want, "counts": _write_csvs(out, names, rows)}
    (out / keys.SYNTH_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
    return marker


def _prepare_folder(out: Path, want: dict, force: bool, skip_existing: bool) -> dict | None:
    """Make `out` ready for the dataset `want`; its marker when it holds that already (skip_existing)."""
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out}: output path exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        have = read_marker(out)
        same = have is not None and all(have.get(k) == v for k, v in want.items()) \
            and have.get("image_size") == want.get("image_size")
        if same and skip_existing:
            return have
        if not force:
            what = "a different SynthFace dataset" if have else "files that are not a SynthFace dataset"
            if same:
                what = "this dataset already"
            raise SynthError(f"{out}: folder holds {what}; pass --skip-existing to reuse or --force to overwrite")
        (out / keys.SYNTH_MARKER).unlink(missing_ok=True)
        # our dataset folders and those of the replaced SynthFace set (never a user's other files)
        for n in set(want["presets"]) | set((have or {}).get("presets", [])) & set(presets.presets()):
            shutil.rmtree(out / n, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return None


def _render_all(jobs: list[Job], out: Path, workers: int) -> dict[tuple[str, str], list[dict]]:
    """Render and write every image (in `workers` processes); the CSV rows per (preset, group)."""
    update, close = _progress(len(jobs))
    rows: dict[tuple[str, str], list[dict]] = {}
    args = [(j, str(out)) for j in jobs]
    pool = None
    try:
        if workers == 1:
            results = map(_work, args)
        else:  # spawn: safe whatever threads the caller (e.g. torch) started; output does not depend on it
            pool = mp.get_context("spawn").Pool(workers)
            results = pool.imap(_work, args, chunksize=16)
        for job, row in zip(jobs, results):
            row["flags"] = dict(zip(keys.WFLW_ATTRIBUTES, job.flags))
            rows.setdefault((job.preset, job.group), []).append(row)
            update(1)
    finally:
        close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return rows


def _select(rows: dict[tuple[str, str], list[dict]], name: str, sources: Sequence[str]) -> list[dict]:
    """The rows of one CSV: its "group" or "group:attribute" sources, in order."""
    selected = []
    for src in sources:
        group, _, attr = src.partition(":")
        selected += [r for r in rows[(name, group)] if not attr or r["flags"][attr]]
    return selected


def expected_counts(scale: float, seed: int, names: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
    """Rows per dataset and file suffix that `generate` writes, without drawing an image (the
    marker's "counts"; `atf-sweep --dry-run` sizes a sweep on data it has not generated yet)."""
    names = [n for n in presets.presets() if names is None or n in names]
    rows: dict[tuple[str, str], list[dict]] = {}
    for job in plan(scale, seed, names):
        rows.setdefault((job.preset, job.group), []).append({"flags": dict(zip(keys.WFLW_ATTRIBUTES, job.flags))})
    return {name: {suffix: len(_select(rows, name, sources)) for suffix, sources in presets.get_preset(name).files}
            for name in names}


def _write_csvs(out: Path, names: list[str], rows: dict[tuple[str, str], list[dict]]) -> dict[str, dict[str, int]]:
    """Each preset's annotation CSVs (with and without boxes); the row count per file suffix."""
    from atf.synth import csvio  # pandas-backed writer: imported here, not in the worker processes
    counts: dict[str, dict[str, int]] = {}
    for name in names:
        preset = presets.get_preset(name)
        counts[name] = {}
        for suffix, sources in preset.files:
            selected = _select(rows, name, sources)
            for with_box in (False, True):
                path = out / name / csvio.file_name(name, suffix, with_box)
                csvio.write_rows(name, preset.scheme, selected, path, with_box)
            counts[name][suffix] = len(selected)
    return counts
