"""Preflight: everything the driver can check before Ray starts, all problems at once.

A 500-trial sweep should not start Ray, schedule trials and fail each one with a traceback
because a CSV is missing. `check` resolves every cell and looks at what the trials will need:
each cell's model can be built (on the meta device: no memory, no time), its weights file
exists, each dataset's annotation files exist and parse through the real readers (the same code
the trainer uses) and pass the row checks of `atf.datacheck` (`atf-data check`: every row's
numbers, image header and landmarks; under `data.bad_rows: skip` bad rows are a note, not a
problem), a seeded sample of each file's images decode, the output and storage folders
are writable and the MLflow store answers. Every problem is one line naming the cell, file or key
and what to do; nothing raises. SynthFace roots that are absent are not problems: they are listed
in `Report.generate`, and `atf-sweep` makes them (`make_synth`) before it starts Ray.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from atf import keys
from atf.config import RunConfig
from orchestration.sweepfile import Cell, Sweep, SynthSpec, resolve_paths, synth_for
from orchestration.trainable import scratch_root

__all__ = ["Problem", "Report", "check", "make_synth", "submit_problems", "IMAGES_PER_FILE"]

IMAGES_PER_FILE = 3           # images decoded per annotation file (seeded sample)
_HTTP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Problem:
    subject: str              # the cell, file, folder or key it is about
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.subject}: {self.what}" + (f"; {self.fix}" if self.fix else "")


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    generate: dict[Path, SynthSpec] = field(default_factory=dict)  # SynthFace roots to make first

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [p.line() for p in self.problems]


def _cells_text(cells: list[Cell]) -> str:
    cells = list({c.cell_id: c for c in cells}.values())
    names = sorted({c.label or c.cell_id for c in cells})
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"{len(cells)} cell{'s' if len(cells) != 1 else ''}: {shown}"


def _writable(folder: Path) -> str | None:
    """None when files can be created in `folder` (or, when it does not exist yet, in the
    folder it would be made in; nothing is created), else the reason."""
    where = _existing_parent(folder)
    if not where.is_dir():
        return f"{where} is not a folder"
    if where != folder:
        return None if os.access(where, os.W_OK | os.X_OK) else f"{where} is not writable"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".atf-preflight-"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def _existing_parent(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


# -- configs and weights ---------------------------------------------------------------------

def _check_models(cells: list[Cell], cwd: Path, report: Report, weights: bool = True) -> None:
    """Build each distinct model once on the meta device; a bad size is one line per model."""
    import torch

    from atf.datasets import get_dataset
    from atf.models import build_model
    from atf.schemes import get_scheme
    seen: dict[tuple, list[Cell]] = {}
    missing: dict[Path, list[Cell]] = {}
    for c in cells:
        cfg = c.config
        heads = tuple(sorted((n, get_scheme(get_dataset(n).scheme).num_points)
                             for n in {*cfg.datasets, *([cfg.novel] if cfg.novel else [])}))
        seen.setdefault((cfg.model, cfg.input_size, cfg.heatmap_size, heads), []).append(c)
        wfile = str(getattr(cfg.model, "pretrained", "") or "")  # model.pretrained (a weights file)
        if weights and wfile and "://" not in wfile:
            path = Path(wfile) if os.path.isabs(wfile) else cwd / wfile
            if not path.is_file():
                missing.setdefault(path, []).append(c)
    for path, group in missing.items():
        report.problems.append(Problem(
            f"model.pretrained {path}", f"no such file ({_cells_text(group)})",
            "put the weights file there (README 'Models'), or point model.pretrained / ATF_WEIGHTS at it"))
    for (model, size, hm, heads), group in seen.items():
        try:
            with torch.device("meta"):
                build_model(model, dict(heads), size, hm)
        except Exception as e:  # noqa: BLE001 - whatever stops the model stops every trial: report it
            msg = " ".join(str(e).split()).strip("'")
            msg = msg if isinstance(e, (ValueError, KeyError)) else f"cannot be built ({type(e).__name__}: {msg})"
            report.problems.append(Problem(
                f"model {model.backbone} input_size={size} width_mult={model.width_mult:g}", msg,
                f"fix model.* in the sweep file ({_cells_text(group)})"))


# -- data --------------------------------------------------------------------------------------

def _needs(cfg: RunConfig) -> list[tuple[str, str, str]]:
    """(dataset, split, subset) the trainer reads: every train split, the reported heads' full test."""
    names = [*cfg.datasets, *([cfg.novel] if cfg.novel else [])]
    reported = set(names) if cfg.scenario in (keys.SCENARIO_JOINT, keys.SCENARIO_NOVEL) else {cfg.target}
    return [(n, "train", "full") for n in names] + [(n, "test", "full") for n in names if n in reported]


def _data_fix() -> str:
    return ("pass `--set data.root=DIR` or `export ATF_DATA=DIR` (layout: README 'Data'; official releases: "
            "`atf-data convert`), or run the same cells on SynthFace: `--profile smoke`")


def _check_images(path: Path, images: Path, names: tuple[str, ...], seed: int, k: int) -> str | None:
    import cv2
    import numpy as np
    if not images.is_dir():
        return f"images folder {images} does not exist"
    n = len(names)
    if n == 0:
        return None
    rows = np.random.default_rng(seed).choice(n, size=min(k, n), replace=False)
    bad = []
    for r in sorted(int(i) for i in rows):
        f = images / names[r]
        if not f.is_file():
            bad.append(f"row {r + 1}: {f} is missing")
        elif cv2.imread(str(f), cv2.IMREAD_COLOR) is None:
            bad.append(f"row {r + 1}: {f} cannot be decoded")
    if bad:
        return f"{len(bad)} of {len(rows)} sampled images unreadable ({bad[0]})"
    return None


def _check_rows(report: Report, path: Path, images: Path, k: int, cells: list[Cell], cwd: Path) -> None:
    """atf.datacheck's row checks (image headers, not pixels: seconds), summed up in one line."""
    from atf.datacheck import check_csv
    bad = check_csv(path, images, k, decode=False)
    if not bad:
        return
    skip = all(getattr(c.config.data, "bad_rows", "refuse") == "skip" for c in cells)
    root = Path(resolve_paths(cells[0].config, cwd).data.root)
    text = f"{len(bad)} bad row(s), first: {bad[0]}".replace(f"{path}: ", "")
    if skip and all(p.row for p in bad):
        report.notes.append(f"{path}: {text} (data.bad_rows: skip drops them)")
        return
    report.problems.append(Problem(str(path), text, f"list them all with `atf-data check {root}`; repair them, "
                                   "or set data.bad_rows: skip to train without them"))


def _check_data(cells: list[Cell], cwd: Path, sweep: Sweep, report: Report, seed: int, k: int) -> None:
    from atf import datasets
    from atf.readers import AnnotationError
    roots: dict[Path, list[Cell]] = {}
    files: dict[tuple[str, str, str, Path, Path], list[Cell]] = {}
    for c in cells:
        cfg = resolve_paths(c.config, cwd)
        root = Path(cfg.data.root)
        spec = synth_for(c.config, sweep.synth)
        if spec is not None and not (root.is_dir() and any(root.iterdir())):
            report.generate.setdefault(root, spec)
            continue
        try:
            datasets.apply_registry(cfg.data)
        except (datasets.DatasetError, OSError, ValueError) as e:
            report.problems.append(Problem("data.registry", " ".join(str(e).split()), _cells_text([c])))
            continue
        for name, split, subset in _needs(cfg):
            ann = datasets.annotations_dir(name, cfg.data)
            if not cfg.data.paths.get(name) and not root.is_dir():
                roots.setdefault(root, []).append(c)
                continue
            files.setdefault((name, split, subset, ann, datasets.images_dir(name, cfg.data)), []).append(c)
    for root, group in roots.items():
        names = sorted({n for c in group for n, _, _ in _needs(c.config)})
        report.problems.append(Problem(
            f"data root {root}", f"does not exist (it should hold {', '.join(n + '/' for n in names)}; "
            f"{_cells_text(group)})", _data_fix()))
    missing_dirs: dict[Path, list[Cell]] = {}
    for (name, split, subset, ann, images), group in files.items():
        if not ann.is_dir():
            missing_dirs.setdefault(ann, []).extend(group)
            continue
        try:
            aset = datasets.load_split(name, split, subset, root=resolve_paths(group[0].config, cwd).data)
        except datasets.DatasetError as e:
            plain = ann / datasets.csv_name(name, split, subset)
            if not plain.is_file() and not (ann / datasets.csv_name(name, split, subset, True)).is_file():
                report.problems.append(Problem(
                    str(plain), f"missing ({name} {split}/{subset}; the _with_box variant would do too; "
                    f"{_cells_text(group)})", f"add the file (README 'Data') or point data.paths.{name}."
                    "annotations at its folder"))
            else:
                report.problems.append(Problem(f"dataset {name}", " ".join(str(e).split()), _cells_text(group)))
            continue
        except (AnnotationError, ValueError, OSError) as e:
            report.problems.append(Problem(f"{name} {split}/{subset}", " ".join(str(e).split()),
                                           "fix or regenerate the file (`atf-data check` lists every bad row)"))
            continue
        bad = _check_images(Path(aset.source), images, aset.images, seed, k)
        if bad:
            report.problems.append(Problem(aset.source, bad, "check data.paths.<dataset>.images or the "
                                           "image names in the CSV"))
            continue
        _check_rows(report, Path(aset.source), images, aset.landmarks.shape[1], group, cwd)
    for ann, group in missing_dirs.items():
        report.problems.append(Problem(f"dataset folder {ann}", f"does not exist ({_cells_text(group)})",
                                       _data_fix()))


# -- outputs -----------------------------------------------------------------------------------

def _check_outputs(report: Report, cwd: Path, storage: str | None, scratch: str | None = None) -> None:
    if storage and "://" in storage:
        report.notes.append(f"storage {storage}: a URI, not checked here (every node needs access)")
    else:
        folder = Path(storage) if storage else cwd / "ray_results"
        folder = folder if folder.is_absolute() else cwd / folder
        why = _writable(folder)
        if why:
            report.problems.append(Problem(f"storage {folder}", f"not writable ({why})",
                                           "pass --storage DIR on a writable (shared) filesystem"))
    folder = scratch_root(scratch)
    why = _writable(folder)
    if why:
        report.problems.append(Problem(f"trial scratch folder {folder}", f"not writable ({why})",
                                       "pass --scratch DIR, a writable local folder"))
    for root in report.generate:
        why = _writable(root)
        if why:
            report.problems.append(Problem(f"data root {root}", f"SynthFace cannot be generated there ({why})",
                                           "set data.root to a writable folder"))


def _check_crop_caches(cells: list[Cell], cwd: Path, report: Report) -> None:
    """The crop-cache folder of every cell that reads through one (real data by default) must be
    writable: the driver builds the caches there before the first trial (orchestration.crops)."""
    from atf.config import crop_cache_on
    from atf.cropcache import default_cache_dir
    from atf.datasets import DatasetError, data_provenance
    folders: dict[Path, list[Cell]] = {}
    for c in cells:
        cfg = resolve_paths(c.config, cwd)
        try:
            if not crop_cache_on(cfg.data.crop_cache, data_provenance(cfg.data)):
                continue
        except DatasetError:
            continue   # an unreadable SynthFace marker: the data check says so
        folder = Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else default_cache_dir()
        folders.setdefault(folder if folder.is_absolute() else cwd / folder, []).append(c)
    for folder, group in folders.items():
        why = _writable(folder)
        if why:
            report.problems.append(Problem(f"crop cache folder {folder}", f"not writable ({why}; {_cells_text(group)})",
                                           "set data.cache_dir to a writable folder (shared storage on a cluster), "
                                           "or data.crop_cache: false to read the photos"))


def _check_mlflow(report: Report, uri: str) -> None:
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if db.exists():
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
                try:
                    con.execute("select count(*) from sqlite_master").fetchone()
                finally:
                    con.close()
            except sqlite3.Error as e:
                report.problems.append(Problem(f"MLflow store {uri}", f"not a readable SQLite database ({e})",
                                               "pass --mlflow-uri with another store"))
                return
            if not os.access(db, os.W_OK):
                report.problems.append(Problem(f"MLflow store {uri}", "not writable",
                                               "pass --mlflow-uri with a store you can write"))
        else:
            why = _writable(db.parent)
            if why:
                report.problems.append(Problem(f"MLflow store {uri}", f"cannot be created ({why})",
                                               "pass --mlflow-uri with a writable path or a server"))
    elif uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=_HTTP_TIMEOUT) as r:
                r.read()
        except urllib.error.HTTPError:
            pass  # it answered (e.g. a proxy without /health)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            report.problems.append(Problem(f"MLflow server {uri}", f"does not answer ({reason})",
                                           "start it (`mlflow server ...`, docs/cluster.md) or fix --mlflow-uri "
                                           "/ MLFLOW_TRACKING_URI"))
    elif uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://").removeprefix("file:"))
        why = _writable(folder)
        if why:
            report.problems.append(Problem(f"MLflow store {uri}", f"not writable ({why})", "fix --mlflow-uri"))
    else:
        report.notes.append(f"MLflow store {uri}: not checked here")


def check(sweep: Sweep, cwd: Path, mlflow_uri: str, storage: str | None = None, files: bool = True,
          seed: int = 0, images_per_file: int = IMAGES_PER_FILE, scratch: str | None = None) -> Report:
    """Every problem of `sweep` that the driver can see (module docstring). `files=False` skips
    data, storage and weights (a submitter whose cluster sees other filesystems)."""
    report = Report()
    cells = sweep.cells()
    cwd = cwd.resolve()
    _check_models(cells, cwd, report, weights=files)
    if files:
        _check_data(cells, cwd, sweep, report, seed, images_per_file)
        _check_outputs(report, cwd, storage, scratch)
        _check_crop_caches(cells, cwd, report)
    _check_mlflow(report, mlflow_uri)
    return report


def submit_problems(file: Path, args: argparse.Namespace, base_dir: str | None) -> list[str]:
    """Preflight on the submitter's side of `atf-sweep submit`: the sweep file, its --set and
    --profile, the models and the MLflow server always; files only when the cluster resolves paths
    here (no --base-dir, or one that exists here). `args`: atf-sweep's own options as parsed from
    the submit command line. One line per problem; [] when it may go."""
    from atf.cli.common import default_mlflow_uri
    from atf.config import ConfigError, parse_assignments
    from orchestration.sweepfile import load_sweep
    sets = [*args.sets, *([f"data.root={args.data_root}"] if args.data_root else [])]
    try:
        sweep = load_sweep(file, parse_assignments(sets), args.profile)
    except ConfigError as e:
        return [str(e)]
    here = base_dir is None or Path(base_dir).is_dir()
    cwd = Path(base_dir) if base_dir and here else Path.cwd()
    uri = args.mlflow_uri or default_mlflow_uri(cwd)
    report = check(sweep, cwd, uri, args.storage, files=here, scratch=args.scratch)
    if not here or not uri.startswith(("http://", "https://")):  # a local store is the cluster's business
        report.problems = [p for p in report.problems if not p.subject.startswith("MLflow store")]
    return report.lines()


def make_synth(root: Path, spec: SynthSpec, workers: int | None = None) -> dict:
    """Generate SynthFace at `root` exactly as `atf-data synth --out ROOT --scale S --seed N`."""
    import time

    from atf.synth.generate import generate
    t0 = time.perf_counter()
    print(f"SynthFace data {root} is absent: generating it (atf-data synth --out {root} "
          f"--scale {spec.scale:g} --seed {spec.seed})", flush=True)
    marker = generate(root, spec.scale, spec.seed, workers=workers or min(4, os.cpu_count() or 1),
                      skip_existing=True)
    total = sum(c for d in marker["counts"].values() for c in d.values())
    print(f"SynthFace (scale={spec.scale:g}, seed={spec.seed}) in {root}: {total} annotation rows, "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return marker
