"""`atf-eval`: score landmark predictions, or evaluate a checkpoint.

    atf-eval --pred PRED.csv --gt GT.csv [--dataset NAME] [--json]
    atf-eval CHECKPOINT [options]          (delegated to atf.evaluate.checkpoint_main)

Predictions are written in the annotation CSV layout. Rows are matched by image name, in any
order; when one image holds several faces, its rows are paired by least landmark distance.
The NME normaliser is the dataset's (eye corners, or AFLW's GT box_size).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

from atf import keys
from atf.datasets import dataset_for_points, get_dataset, normalizers
from atf.metrics import nme, summarize
from atf.readers import AnnotationError, AnnotationSet, read_csv

__all__ = ["main", "score_files", "match_rows"]


def match_rows(pred: AnnotationSet, gt: AnnotationSet, pred_name: str, gt_name: str) -> np.ndarray:
    """For each prediction row, its GT row. Names match one to one; the faces of an image that
    holds several are paired by least total landmark distance (order-independent)."""
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
    t = keys.FAIL_THRESHOLD
    head = f"{'dataset':<10} {'images':>7} {'NME (%)':>8} {f'FR@{t:g} (%)':>11} {f'AUC@{t:g}':>8}"
    row = f"{dataset:<10} {n:>7d} {m[keys.NME]:>8.3f} {m[keys.FR]:>11.2f} {m[keys.AUC]:>8.4f}"
    return f"{head}\n{row}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and "--pred" not in argv:
        from atf.evaluate import checkpoint_main  # the trainer's evaluation of a checkpoint
        try:
            return int(checkpoint_main(argv) or 0)
        except ValueError as e:   # CheckpointError, ConfigError, ...: one line, not a traceback
            print(f"atf-eval: {e}", file=sys.stderr)
            return 2
    ap = argparse.ArgumentParser(prog="atf-eval", description=__doc__.strip().splitlines()[0],
                                 epilog="atf-eval CHECKPOINT --help: the options of checkpoint evaluation")
    ap.add_argument("--pred", required=True, help="predictions in the annotation CSV layout")
    ap.add_argument("--gt", required=True, help="ground-truth annotation CSV")
    ap.add_argument("--dataset", help="registry name (default: inferred from the point count)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    try:
        dataset, n, m = score_files(args.pred, args.gt, args.dataset)
    except ValueError as e:   # AnnotationError, DatasetError, MetricError, SchemeError
        print(f"atf-eval: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"dataset": dataset, "images": n, **m}))
    else:
        print(_table(dataset, n, m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
