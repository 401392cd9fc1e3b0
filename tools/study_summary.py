"""Print the README's SynthFace study rows from an MLflow store (baseline vs ATF, mean ± std over seeds),
or, with --claims, the table of the paper's claims that a sweep file tests (reports/claims.yaml).

    python tools/study_summary.py --mlflow-uri sqlite:///mlflow.db --sweep synth_study_wa \
        --baseline baseline-wflw --atf atf-WA --dataset wflw --subsets full,largepose,illumination
    python tools/study_summary.py --claims sweeps/synth_claims.yaml --mlflow-uri sqlite:///mlflow.db
    python tools/study_summary.py --claims sweeps/synth_claims.yaml --profile claims_ci --set data.root=DIR
    python tools/study_summary.py --claims sweeps/synth_claims.yaml --curves atf-WA,atf-WA-wod

--claims reads exactly the cells the sweep file makes (with the same --profile and --set as the
atf-sweep command that ran it), one finished run per cell, and judges every comparison by the
report's spread rule (reports/verdicts.py). Exit status 0 when every row has a verdict, 1 when a
cell has no finished run, 2 on bad input (one line).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

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


def study_rows(a: argparse.Namespace) -> int:
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


# -- --claims ----------------------------------------------------------------------------------

def _overrides(items: list[str], data_root: str | None) -> dict:
    from atf.config import parse_assignments
    out = parse_assignments(items)
    if data_root:
        out["data.root"] = data_root
    return out


def claim_values(uri: str, cells: list, metrics: set[str]) -> tuple[dict, list[str]]:
    """(experiment, metric) -> seed -> value from each cell's finished run; and the cells lacking one."""
    from orchestration.mlflow_log import TrackingStore
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ValueError(f"MLflow store {uri} does not exist (run the sweep first, or pass --mlflow-uri)")
    done = TrackingStore(uri).finished_cells([c.cell_id for c in cells])
    values: dict[tuple[str, str], dict[str, float]] = {}
    missing = []
    for c in cells:
        run = done.get(c.cell_id)
        if run is None:
            missing.append(c.label or f"{c.experiment} s{c.seed}")
            continue
        for m in metrics & set(run.data.metrics):
            values.setdefault((c.experiment, m), {})[str(c.seed)] = float(run.data.metrics[m])
    return values, missing


def claims_table(a: argparse.Namespace) -> int:
    from orchestration.sweepfile import load_sweep
    from reports.verdicts import judge_all, load_claims, render_markdown

    spec = load_claims(Path(a.claims_file)) if a.claims_file else load_claims()
    sweep = load_sweep(a.claims, _overrides(a.set, a.data_root), a.profile)
    names = {c.experiment for c in sweep.cells()}
    absent = sorted(spec.experiments() - names)
    if absent:
        raise ValueError(f"{a.claims}: the claims name experiments the sweep file lacks: {', '.join(absent)}")
    wanted = [c for c in sweep.cells() if c.experiment in spec.experiments()]
    metrics = {s.metric for cl in spec.claims for cmp in cl.comparisons for s in (cmp.ours, cmp.other)}
    values, missing = claim_values(a.mlflow_uri, wanted, metrics)
    print(render_markdown(judge_all(spec, values), command=a.command or _command(a)), end="")
    if missing:
        print(f"\n{len(missing)} cell(s) without a finished run: {', '.join(missing)}", file=sys.stderr)
    return 1 if missing else 0


def curves_table(a: argparse.Namespace) -> int:
    """Per run of the --curves experiments: the selected epoch, how much validation NME still moves
    between epochs at the end, and the main stage's seconds (is a schedule long enough?)."""
    from mlflow.tracking import MlflowClient

    from orchestration.mlflow_log import TrackingStore
    from orchestration.sweepfile import load_sweep
    wanted = a.curves.split(",")
    sweep = load_sweep(a.claims, _overrides(a.set, a.data_root), a.profile)
    cells = [c for c in sweep.cells() if c.experiment in wanted]
    if not cells:
        raise ValueError(f"{a.claims}: no experiment named {', '.join(wanted)}")
    done = TrackingStore(a.mlflow_uri).finished_cells([c.cell_id for c in cells])
    client = MlflowClient(a.mlflow_uri)
    print("| run | selected epoch | median \\|Δ val NME\\| between epochs, last 10 | main stage (s) |")
    print("|---|---:|---:|---:|")
    for c in sorted(cells, key=lambda c: (wanted.index(c.experiment), c.seed)):
        run = done.get(c.cell_id)
        if run is None:
            print(f"| {c.experiment} s{c.seed} | – | – | – |")
            continue
        h = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/nme") if m.step > 0)
        best = f"{min(h, key=lambda t: t[1])[0]}/{h[-1][0]}" if h else "–"
        steps = [abs(h[i][1] - h[i - 1][1]) for i in range(max(1, len(h) - 10), len(h))]
        moves = f"{statistics.median(steps):.2f}" if steps else "– (one epoch)"
        print(f"| {c.experiment} s{c.seed} | {best} | {moves} "
              f"| {run.data.metrics.get('time/main_seconds', float('nan')):.0f} |")
    return 0


def _command(a: argparse.Namespace) -> str:
    """The atf-sweep command whose cells the table reads."""
    parts = ["atf-sweep", a.claims] + (["--profile", a.profile] if a.profile else [])
    parts += [f"--set {shlex.quote(s)}" for s in a.set] + (["--data-root", a.data_root] if a.data_root else [])
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mlflow-uri", default="sqlite:///mlflow.db")
    p.add_argument("--sweep", default="synth_study_wa")
    p.add_argument("--baseline", default="baseline-wflw")
    p.add_argument("--atf", default="atf-WA")
    p.add_argument("--dataset", default="wflw")
    p.add_argument("--subsets", default="full,largepose,illumination")
    p.add_argument("--claims", default=None, metavar="SWEEP_FILE",
                   help="print the claims table of this sweep file's cells (reports/claims.yaml)")
    p.add_argument("--claims-file", default=None, metavar="YAML", help="claims spec (default: reports/claims.yaml)")
    p.add_argument("--profile", default=None, help="--claims: the profile the sweep ran with")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="--claims: the --set overrides the sweep ran with (repeatable)")
    p.add_argument("--data-root", default=None, help="--claims: the --data-root the sweep ran with")
    p.add_argument("--command", default="", help="--claims: the command line named under the table")
    p.add_argument("--curves", default=None, metavar="EXP[,EXP]",
                   help="--claims: instead of verdicts, each run's selected epoch, late epoch-to-epoch "
                        "validation moves and main-stage seconds for these experiments")
    a = p.parse_args(argv)
    if not a.claims:
        return study_rows(a)
    try:
        return curves_table(a) if a.curves else claims_table(a)
    except (ValueError, OSError) as e:   # ConfigError, SweepError, ClaimError: one line
        print(f"study_summary: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
