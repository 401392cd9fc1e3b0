"""`atf-eval`: score landmark predictions, or evaluate a checkpoint.

    atf-eval --pred PRED.csv --gt GT.csv [--dataset NAME] [--json]
    atf-eval CHECKPOINT [options]          (delegated to atf.evaluate.checkpoint_main)

Predictions are written in the annotation CSV layout. Rows are matched by image name (the
k-th row of a name in PRED with the k-th row of that name in GT, since one image may hold
several faces); the NME normaliser is the dataset's (eye corners, or AFLW's GT box_size).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import numpy as np

from atf import keys

__all__ = ["main", "score_files"]


def _keys(images: tuple[str, ...]) -> list[tuple[str, int]]:
    seen: Counter[str] = Counter()
    out = []
    for name in images:
        out.append((name, seen[name]))
        seen[name] += 1
    return out


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
    gt_rows = {k: i for i, k in enumerate(_keys(gt.images))}
    pred_keys = _keys(pred.images)
    extra = [k for k in pred_keys if k not in gt_rows]
    if extra:
        raise AnnotationError(f"{pred_path}: {len(extra)} prediction row(s) not in {gt_path}, "
                              f"first {extra[0][0]!r}")
    if len(pred_keys) != len(gt_rows):
        have = set(pred_keys)
        missing = next(k for k in gt_rows if k not in have)
        raise AnnotationError(f"{pred_path}: {len(gt_rows) - len(pred_keys)} image(s) of {gt_path} "
                              f"have no prediction, first {missing[0]!r}")
    order = np.array([gt_rows[k] for k in pred_keys])
    gt = gt.subset(order)
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
        return int(checkpoint_main(argv) or 0)
    ap = argparse.ArgumentParser(prog="atf-eval", description=__doc__.strip().splitlines()[0])
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
