"""`atf-eval`: NME, FR@0.1 and AUC@0.1 of a checkpoint on its test subsets, or of a prediction file.

Two modes, chosen by what is given:
  checkpoint mode        atf-eval CHECKPOINT [--dataset D] [--subsets a,b] [--data-root DIR] [--flip]
  prediction-file mode   atf-eval --pred PRED.csv --gt GT.csv [--dataset D]

Predictions are written in the annotation CSV layout. Rows are matched by image name, in any
order; when one image holds several faces, its rows are paired by least landmark distance.
The NME normaliser is the dataset's (eye corners, or AFLW's GT box_size).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atf.cli.common import add_data_root, make_parser

if TYPE_CHECKING:   # numpy, scipy and the readers load after parsing: --help stays fast
    import numpy as np

    from atf.readers import AnnotationSet

__all__ = ["main", "score_checkpoint", "score_files", "match_rows", "build_parser"]

EXAMPLES = """
  atf-eval runs/demo_atf/checkpoints/best.pt                  # every test subset of the run's target
  atf-eval runs/demo_atf/checkpoints/best.pt --flip --json    # flip-averaged, as JSON
  atf-eval best.pt --dataset aflw --subsets full --data-root /data/real
  atf-eval --pred predictions/landmarks.csv --gt data/wflw/face_landmarks_wflw_test.csv
"""
CHECKPOINT_ONLY = ("subsets", "data_root", "flip", "device", "protocol", "crop_cache")


def match_rows(pred: AnnotationSet, gt: AnnotationSet, pred_name: str, gt_name: str) -> np.ndarray:
    """For each prediction row, its GT row. Names match one to one; the faces of an image that
    holds several are paired by least total landmark distance (order-independent)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    from atf.readers import AnnotationError
    rows: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(gt.images):
        rows[name].append(i)
    mine: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(pred.images):
        mine[name].append(i)
    extra = [n for n in mine if len(mine[n]) > len(rows.get(n, ()))]
    if extra:
        raise AnnotationError(f"{pred_name}: {len(extra)} image name(s) with more rows than in {gt_name}, "
                              f"first {extra[0]!r}")
    missing = [n for n in rows if len(mine.get(n, ())) < len(rows[n])]
    if missing:
        raise AnnotationError(f"{pred_name}: {len(missing)} image(s) of {gt_name} have no prediction, "
                              f"first {missing[0]!r}")
    order = np.empty(len(pred), dtype=np.int64)
    for name, p_idx in mine.items():
        g_idx = rows[name]
        if len(p_idx) == 1:
            order[p_idx[0]] = g_idx[0]
            continue
        cost = np.linalg.norm(pred.landmarks[p_idx][:, None] - gt.landmarks[g_idx][None], axis=3).mean(axis=2)
        r, c = linear_sum_assignment(cost)
        order[np.asarray(p_idx)[r]] = np.asarray(g_idx)[c]
    return order


def score_files(pred_path: str, gt_path: str, dataset: str | None = None) -> tuple[str, int, dict[str, float]]:
    """(dataset, number of images, {keys.NME, keys.FR, keys.AUC}) of a prediction CSV against GT."""
    from atf.datasets import dataset_for_points, get_dataset, normalizers
    from atf.metrics import nme, summarize
    from atf.readers import AnnotationError, read_csv
    gt = read_csv(gt_path)
    pred = read_csv(pred_path)
    name = dataset or dataset_for_points(gt.num_points)
    spec = get_dataset(name)
    gt = read_csv(gt_path, dataset=spec.name, scheme=spec.scheme)
    if pred.num_points != gt.num_points:
        raise AnnotationError(f"{pred_path}: {pred.num_points} points, but {gt_path} has {gt.num_points}")
    gt = gt.subset(match_rows(pred, gt, pred_path, gt_path))
    errors = nme(pred.landmarks, gt.landmarks, normalizers(gt))
    return spec.name, len(gt), summarize(errors)


def _table(dataset: str, n: int, m: dict[str, float]) -> str:
    from atf import keys
    t = keys.FAIL_THRESHOLD
    head = f"{'dataset':<10} {'images':>7} {'NME (%)':>8} {f'FR@{t:g} (%)':>11} {f'AUC@{t:g}':>8}"
    row = f"{dataset:<10} {n:>7d} {m[keys.NME]:>8.3f} {m[keys.FR]:>11.2f} {m[keys.AUC]:>8.4f}"
    return f"{head}\n{row}"


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("atf-eval", __doc__.strip().splitlines()[0].split(": ", 1)[1], EXAMPLES)
    ck = p.add_argument_group("checkpoint mode (atf-eval CHECKPOINT)")
    ck.add_argument("checkpoint", nargs="?", default=None,
                    help="a training checkpoint (<run>/checkpoints/best.pt or last.pt)")
    ck.add_argument("--subsets", default=None, metavar="A,B",
                    help="comma-separated test subsets (default: all the dataset has)")
    add_data_root(ck, "data root holding the test sets (default: the run's data.root)")
    ck.add_argument("--flip", action="store_true", help="test-time flip averaging")
    ck.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    ck.add_argument("--crop-cache", default=None, choices=("auto", "on", "off"),
                    help="read the test faces through the crop cache (atf.cropcache; the same numbers, "
                         "faster on large photos), or from the photos (default: the run's data.crop_cache)")
    ck.add_argument("--protocol", default=None, choices=("benchmark", "ocn"),
                    help="NME protocol (default benchmark: original pixels); ocn: the public OCN code's crop "
                         "units, the protocol of the paper's OCN numbers (docs/protocol.md)")
    files = p.add_argument_group("prediction-file mode (atf-eval --pred P.csv --gt G.csv)")
    files.add_argument("--pred", default=None, metavar="CSV", help="predictions in the annotation CSV layout")
    files.add_argument("--gt", default=None, metavar="CSV", help="ground-truth annotation CSV")
    both = p.add_argument_group("both modes")
    both.add_argument("--dataset", default=None, metavar="NAME",
                      help="checkpoint: the head to score (default: the run's target); files: the registry "
                           "name (default: inferred from the point count)")
    both.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _mode(p: argparse.ArgumentParser, a: argparse.Namespace) -> str:
    """"checkpoint" or "files"; a mix of the two, or neither, is a usage error."""
    if a.checkpoint and (a.pred or a.gt):
        p.error("give a CHECKPOINT or --pred/--gt, not both")
    if a.checkpoint:
        return "checkpoint"
    if not (a.pred and a.gt):
        p.error("give a CHECKPOINT (checkpoint mode) or both --pred and --gt (prediction-file mode)")
    given = [f"--{k.replace('_', '-')}" for k in CHECKPOINT_ONLY
             if getattr(a, k) not in (None, False, "auto")]
    if given:
        p.error(f"{', '.join(given)} only apply to checkpoint mode")
    return "files"


def score_checkpoint(a: argparse.Namespace) -> int:
    """Checkpoint mode: the run's config from the checkpoint, its test subsets scored by `atf.evaluate`."""
    from atf import keys
    from atf.checkpoint import load_checkpoint
    from atf.config import RunConfig, from_dict, override
    from atf.device import pick_device
    from atf.evaluate import report_tests
    from atf.models import build_model
    from atf.rundata import RunData

    state = load_checkpoint(Path(a.checkpoint))
    cfg = from_dict(RunConfig, state["run_config"])
    upd: dict[str, Any] = {"eval.flip_test": a.flip or cfg.eval.flip_test, "device": a.device}
    if a.data_root:
        upd["data.root"] = a.data_root
    if a.crop_cache:
        upd["data.crop_cache"] = {"on": True, "off": False}.get(a.crop_cache, "auto")
    cfg = override(cfg, upd)
    head = a.dataset or cfg.target
    if head not in state["heads"]:
        print(f"atf-eval: {a.checkpoint}: no head {head!r}; heads: {sorted(state['heads'])}", file=sys.stderr)
        return 2
    device = pick_device(cfg.device)
    model = build_model(cfg.model, state["heads"], cfg.input_size, cfg.heatmap_size)
    model.load_state_dict(state["model"])
    model.to(device)
    protocol = a.protocol or keys.PROTOCOL_BENCHMARK
    subsets = tuple(a.subsets.split(",")) if a.subsets else None
    rep = report_tests(model, head, RunData(cfg, splits=False), device, subsets=subsets, protocol=protocol)
    rows: dict[str, dict[str, float]] = {}
    for name, v in rep.metrics.items():
        _, _, subset, m = keys.parse_protocol_metric(name)
        rows.setdefault(subset, {})[m] = v
    if a.json:
        print(json.dumps({"checkpoint": a.checkpoint, "dataset": head, "protocol": protocol, "subsets": rows,
                          "notes": rep.notes}))
        return 0
    print(f"{head} ({a.checkpoint}), NME protocol {protocol}")
    print(f"{'subset':<14}{'NME %':>8}{'FR@0.1 %':>10}{'AUC@0.1':>9}")
    for subset, r in rows.items():
        print(f"{subset:<14}{r[keys.NME]:>8.3f}{r[keys.FR]:>10.2f}{r[keys.AUC]:>9.4f}")
    for n in rep.notes:
        print(f"note: {n}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    if _mode(p, a) == "checkpoint":
        try:
            return score_checkpoint(a)
        except ValueError as e:   # CheckpointError, ConfigError, ...: one line, not a traceback
            print(f"atf-eval: {e}", file=sys.stderr)
            return 2
    try:
        dataset, n, m = score_files(a.pred, a.gt, a.dataset)
    except ValueError as e:   # AnnotationError, DatasetError, MetricError, SchemeError
        print(f"atf-eval: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps({"dataset": dataset, "images": n, **m}))
    else:
        print(_table(dataset, n, m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
