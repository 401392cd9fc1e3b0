"""`atf-sweep submit FILE --address http://HEAD:8265`: run a sweep as a Ray job.

The project folder travels as the job's working_dir (without .venv, data,
MLflow and Tune outputs); the job runs `python -m orchestration.cli FILE ...`
on the head node, so the driver, and with it the one MLflow writer, lives on
the cluster. Paths in the sweep resolve against --base-dir (default: the
submitter's cwd), so give the cluster's path when the data lives elsewhere
there, e.g. `--base-dir /shared/atf` or `--set data.root=/shared/data`.
The job's command line is quoted with `shlex.join` (the Jobs API runs it in a shell), so arguments
with spaces or shell characters arrive intact and are never run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

__all__ = ["submit", "EXCLUDES", "project_root"]

EXCLUDES = [".venv", "data", "mlruns", "mlflow.db", "mlflow.db.init-lock", "ray_results", "report",
            ".git", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"]
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


def submit(argv: list[str], run_parser: argparse.ArgumentParser) -> int:
    """`atf-sweep submit`; the options it does not know are atf-sweep's own (`run_parser`, handed in
    by orchestration.cli), passed on to the job after the submitter-side preflight read them."""
    p = argparse.ArgumentParser(prog="atf-sweep submit",
                                description="Submit a sweep to a Ray cluster through the Ray Jobs API; "
                                            "other options are passed on to atf-sweep on the cluster.")
    p.add_argument("file", type=Path)
    p.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://HEAD:8265")
    p.add_argument("--base-dir", default=None, help="where relative paths resolve on the cluster "
                   "(default: this cwd, right when the cluster shares this filesystem)")
    p.add_argument("--python", default="python", help="Python on the cluster nodes (default: python)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    args, rest = p.parse_known_args(argv)
    from ray.job_submission import JobSubmissionClient

    root = project_root()
    sweep = args.file.resolve()
    if not sweep.is_relative_to(root):
        print(f"atf-sweep submit: error: {args.file}: the sweep file must be inside the project {root}",
              file=sys.stderr)
        return 2
    from orchestration.preflight import submit_problems  # the checks this side can make, before the job
    run_args, _ = run_parser.parse_known_args([str(args.file), *rest])
    problems = submit_problems(args.file, run_args, args.base_dir)
    if problems:
        print(f"atf-sweep submit: {args.file}: {len(problems)} problem(s); nothing submitted:", file=sys.stderr)
        print("\n".join(f"  {line}" for line in problems), file=sys.stderr)
        return 2
    base = args.base_dir or str(Path.cwd().resolve())
    entry = [args.python, "-m", "orchestration.cli", str(sweep.relative_to(root)), "--base-dir", base, *rest]
    client = JobSubmissionClient(args.address)
    for attempt in range(30):  # a head that just started may not have its job agent up yet
        try:
            job = client.submit_job(entrypoint=shlex.join(entry),  # the Jobs API runs it in a shell
                                    runtime_env={"working_dir": str(root), "excludes": EXCLUDES})
            break
        except RuntimeError as e:
            if "No available agent" not in str(e) or attempt == 29:
                raise
            time.sleep(2.0)
    print(f"submitted job {job} to {args.address}: {shlex.join(entry)}", flush=True)
    if args.no_wait:
        return 0
    shown = 0
    while True:
        status = str(client.get_job_status(job)).rsplit(".", 1)[-1]
        logs = client.get_job_logs(job)
        if len(logs) > shown:
            print(logs[shown:], end="", flush=True)
            shown = len(logs)
        if status in _TERMINAL:
            print(f"job {job}: {status}")
            return 0 if status == "SUCCEEDED" else 1
        time.sleep(2.0)
