"""atf-report: the paper's tables I-X (and figures) rebuilt from an MLflow store.

Bad input (unknown table, empty or unreachable store, runs lacking metrics) gives a one-line
message, and the report still renders what it can: a table without runs shows the paper's
values beside dashes and says which sweep cell would fill each dash.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from atf.cli.common import MLFLOW_URI_HELP, default_mlflow_uri, make_parser

from .layouts import TABLE_IDS, LayoutError, load_tables, parse_table_ids
from .sweeps import SweepIndex

if TYPE_CHECKING:   # the heavy modules (pandas, matplotlib, mlflow) load after parsing: --help is fast
    from .collect import RunFilter, Runs
    from .compute import TableResult
    from .figures import ArtifactCache

__all__ = ["main", "build_report"]

FORMATS = ("md", "tex")
REPORT_TEX = "report.tex"          # \\input{}s every table_<ID>.tex: `pdflatex report.tex` in --out
DEFAULT_UI_URL = "http://127.0.0.1:5000"   # what `mlflow ui` serves


EXAMPLES = """
  atf-report                                    # every table from sqlite:///<cwd>/mlflow.db -> report/
  atf-report --tables IV,VII --format md        # some tables, Markdown only
  atf-report --sweep demo --tag data=real --tag backbone=hrnet_w18
  atf-report --mlflow-uri http://head:5000 --out /tmp/report   # cells link to that server's UI
  cd report && pdflatex report.tex              # every table as a paper's table float
"""


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("atf-report", __doc__.splitlines()[0], EXAMPLES)
    p.add_argument("--mlflow-uri", default=None, metavar="URI", help=MLFLOW_URI_HELP)
    p.add_argument("--out", type=Path, default=Path("report"), metavar="DIR", help="output folder")
    p.add_argument("--tables", default=",".join(TABLE_IDS), metavar="IDS", help="comma-separated, e.g. IV,VII")
    p.add_argument("--format", default="md,tex", metavar="FORMATS",
                   help="comma-separated of: md (GitHub tables), tex (table floats + report.tex)")
    p.add_argument("--sweep", default=None, metavar="NAME",
                   help="only runs of this sweep (the sweep file's stem; default: runs of every sweep)")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="only runs with this tag (repeatable; default: no tag filter); KEY e.g. data, "
                        "backbone, atf.seed")
    p.add_argument("--sweeps-dir", type=Path, default=Path("sweeps"), metavar="DIR",
                   help="sweep files consulted to say which cell fills a missing value")
    p.add_argument("--no-figures", action="store_true", help="skip CED curves and the Fig. 5 picture")
    p.add_argument("--mlflow-ui-url", default=None, metavar="URL",
                   help="MLflow UI that each of our cells links to (default: the tracking server for an "
                        f"http(s) --mlflow-uri, else {DEFAULT_UI_URL}, what `mlflow ui` serves; '' = no links)")
    return p


def _formats(text: str) -> list[str]:
    wanted = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in wanted if f not in FORMATS]
    if bad or not wanted:
        raise ValueError(f"--format {text!r}: choose from {','.join(FORMATS)}")
    return wanted


def _empty_runs(uri: str) -> Runs:
    import pandas as pd

    from .collect import METRIC_COLUMNS, RUN_COLUMNS, Runs
    return Runs(uri, pd.DataFrame(columns=list(RUN_COLUMNS)), pd.DataFrame(columns=list(METRIC_COLUMNS)))


def _figures(result: TableResult, runs: Runs, cache: ArtifactCache, out: Path,
             want_fig5: bool) -> tuple[list[Path], list[str], str]:
    """CED PNGs of one table (+ the Fig. 5 picture when still wanted): paths, notes, why no Fig. 5."""
    from .figures import ced_figures, comparison_figure
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    paths, notes = ced_figures(result, cache, fig_dir)
    why = ""
    if want_fig5:
        fig5, why = comparison_figure(result, runs, cache, fig_dir)
        paths += [fig5] if fig5 else []
    return paths, notes, why


def _filters_text(run_filter: RunFilter) -> str:
    return ", ".join([f"sweep={run_filter.sweep}"] * bool(run_filter.sweep)
                     + [f"{k}={v}" for k, v in run_filter.tags.items()])


def _read_runs(uri: str, run_filter: RunFilter) -> tuple[Runs, list[str], int]:
    """The store's reported runs, or none with a one-line reason (exit status 1 if unreadable)."""
    from .collect import StoreError, collect
    try:
        runs = collect(uri, run_filter)
    except StoreError as exc:
        return _empty_runs(uri), [f"{exc}; tables show the paper's values only"], 1
    if runs.empty:
        which = f" matching {_filters_text(run_filter)}" if run_filter.sweep or run_filter.tags else ""
        return runs, [f"no finished table runs in {uri}{which}; tables show the paper's values only"], 0
    return runs, [], 0


def ui_url_for(uri: str, ui_url: str | None) -> str:
    """The MLflow UI address our cells link to: the given one, the tracking server itself, or what
    `mlflow ui` serves by default; "" turns links off."""
    if ui_url is not None:
        return ui_url
    return uri if uri.startswith(("http://", "https://")) else DEFAULT_UI_URL


def _write_table(result: TableResult, out: Path, formats: list[str], sweeps: SweepIndex,
                 figs: list[str], ui_url: str = "") -> list[str]:
    """The table's files in the chosen formats; returns their names relative to `out`."""
    from .render import missing_groups, render_latex, render_markdown
    tid, written = result.table.id, []
    if "md" in formats:
        (out / f"table_{tid}.md").write_text(render_markdown(result, missing_groups(result, sweeps), figs,
                                                             ui_url or None))
        written.append(f"table_{tid}.md")
    if "tex" in formats:
        (out / f"table_{tid}.tex").write_text(render_latex(result))
        written.append(f"table_{tid}.tex")
    return written


def build_report(uri: str, out: Path, tables: list[str], formats: list[str], run_filter: RunFilter,
                 sweeps_dir: Path, figures: bool = True, ui_url: str | None = None) -> tuple[list[str], int]:
    """Write the report; returns (notes for the user, exit status)."""
    from .compute import NO_RUN, compute_table
    from .figures import ArtifactCache
    from .render import render_index, render_report_tex
    runs, notes, status = _read_runs(uri, run_filter)
    out.mkdir(parents=True, exist_ok=True)
    sweeps = SweepIndex.from_dir(sweeps_dir, run_filter.sweep)
    layouts = load_tables()
    results, files, all_figs, fig5_why = [], {}, [], []
    cache = (ArtifactCache(uri, dict(zip(runs.runs["run_id"], runs.runs["artifact_uri"])))
             if figures and not runs.empty else None)
    try:
        for tid in tables:
            result = compute_table(layouts[tid], runs)
            results.append(result)
            notes += [f"Table {tid}: {p}" for p in sorted({c.problem for c in result.cells.values()
                                                           if c.problem not in ("", NO_RUN)})]
            figs: list[str] = []
            if cache is not None:
                want_fig5 = not any("fig5_" in f for f in all_figs)
                paths, more, why = _figures(result, runs, cache, out, want_fig5)
                figs = [str(p.relative_to(out)) for p in paths]
                all_figs += figs
                notes += more
                fig5_why += [why] if why else []
            files[tid] = _write_table(result, out, formats, sweeps, figs, ui_url_for(uri, ui_url))
    finally:
        if cache is not None:
            cache.close()
    if cache is not None and not any("fig5_" in f for f in all_figs):
        # the most specific reason: a table that had a pair but lacked images beats one without a pair
        specific = [w for w in fig5_why if w.startswith("Fig. 5")]
        notes.append((specific or fig5_why or ["Fig. 5 skipped"])[0])
    notes += sweeps.problems
    if "tex" in formats:
        (out / REPORT_TEX).write_text(render_report_tex([(r.table.id, f"table_{r.table.id}") for r in results], uri))
        files["report"] = [REPORT_TEX]
    (out / "index.md").write_text(render_index(results, files, notes, uri, all_figs, _filters_text(run_filter)))
    return notes, status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.mlflow_uri = args.mlflow_uri or default_mlflow_uri()
    from .collect import RunFilter, parse_tag_filters
    try:
        tables = parse_table_ids(args.tables)
        formats = _formats(args.format)
        run_filter = RunFilter(args.sweep, parse_tag_filters(args.tag))
    except (LayoutError, ValueError) as exc:
        print(f"atf-report: {exc}", file=sys.stderr)
        return 2
    notes, status = build_report(args.mlflow_uri, args.out, tables, formats, run_filter,
                                 args.sweeps_dir, figures=not args.no_figures, ui_url=args.mlflow_ui_url)
    for note in notes:
        print(f"atf-report: {note}", file=sys.stderr)
    print(f"atf-report: wrote {len(tables)} table(s) to {args.out}/index.md")
    return status


if __name__ == "__main__":
    sys.exit(main())
