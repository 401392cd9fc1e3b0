"""Print the README's SynthFace study rows from an MLflow store (baseline vs ATF, mean ± std over seeds).

    python tools/study_summary.py --mlflow-uri sqlite:///mlflow.db --sweep synth_study_wa \
        --baseline baseline-wflw --atf atf-WA --dataset wflw --subsets full,largepose,illumination
"""

from __future__ import annotations

import argparse
import statistics

from atf import keys


def _runs(uri: str, sweep: str) -> list:
    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, f"tags.`{keys.TAG_SWEEP}` = '{sweep}' and attributes.status = 'FINISHED'",
                              max_results=5000)


def _by_seed(runs: list, experiment: str, metric: str) -> dict[int, float]:
    out = {}
    for r in runs:
        name = r.info.run_name or ""
        if name.split(" ")[0] == experiment and metric in r.data.metrics:
            out[int(r.data.params.get("seed", name.rsplit("s", 1)[-1]))] = r.data.metrics[metric]
    return dict(sorted(out.items()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mlflow-uri", default="sqlite:///mlflow.db")
    p.add_argument("--sweep", default="synth_study_wa")
    p.add_argument("--baseline", default="baseline-wflw")
    p.add_argument("--atf", default="atf-WA")
    p.add_argument("--dataset", default="wflw")
    p.add_argument("--subsets", default="full,largepose,illumination")
    a = p.parse_args()
    runs = _runs(a.mlflow_uri, a.sweep)
    print("| protocol | subset | baseline | ATF | Δ | per seed (baseline → ATF) |")
    print("|---|---|---|---|---|---|")
    for protocol in keys.PROTOCOLS:
        for subset in a.subsets.split(","):
            metric = keys.test_metric(a.dataset, subset, keys.NME, protocol)
            b, t = _by_seed(runs, a.baseline, metric), _by_seed(runs, a.atf, metric)
            if len(b) < 2 or len(t) < 2:
                continue
            mb, mt = statistics.mean(b.values()), statistics.mean(t.values())
            sb, st = statistics.stdev(b.values()), statistics.stdev(t.values())
            seeds = ", ".join(f"s{s}: {b[s]:.2f}→{t[s]:.2f}" for s in b if s in t)
            print(f"| {protocol} | {subset} | {mb:.2f} ± {sb:.2f} | {mt:.2f} ± {st:.2f} "
                  f"| {100 * (mb - mt) / mb:+.1f}% | {seeds} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
