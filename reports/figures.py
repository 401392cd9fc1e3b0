"""Figures from run artifacts: CED curves per test set, and a Fig. 5-style picture.

Why artifacts and not metrics: a CED curve and a landmark overlay need the per-image data the
trainer logged (`keys.ced_artifact`, `keys.pred_artifact`); the ground truth and the images
come from the data root recorded in the run's params, read with atf's own readers.
"""

from __future__ import annotations

import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from atf import keys, metrics  # noqa: E402
from atf.datacheck import escapes_folder  # noqa: E402

from .collect import DATA_ROOT_PARAM, Runs  # noqa: E402
from .compute import CellResult, TableResult  # noqa: E402

__all__ = ["ArtifactCache", "ced_figures", "comparison_figure"]


class ArtifactCache:
    """Each (run, artifact folder) fetched once, many at a time, with no run lookups.

    The report already knows every run's artifact URI (reports.collect), so nothing asks the
    store again: a local artifact store (file:// or a path) is read in place, no copy; a remote
    one is downloaded a whole folder at a time (ced/, predictions/: one transfer instead of one
    per file), in parallel threads (`prefetch`), into a temporary folder removed on close.
    A run whose URI is unknown falls back to MLflow's lookup by run id."""

    def __init__(self, uri: str, artifact_uris: dict[str, str] | None = None, workers: int = 8):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.uri = uri
        self.artifact_uris = dict(artifact_uris or {})
        self.workers = workers
        self._tmp = tempfile.TemporaryDirectory(prefix="atf-report-")
        self.dir = Path(self._tmp.name)
        self.folders: dict[tuple[str, str], Path | None] = {}

    def close(self) -> None:
        self._tmp.cleanup()

    def _fetch(self, run_id: str, folder: str) -> Path | None:
        """`folder` of one run, or None; the run id names a folder under ours, so only MLflow's form
        passes (a shared store's `../../x` would write elsewhere), and a local folder must be a real
        one (a symlink planted in a shared artifact store could point at anyone's files)."""
        if not (isinstance(run_id, str) and re.fullmatch(keys.RUN_ID_PATTERN, run_id)):
            return None
        base = self.artifact_uris.get(run_id, "")
        if base and urlparse(base).scheme in ("", "file"):  # mlflow-artifacts:/..., s3://... download
            local = Path(unquote(urlparse(base).path) if base.startswith("file:") else base) / folder
            return local if local.is_dir() and not local.is_symlink() else None
        from mlflow.artifacts import download_artifacts
        dst = self.dir / run_id
        dst.mkdir(parents=True, exist_ok=True)
        try:
            if base:
                return Path(download_artifacts(artifact_uri=f"{base.rstrip('/')}/{folder}", dst_path=str(dst),
                                               tracking_uri=self.uri))
            return Path(download_artifacts(run_id=run_id, artifact_path=folder, tracking_uri=self.uri,
                                           dst_path=str(dst)))
        except Exception:  # no such folder: the figure leaves the run out and says so
            return None

    def prefetch(self, run_ids: list[str], folder: str) -> None:
        """Fetch `folder` of every run not fetched yet, `workers` at a time."""
        todo = [r for r in dict.fromkeys(run_ids) if (r, folder) not in self.folders]
        if not todo:
            return
        with ThreadPoolExecutor(max(1, min(self.workers, len(todo)))) as pool:
            for run_id, path in zip(todo, pool.map(lambda r: self._fetch(r, folder), todo)):
                self.folders[run_id, folder] = path

    def _folder(self, run_id: str, folder: str) -> Path | None:
        if (run_id, folder) not in self.folders:
            self.folders[run_id, folder] = self._fetch(run_id, folder)
        return self.folders[run_id, folder]

    def get(self, run_id: str, path: str) -> Path | None:
        """Local copy of artifact `path` ("ced/wflw_full.csv") of `run_id`; None when absent."""
        parent = Path(path).parent
        if str(parent) == ".":
            raise ValueError(f"artifact {path!r}: expected a file inside a folder")
        local = self._folder(run_id, str(parent))
        target = local / Path(path).name if local else None
        return target if target and target.is_file() and not target.is_symlink() else None


def _label(text: str) -> str:
    """`ATF_{WA}` as matplotlib mathtext, so a legend reads like the table."""
    return re.sub(r"_\{([^}]*)\}", r"$_{\\mathrm{\1}}$", text)


def _data_label(result: TableResult) -> str:
    """Figures carry their data too, so a synthetic curve is never taken for the paper's; the tag's
    `$` is escaped, as a store's `$\\x$` would be parsed as mathtext and fail the whole figure."""
    return "data: " + (", ".join(result.data) or "none").replace("$", r"\$")


def _mean_curve(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Seeds' CED curves on the first curve's thresholds (fractions averaged)."""
    curves = [metrics.read_ced(p) for p in paths]
    grid = curves[0][:, 0]
    return grid, np.mean([np.interp(grid, c[:, 0], c[:, 1]) for c in curves], axis=0)


def ced_figures(result: TableResult, cache: ArtifactCache, out_dir: Path) -> tuple[list[Path], list[str]]:
    """One PNG per test set of the table: a CED curve per method that has runs."""
    t, figures, notes, absent = result.table, [], [], []
    first = [c for (si, _, _), c in result.cells.items() if si == 0 and c.ours is not None]
    by_set: dict[tuple[str, str], list[CellResult]] = {}
    for cell in first:
        by_set.setdefault((cell.column.dataset, cell.column.subset), []).append(cell)
    cache.prefetch([r for c in first for r in c.ours.run_ids], keys.ARTIFACT_CED_DIR)
    for (dataset, subset), cells in by_set.items():
        several = len({c.column.key for c in cells}) > 1
        fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
        drawn = 0
        for cell in cells:
            paths = [p for r in cell.ours.run_ids if (p := cache.get(r, keys.ced_artifact(dataset, subset)))]
            if not paths:
                absent.append(f"{cell.row.label} {dataset}/{subset}")
                continue
            try:
                x, y = _mean_curve(paths)
            except (ValueError, OSError) as exc:
                notes.append(f"Table {t.id}: CED of {cell.row.label} unreadable ({exc})")
                continue
            label = _label(cell.row.label) + (f" ({cell.column.label})" if several else "")
            ax.plot(x, y, label=f"{label} (n={len(paths)})")
            drawn += 1
        if drawn:
            ax.set(xlabel="normalised error threshold", ylabel="fraction of test images",
                   title=f"Table {t.id}: CED, {dataset} {subset}\n{_data_label(result)}", ylim=(0, 1))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            path = out_dir / f"ced_{t.id}_{dataset}_{subset}.png"
            fig.tight_layout()
            fig.savefig(path)
            figures.append(path)
        plt.close(fig)
    if absent:
        notes.append(f"Table {t.id}: {len(absent)} CED curve(s) left out, no CED artifact "
                     f"(first: {absent[0]})")
    return figures, notes


def _pairs(result: TableResult) -> list[tuple[CellResult, CellResult]]:
    """(baseline, ATF) cells of the first section, HRNet first as in the paper's Fig. 5."""
    out = []
    for (si, _, _), cell in result.cells.items():
        if si == 0 and cell.row.baseline and cell.ours is not None:
            base = result.cell(0, cell.row.baseline, cell.column.key)
            if base.ours is not None:
                out.append((base, cell))
    return sorted(out, key=lambda p: "hrnet" not in p[1].selector.get(keys.TAG_BACKBONE, ""))


def comparison_figure(result: TableResult, runs: Runs, cache: ArtifactCache, out_dir: Path,
                      count: int = 3) -> tuple[Path | None, str]:
    """Input / baseline / ATF / ground truth for a few test images (the paper's Fig. 5).

    Its data root, image names and images come from a shared store and storage: whatever goes
    wrong drawing this one figure ends as a one-line note, never as a report without index.md."""
    try:
        return _comparison_figure(result, runs, cache, out_dir, count)
    except Exception as exc:  # noqa: BLE001 - any failure of one figure is a note, not a lost report
        return None, f"Fig. 5 skipped: drawing it failed ({type(exc).__name__}: {' '.join(str(exc).split())})"


def _fig5_image(folder: Path, name: str) -> np.ndarray | None:
    """RGB pixels of one test image, or None: a name from a shared data root's CSV may leave
    `folder` (absolute, `..`, a symlink out), and a file may not decode (0-byte, truncated)."""
    import cv2
    path = folder / name
    try:
        if escapes_folder(name) or not path.resolve().is_relative_to(folder.resolve()) or not path.is_file():
            return None
    except (OSError, ValueError, RuntimeError):  # a symlink loop, a NUL in the name
        return None
    image = cv2.imread(str(path))
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _comparison_figure(result: TableResult, runs: Runs, cache: ArtifactCache, out_dir: Path,
                       count: int) -> tuple[Path | None, str]:
    from atf.datasets import get_dataset, images_dir, load_split
    from atf.readers import read_csv

    pairs = _pairs(result)
    if not pairs:
        return None, f"Table {result.table.id}: no baseline/ATF pair with runs for a Fig. 5 picture"
    base, ours = pairs[0]
    dataset, subset = ours.column.dataset, ours.column.subset
    run_b, run_o = base.ours.run_ids[0], ours.ours.run_ids[0]
    roots = runs.runs.set_index("run_id")[DATA_ROOT_PARAM]
    root = roots.get(run_o, "")
    pred_b, pred_o = (cache.get(r, keys.pred_artifact(dataset, subset)) for r in (run_b, run_o))
    if not (root and pred_b and pred_o):
        return None, f"Fig. 5 skipped: predictions or the {DATA_ROOT_PARAM} param are missing for {dataset}"
    try:
        scheme = get_dataset(dataset).scheme
        gt = load_split(dataset, "test", subset, root=root)
        pb, po = (read_csv(p, dataset=dataset, scheme=scheme) for p in (pred_b, pred_o))
        folder = images_dir(dataset, root)
    except Exception as exc:  # annotations not on this machine: say so, keep the report going
        return None, f"Fig. 5 skipped: ground truth for {dataset}/{subset} unreadable under {root} ({exc})"
    index_b, index_o = ({n: i for i, n in enumerate(p.images)} for p in (pb, po))
    shown = []   # (row of gt, name, pixels) of the first `count` usable images
    for i, name in enumerate(gt.images):
        if name in index_b and name in index_o and (image := _fig5_image(folder, name)) is not None:
            shown.append((i, name, image))
            if len(shown) == count:
                break
    if not shown:
        return None, f"Fig. 5 skipped: no readable test images of {dataset}/{subset} under {folder}"
    fig, axes = plt.subplots(len(shown), 4, figsize=(10, 2.6 * len(shown)), dpi=100, squeeze=False)
    try:
        for r, (i, name, image) in enumerate(shown):
            panels = [("input", None), (_label(base.row.label), pb.landmarks[index_b[name]]),
                      (_label(ours.row.label), po.landmarks[index_o[name]]), ("ground truth", gt.landmarks[i])]
            for c, (title, points) in enumerate(panels):
                ax = axes[r][c]
                ax.imshow(image)
                if points is not None:
                    ax.scatter(points[:, 0], points[:, 1], s=4, c="lime" if c == 3 else "red")
                ax.set_axis_off()
                if r == 0:
                    ax.set_title(title, fontsize=9)
        path = out_dir / f"fig5_{result.table.id}_{dataset}_{subset}.png"
        fig.suptitle(f"{dataset} {subset}, {_data_label(result)}", fontsize=9)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path, ""
