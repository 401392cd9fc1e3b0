"""`atf-sweep`: run a sweep file through Ray Tune (+ Optuna), logging to MLflow.

    atf-sweep sweeps/demo.yaml                 # local Ray, sqlite:///<cwd>/mlflow.db
    atf-sweep --dry-run sweeps/table_iii.yaml  # list the cells, run nothing
    atf-sweep --resume sweeps/demo.yaml        # continue after the driver was killed
    atf-sweep sweeps/table_iv.yaml --profile smoke   # the same cells, shrunk, on SynthFace
    atf-sweep sweeps/table_iii.yaml --address ray://head:10001 --mlflow-uri http://head:5000
    atf-sweep submit sweeps/table_iii.yaml --address http://head:8265   # Ray Jobs API
    atf-sweep sweeps/table_iv.yaml --data-root /data/real     # the real datasets (or export ATF_DATA)

`atf-sweep submit FILE --address http://HEAD:8265 [...]` sends the same sweep to a Ray cluster as a
job (Ray Jobs API); `atf-sweep submit --help` lists its options.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from atf.cli.common import MLFLOW_URI_HELP, add_data_root, default_mlflow_uri, make_parser
from atf.config import ConfigError, parse_assignments, protocol_summary
from orchestration.sweepfile import Sweep, load_sweep

__all__ = ["main", "build_parser", "format_cells"]


def build_parser() -> argparse.ArgumentParser:
    usage = "atf-sweep [options] FILE\n       atf-sweep submit FILE --address http://HEAD:8265 [submit options]"
    p = make_parser("atf-sweep", "Run an ATF sweep file (Ray Tune + Optuna + MLflow), here or on a Ray "
                    "cluster; `atf-sweep submit` sends it to a cluster as a Ray job.",
                    __doc__.split("\n\n", 2)[1].replace("    ", "  ", 1).replace("\n    ", "\n  "))
    p.usage = usage
    p.add_argument("file", type=Path, help="sweep YAML (sweeps/*.yaml)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the cells it would run and what they will cost (trials, images, FLOPs, hours on "
                        "a measured device, loader cores), then exit")
    p.add_argument("--cost-device", default=None, metavar="NAME",
                   help="dry run: price the sweep on this device of orchestration/throughput.yaml (default: "
                        "its first GPU, else its CPU measurement)")
    p.add_argument("--resume", action="store_true",
                   help="continue the last launch of this sweep (after the driver was killed)")
    p.add_argument("--rerun", action="store_true", help="run cells even when MLflow has them finished")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every cell, e.g. --set optim.epochs=5 (repeatable)")
    add_data_root(p, "data root of every cell, the same as --set data.root=DIR (default: the sweep file's, "
                     "else $ATF_DATA)")
    p.add_argument("--profile", default=None, metavar="NAME",
                   help="apply sweeps/profiles/NAME.yaml after the sweep file, e.g. smoke (every cell, "
                        "shrunk, on SynthFace; default: none)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray started here)")
    p.add_argument("--connect-timeout", type=float, default=60.0, metavar="S",
                   help="seconds to reach the Ray cluster of --address before giving up (default: 60)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--mlflow-uri", default=None, metavar="URI", help=MLFLOW_URI_HELP)
    p.add_argument("--experiment", default="atf", help="MLflow experiment name")
    p.add_argument("--storage", default=None,
                   help="Tune storage_path: local dir, shared mount or s3:// (default: <cwd>/ray_results)")
    p.add_argument("--max-failures", type=int, default=None, help="retries per trial (default: sweep file)")
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                   help="epochs between trial checkpoints, what a retry resumes from (0 = none; default: 1)")
    p.add_argument("--checkpoint-period", type=float, default=60.0, metavar="S",
                   help="at least S seconds between a trial's checkpoints, so a crash loses at most about S "
                        "seconds of work and a trial of seconds is not slowed by them (0 = every N epochs; "
                        "default: 60)")
    p.add_argument("--cpus-per-trial", type=float, default=None, help="override resources.cpu (default: sweep file)")
    p.add_argument("--gpus-per-trial", type=float, default=None, help="override resources.gpu (default: sweep file)")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="override max_concurrent (default: sweep file, else as many as resources allow)")
    p.add_argument("--base-dir", default=None,
                   help="folder that relative paths (data, store, storage) resolve against (default: cwd)")
    p.add_argument("--scratch", default=None, metavar="DIR",
                   help="trials' working folder on each node, local disk best (default: <tmp>/atf-trials)")
    p.add_argument("--quiet", action="store_true", help="no live progress lines")
    p.add_argument("--worker-logs", action="store_true", help="show the Ray workers' own output (debugging)")
    p.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                   help="seconds between progress lines (trials done/running, each trial's epoch and ETA)")
    return p


def format_cells(sweep: Sweep) -> str:
    """Aligned table of the cells (id, tables and key config values)."""
    rows = [c.summary() for c in sweep.cells()]
    if not rows:
        return "(no cells)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols) for r in rows]
    lines += ["", "protocol per cell (docs/protocol.md):"]
    lines += [f"{c.cell_id}  {protocol_summary(c.config)}" for c in sweep.cells()]
    return "\n".join(line.rstrip() for line in lines)


def _preflight(sweep: Sweep, cwd: Path, uri: str, storage: str | None, generate: bool,
               scratch: str | None = None) -> bool:
    """Preflight (orchestration.preflight): print every problem, one line each; make absent
    SynthFace roots when `generate` (a dry run only says it would). True when the sweep may start."""
    from orchestration.preflight import check, make_synth
    report = check(sweep, cwd, uri, storage, scratch=scratch)
    for note in report.notes:
        print(f"atf-sweep: note: {note}", file=sys.stderr)
    if report.problems:
        print(f"atf-sweep: {sweep.path}: {len(report.problems)} problem(s) found before starting; "
              "nothing ran:", file=sys.stderr)
        for line in report.lines():
            print(f"  {line}", file=sys.stderr)
        return False
    if report.generate and not generate:
        for root, spec in report.generate.items():
            print(f"SynthFace data {root} is absent: a run generates it first (scale {spec.scale:g}, "
                  f"seed {spec.seed})")
        return True
    if report.generate:
        for root, spec in report.generate.items():
            make_synth(root, spec)
        again = check(sweep, cwd, uri, storage, scratch=scratch)  # the files just made, through the same readers
        if again.problems:
            print(f"atf-sweep: {sweep.path}: problems after generating the data:", file=sys.stderr)
            for line in again.lines():
                print(f"  {line}", file=sys.stderr)
            return False
    return True


def _after(sweep: Sweep, summary: Any, uri: str, experiment: str) -> None:
    """Why each failed cell failed (one line each), and how to open the runs table."""
    from orchestration.mlflow_log import TrackingStore, runs_url, ui_command
    store = TrackingStore(uri, experiment)
    reasons = store.failure_reasons(summary.failed_cells) if summary.failed_cells else {}
    for cid in summary.failed_cells:
        label = next((c.label for c in sweep.cells() if c.cell_id == cid), cid)
        print(f"  failed: {label} ({cid}): {reasons.get(cid, 'no finished run (see the Tune logs)')}")
    cmd = ui_command(uri)
    print(f"MLflow runs: {runs_url(uri, store.experiment_id)}" + (f"   (serve it first: {cmd})" if cmd else ""))


def _print_cost(sweep: Sweep, cwd: Path, device: str | None) -> None:
    """The dry run's closing lines (orchestration.cost); a cell it cannot price is said, not fatal."""
    from orchestration.cost import sweep_cost_lines
    from orchestration.sweepfile import resolve_paths, synth_for

    def synth_of(cell):
        spec = synth_for(cell.config, sweep.synth)
        return (spec.scale, spec.seed) if spec is not None else None
    try:
        lines = sweep_cost_lines(sweep.cells(), lambda c: resolve_paths(c.config, cwd), synth_of, device)
    except (ValueError, OSError) as e:   # an unknown dataset or scheme: preflight said so already
        lines = [f"cost before it starts: not computed ({' '.join(str(e).split())})"]
    print()
    print("\n".join(lines))


def _submit(argv: list[str]) -> int:
    from orchestration.jobs import submit
    return submit(argv, build_parser())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "submit":
            return _submit(argv[1:])
        args = build_parser().parse_args(argv)
        if args.data_root:
            args.sets.append(f"data.root={args.data_root}")
        if args.base_dir:  # a submitted job: the sweep file is in the job's copy, data under base-dir
            args.file = args.file.resolve()
            os.chdir(args.base_dir)
        sweep = load_sweep(args.file, parse_assignments(args.sets), args.profile)
        cwd = Path.cwd().resolve()
        uri = args.mlflow_uri or default_mlflow_uri(cwd)
        if args.dry_run:  # the cells, then the preflight's verdict
            n_search = sum(c.search.num_samples for c in sweep.cells() if c.search)
            print(f"sweep {sweep.name} ({args.file}): {len(sweep.cells())} cells"
                  + (f", {n_search} search samples" if n_search else ""))
            print(format_cells(sweep), flush=True)
            ok = _preflight(sweep, cwd, uri, args.storage, False, args.scratch)
            _print_cost(sweep, cwd, args.cost_device)
            return 0 if ok else 2
        if not _preflight(sweep, cwd, uri, args.storage, True, args.scratch):
            return 2
        from orchestration.runner import SweepOptions, run_sweep
        opts = SweepOptions(
            address=args.address or os.environ.get("RAY_ADDRESS") or None,
            num_cpus=args.num_cpus, mlflow_uri=uri, experiment=args.experiment,
            storage=args.storage, resume=args.resume, rerun=args.rerun,
            max_failures=args.max_failures, cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
            progress=not args.quiet, progress_every=args.progress_every, base_dir=args.base_dir,
            checkpoint_every=args.checkpoint_every, checkpoint_period=args.checkpoint_period,
            connect_timeout=args.connect_timeout, scratch=args.scratch,
            worker_logs=args.worker_logs)
        from orchestration.runner import SweepError, SweepInterrupted
        try:
            summary = run_sweep(sweep, opts)
        except SweepError as e:
            print(f"atf-sweep: error: {e}", file=sys.stderr)
            return 2
        except SweepInterrupted as e:
            print(f"atf-sweep: {e}; continue with: atf-sweep {args.file} --resume", file=sys.stderr)
            return 128 + e.signum
        print(summary.line())
        _after(sweep, summary, uri, args.experiment)
        return 0 if summary.ok else 1
    except ConfigError as e:
        print(f"atf-sweep: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
