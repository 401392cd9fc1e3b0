"""Markdown (GitHub tables) and standalone LaTeX (booktabs) for computed tables.

Why one cell formatter for both formats: "ours (paper) change" must read the same in the
README-style Markdown and in the paper-style PDF; only escaping and bold differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from atf import keys

from .compute import CellResult, TableResult
from .layouts import METRIC_LABEL, TAG_BY_SHORT
from .sweeps import SweepIndex

__all__ = ["MissingGroup", "missing_groups", "data_statement", "render_markdown", "render_latex",
           "render_index", "LEGEND", "DASH"]

DASH = "–"
LEGEND = ("Each cell: our value (mean ± std over seeds when there are several), the paper's value "
          "in parentheses, then Δ: our relative improvement over our own baseline row in percent "
          "(the paper's \"relative ascension\"; positive = better); * the difference exceeds the "
          "seed spread (|Δmean| > √(sd₁²+sd₂²)), ~ it does not; no mark: a single seed, spread "
          f"unknown. Bold: best of ours in the column. {DASH}: no finished run yet.")
SHORT_BY_TAG = {tag: short for short, tag in TAG_BY_SHORT.items()}
_SUB = re.compile(r"_\{([^}]*)\}")


@dataclass(frozen=True)
class MissingGroup:
    """Cells of one row that no run fills, with the sweep cells that would fill them."""
    row: str
    columns: tuple[str, ...]
    metrics: tuple[str, ...]
    selector: dict[str, str]
    problem: str
    fillers: tuple[str, ...]      # "sweeps/table_iv.yaml cell 1a2b3c4d5e6f"


def missing_groups(result: TableResult, sweeps: SweepIndex | None) -> list[MissingGroup]:
    groups: dict[tuple, list[CellResult]] = {}
    for cell in result.missing:
        groups.setdefault((cell.row.key, tuple(sorted(cell.selector.items()))), []).append(cell)
    out = []
    for (_, sel), cells in groups.items():
        selector = dict(sel)
        fillers = sweeps.fillers(selector) if sweeps else []
        out.append(MissingGroup(
            f"{cells[0].row.group} {cells[0].row.label}".strip(), tuple(dict.fromkeys(c.column.label for c in cells)),
            tuple(dict.fromkeys(c.metric for c in cells)), selector,
            "; ".join(sorted({c.problem for c in cells if c.problem})),
            tuple(f"{f.sweep_file} cell {f.cell_id}" for f in fillers)))
    return out


def _source(data: str) -> str:
    if data == "real":
        return "real datasets"
    if data.startswith("synthetic"):
        return f"SYNTHETIC benchmark {data}"
    return f"UNKNOWN data source {data or '(no ' + keys.TAG_DATA + ' tag)'}"


def data_statement(result: TableResult) -> str:
    """Which data the numbers come from, so a synthetic number is never read as the paper's."""
    if not result.data:
        return "Data: no finished runs matched this table; only the paper's values are shown."
    text = f"Data: {', '.join(_source(d) for d in result.data)}."
    if any(d != "real" for d in result.data):
        text += " Numbers not on the real datasets test the pipeline; they are NOT a reproduction of the paper's."
    t = result.table
    if t.backbones and result.backbone != t.backbones[0]:
        text += f" Backbone: {result.backbone} (the paper's table uses {t.backbones[0]})."
    if result.selection:
        text += f" Model selection: {', '.join(result.selection)}."
    return text + f" Runs used: {len(result.run_ids)}."


def _fmt(value: float | None, digits: int) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _cell(cell: CellResult, digits: int, bold: tuple[str, str], pm: str, pct: str) -> str:
    paper = f"({_fmt(cell.paper, digits)})" if cell.paper is not None else ""
    if cell.row.reference:
        return paper or DASH
    if cell.ours is None:
        return f"{DASH} {paper}".strip()
    text = _fmt(cell.ours.mean, digits)
    if cell.best:
        text = f"{bold[0]}{text}{bold[1]}"
    if cell.ours.std is not None:
        text += f" {pm}{_fmt(cell.ours.std, digits)}"
    text += f" {paper}" if paper else ""
    if cell.delta is not None:
        mark = {True: "*", False: "~", None: ""}[cell.delta_exceeds_spread]
        delta = f"{cell.delta:+.1f}" if round(cell.delta, 1) != 0 else "0.0"   # never "-0.0"
        text += f" Δ{delta}{pct}{mark}"
    return text


def _header(result: TableResult) -> list[str]:
    t = result.table
    lead = (["Metric"] if len(t.sections) > 1 else []) + (["Network"] if t.grouped else []) + ["Method"]
    return lead + [c.label for c in t.columns]


def _body(result: TableResult, label, cell_text) -> list[list[str]]:
    t, rows = result.table, []
    for si, section in enumerate(t.sections):
        last_group = None
        for ri, row in enumerate(section.rows):
            lead = []
            if len(t.sections) > 1:
                lead.append(METRIC_LABEL[section.metric] if ri == 0 else "")
            if t.grouped:
                lead.append(row.group if row.group != last_group else "")
                last_group = row.group
            lead.append(label(row.label) + (" (published)" if row.reference else ""))
            rows.append(lead + [cell_text(result.cell(si, row.key, c.key)) for c in t.columns])
    return rows


def _selector_text(selector: dict[str, str]) -> str:
    return ", ".join(f"{SHORT_BY_TAG.get(k, k)}={v!r}" for k, v in selector.items())


def render_markdown(result: TableResult, groups: list[MissingGroup], figures: list[str]) -> str:
    t = result.table
    md_label = lambda s: _SUB.sub(r"<sub>\1</sub>", s)  # noqa: E731
    cells = _body(result, md_label, lambda c: _cell(c, t.decimals_for(c.metric), ("**", "**"), "±", "%"))
    head = _header(result)
    lines = [f"# Table {t.id}: {t.title}", "", f"> {data_statement(result)}", "", t.caption, "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    lines += ["", f"<sub>{LEGEND}</sub>", ""]
    if result.comparisons:
        lines += ["## Comparisons", ""]
        for c in result.comparisons:
            verdict = {True: "exceeds the seed spread", False: "within the seed spread",
                       None: "single seed, spread unknown"}[c.exceeds_spread]
            lines.append(f"- {c.metric} {c.column}: {md_label(c.row)} vs {md_label(c.versus)}: "
                         f"{c.diff:+.4g} ({'better' if c.better else 'not better'}; {verdict})")
        lines.append("")
    if groups:
        lines += ["## Missing cells", ""]
        for g in groups:
            fill = "; ".join(g.fillers) if g.fillers else "no sweep cell found with these tags"
            why = f" ({g.problem})" if g.problem else ""
            lines.append(f"- {md_label(g.row)} [{', '.join(g.metrics)}; {', '.join(g.columns)}]{why}: "
                         f"tags {_selector_text(g.selector)} -> {fill}")
        lines.append("")
    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def _tex_escape(text: str) -> str:
    text = re.sub(r"([&%#$])", r"\\\1", text)
    parts = _SUB.split(text)  # even: plain text, odd: subscript contents
    out = []
    for i, part in enumerate(parts):
        part = part.replace("_", r"\_")
        out.append(f"$_{{\\mathrm{{{part}}}}}$" if i % 2 else part)
    return "".join(out)


def render_latex(result: TableResult) -> str:
    """A standalone document (article + booktabs + graphicx) holding the one table."""
    t = result.table

    def tex_cell(c: CellResult) -> str:
        text = _cell(c, t.decimals_for(c.metric), (r"\textbf{", "}"), "PLUSMINUS", "PERCENT")
        text = _tex_escape(text).replace("PLUSMINUS", r"$\pm$").replace("PERCENT", r"\%")
        text = text.replace("Δ", r"$\Delta$").replace(DASH, "--").replace("*", r"$^{*}$")
        return text.replace("~", r"$^{\sim}$")   # a bare ~ would be a LaTeX space

    head = _header(result)
    body = _body(result, _tex_escape, tex_cell)
    spec = "l" * (len(head) - len(t.columns)) + "c" * len(t.columns)
    lines = [r"\documentclass{article}", r"\usepackage[utf8]{inputenc}", r"\usepackage{booktabs}",
             r"\usepackage{graphicx}", r"\begin{document}", r"\begin{table}[ht]", r"\centering",
             rf"\caption{{Table {t.id}: {_tex_escape(t.title)}. {_tex_escape(t.caption)}}}",
             r"\resizebox{\textwidth}{!}{%", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_tex_escape(h) for h in head) + r" \\", r"\midrule"]
    for i, row in enumerate(body):
        new_block = i and len(t.sections) > 1 and row[0]
        if new_block or (i and t.grouped and row[len(head) - len(t.columns) - 2]):
            lines.append(r"\midrule")
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}",
              rf"\noindent {_tex_escape(data_statement(result))}\par\smallskip",
              rf"\noindent{{\footnotesize {tex_legend()}}}", r"\end{document}", ""]
    return "\n".join(lines)


def tex_legend() -> str:
    return ("Cell: ours (mean $\\pm$ std over seeds), (paper), $\\Delta$ relative improvement over our "
            "baseline row in \\%; $^{*}$ beyond the seed spread, $^{\\sim}$ within it; "
            "bold: best of ours per column; --: no run.")


def render_index(results: list[TableResult], files: dict[str, list[str]], notes: list[str],
                 uri: str, figures: list[str], filters: str = "") -> str:
    """The landing page: every table with its data statement, links, and what is missing."""
    lines = ["# ATF: the paper's tables rebuilt from MLflow", "",
             f"MLflow store: `{uri}`" + (f"; runs filtered by {filters}" if filters else ""), "",
             "| Table | Title | Data | Cells filled | Files |", "|---|---|---|---|---|"]
    for r in results:
        ours = [c for c in r.cells.values() if not c.row.reference]
        filled = sum(c.ours is not None for c in ours)
        data = ", ".join(r.data) or "no runs"
        links = " ".join(f"[{f.rsplit('.', 1)[-1]}]({f})" for f in files.get(r.table.id, []))
        lines.append(f"| {r.table.id} | {r.table.title} | {data} | {filled}/{len(ours)} | {links} |")
    lines.append("")
    if any(d != "real" for r in results for d in r.data):
        lines += ["> Some tables were computed on a SYNTHETIC benchmark (see the Data column): those "
                  "numbers exercise the pipeline and are not a reproduction of the paper's.", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if figures:
        lines += ["## Figures", ""] + [f"- [{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)

