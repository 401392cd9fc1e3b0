"""Markdown (GitHub tables) and LaTeX (booktabs + siunitx table floats) for computed tables.

Why one row model for both formats: every method gets its own rows, "ours", "Δ vs baseline" and
"paper", so a paper value can never be read as a standard deviation or as ours, and the Markdown
a README quotes and the float a paper `\\input`s show the same numbers with the same decimals.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from atf import keys

from .compute import CellResult, TableResult
from .layouts import METRIC_LABEL, TAG_BY_SHORT, Row, Section
from .sweeps import SweepIndex

__all__ = ["MissingGroup", "missing_groups", "data_statement", "md_plain", "render_markdown", "render_latex",
           "render_report_tex", "render_index", "run_url", "table_title", "LEGEND", "DASH", "NA",
           "PAPER_LABEL", "DELTA_LABEL", "OCN_LABEL", "protocol_statement"]

DASH = "–"
NA = "n/a"   # the OCN-protocol row of a cell whose runs were not evaluated in that protocol (HRNet)
PAPER_LABEL = "paper"
OCN_LABEL = "ours, OCN protocol"   # our value in the public OCN code's NME protocol (eval.protocol)
DELTA_LABEL = "Δ vs baseline (%)"
LEGEND = ("Rows: each method's **our** value first (mean ± std over seeds when there are several; "
          "it links to its MLflow run, or to the comparison of its seeds' runs), then "
          f"*{DELTA_LABEL}*: our relative improvement over our own baseline row (the paper's "
          "\"relative ascension\"; positive = better; * the difference exceeds the seed spread "
          "|Δmean| > √(sd₁²+sd₂²), ~ it does not, no mark: a single seed), then "
          f"*{PAPER_LABEL}*: the value the paper publishes. *(published)* rows are other methods as "
          "the paper reports them. Bold: best of ours in the column. "
          f"{DASH}: no finished run yet; {NA}: not evaluated in that protocol (the OCN protocol is the "
          "OCN runs'). NME and FR in %, two decimals; AUC four; paper values as printed.")
SHORT_BY_TAG = {tag: short for short, tag in TAG_BY_SHORT.items()}
_SUB = re.compile(r"_\{([^}]*)\}")
# how the paper's names are written in the rendered tables (labels come from tables.yaml as printed)
_NAMES = ((re.compile(r"\bL_(AT|MB)\b"), r"𝓛_{\1}"), (re.compile(r"\bHRNETMP\b"), "HRNet-W18_{MP}"),
          (re.compile(r"\bOCNMP\b"), "OCN_{MP}"), (re.compile(r"\bHRNET\b"), "HRNet-W18"))
BACKBONE_NAME = {"hrnet_w18": "HRNet-W18", "ocn": "OCN"}
OUR_DIGITS = {keys.NME: 2, keys.FR: 2, keys.AUC: 4}


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


def md_plain(text: str) -> str:
    """A value from a shared store as Markdown text: its markup characters and HTML escaped, one
    line (a tag's `|` or newline would break the table, its `<script>` reach an HTML preview)."""
    text = " ".join(str(text).split())
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", text).replace("<", "&lt;").replace(">", "&gt;")


def data_statement(result: TableResult, esc: Callable[[str], str] = str) -> str:
    """Which data the numbers come from, so a synthetic number is never read as the paper's.
    `esc` escapes the store's values (tags) for the output format (Markdown: md_plain)."""
    if not result.data:
        return ("Data: no finished runs matched this table; only the paper's values are shown. "
                + protocol_statement(result))
    text = f"Data: {', '.join(_source(esc(d)) for d in result.data)}."
    if any(d != "real" for d in result.data):
        text += " Numbers not on the real datasets test the pipeline; they are NOT a reproduction of the paper's."
    t = result.table
    if t.backbones and result.backbone != t.backbones[0]:
        text += f" Backbone: {result.backbone} (the paper's table uses {t.backbones[0]})."
    if result.selection:
        text += f" Model selection: {', '.join(esc(v) for v in result.selection)}."
    text += " " + protocol_statement(result)
    return text + f" Runs used: {len(result.run_ids)}."


def protocol_statement(result: TableResult) -> str:
    """Which NME protocol our numbers and the paper's use (docs/protocol.md)."""
    t = result.table
    ocn_rows = result.backbone == "ocn" or any(
        t.selector(r, c).get(keys.TAG_BACKBONE) == "ocn" for s in t.sections for r in s.rows for c in t.columns)
    text = ""
    if result.run_ids:
        text = ("NME protocol: ours in the benchmark protocol (original pixels; eye-corner or AFLW box-size "
                "normaliser)")
        if keys.PROTOCOL_OCN in result.protocols:
            text += f"; '{OCN_LABEL}' rows: the same runs in the public OCN code's protocol"
        text += "."
    if ocn_rows:
        text += (" The paper's OCN/OCNMP values are in the public OCN code's protocol (test crop from the "
                 "detector box joined with the ground truth, x1.12, anisotropic; NME in crop units, AFLW "
                 "normaliser 1 crop unit), so compare them with the OCN-protocol rows; its other values "
                 "use the benchmark protocol.")
    else:
        text += " The paper's values use the benchmark protocol."
    return text.strip()


def _selector_text(selector: dict[str, str]) -> str:
    return ", ".join(f"{SHORT_BY_TAG.get(k, k)}={v!r}" for k, v in selector.items())


# -- names, numbers, links --------------------------------------------------------------------------

def display(text: str) -> str:
    """A label in the paper's spelling with proper names: HRNET -> HRNet-W18, L_AT -> 𝓛_{AT}."""
    for pattern, repl in _NAMES:
        text = pattern.sub(repl, text)
    return text


def table_title(result: TableResult) -> str:
    """The title naming the backbone the runs used (tables VII-X are one backbone's)."""
    t = result.table
    if not t.backbones:
        return t.title
    paper = BACKBONE_NAME.get(t.backbones[0], t.backbones[0])
    ours = BACKBONE_NAME.get(result.backbone, result.backbone)
    name = paper if not result.run_ids or result.backbone == t.backbones[0] else f"{ours} runs; the paper: {paper}"
    return re.sub(r"\bHRNet\b", name, t.title)


def _digits(value: float) -> int:
    text = repr(float(value))
    return 0 if "e" in text else len(text.split(".")[1].rstrip("0"))


def _paper_digits(section: Section, row: Row) -> int:
    """The paper prints a row with one precision (4.563, 3.260): the row's longest decimals."""
    floor = OUR_DIGITS[section.metric]
    return max([floor] + [_digits(v) for v in section.paper[row.key] if v is not None])


def run_url(base: str, run_ids: tuple[str, ...], experiments: dict[str, str]) -> str:
    """MLflow UI page of one run, or the comparison page of several (MLflow 3 routes)."""
    base = base.rstrip("/")
    exps = sorted({experiments.get(r, "0") for r in run_ids})
    if len(run_ids) == 1:
        return f"{base}/#/experiments/{exps[0]}/runs/{run_ids[0]}"
    as_json = lambda v: quote(json.dumps(list(v), separators=(",", ":")))  # noqa: E731
    return f"{base}/#/compare-runs?runs={as_json(run_ids)}&experiments={as_json(exps)}"


def _delta_text(cell: CellResult) -> tuple[str, str]:
    """(signed number, spread mark) of a cell's relative change; ("", "") when there is none."""
    if cell.delta is None:
        return "", ""
    number = f"{cell.delta:+.1f}" if round(cell.delta, 1) != 0 else "0.0"   # never "-0.0"
    return number, {True: "*", False: "~", None: ""}[cell.delta_exceeds_spread]


# -- one row model for both formats ---------------------------------------------------------------

@dataclass(frozen=True)
class _Line:
    kind: str                                 # section | group | reference | ours | delta | paper
    label: str
    cells: tuple[CellResult, ...] = ()
    digits: int = 2                           # paper values: the row's printed precision


def _lines(result: TableResult) -> list[_Line]:
    t, out = result.table, []
    for si, section in enumerate(t.sections):
        if len(t.sections) > 1:
            out.append(_Line("section", METRIC_LABEL[section.metric]))
        group = None
        for row in section.rows:
            if t.grouped and row.group != group:
                group = row.group
                out.append(_Line("group", display(group)))
            cells = tuple(result.cell(si, row.key, c.key) for c in t.columns)
            digits = _paper_digits(section, row)
            if row.reference:
                out.append(_Line("reference", display(row.label), cells, digits))
                continue
            out.append(_Line("ours", display(row.label), cells))
            if any(c.ours_ocn is not None for c in cells):
                out.append(_Line("ocn", OCN_LABEL, cells))
            if row.baseline and any(c.delta is not None for c in cells):
                out.append(_Line("delta", DELTA_LABEL, cells))
            if any(c.paper is not None for c in cells):
                out.append(_Line("paper", PAPER_LABEL, cells, digits))
    return out


def _no_value(line: _Line, cell: CellResult) -> str:
    """What an empty cell says: n/a on the OCN-protocol row of a cell whose runs were evaluated in
    the benchmark protocol only (HRNet), else the dash (no finished run yet)."""
    return NA if line.kind == "ocn" and cell.ours is not None else DASH


# -- Markdown ---------------------------------------------------------------------------------------

def _md_label(text: str) -> str:
    return _SUB.sub(r"<sub>\1</sub>", text)


def _md_cell(line: _Line, cell: CellResult, digits: int, ui_url: str | None,
             experiments: dict[str, str]) -> str:
    if line.kind in ("paper", "reference"):
        return DASH if cell.paper is None else f"{cell.paper:.{line.digits}f}"
    if line.kind == "delta":
        number, mark = _delta_text(cell)
        return f"{number}{mark}" if number else DASH
    if line.kind == "ocn":
        stat = cell.ours_ocn
        if stat is None:
            return _no_value(line, cell)
        return f"{stat.mean:.{digits}f}" + (
            f" ± {stat.std:.{digits}f}" if stat.std is not None else "")
    if cell.ours is None:
        return DASH
    text = f"{cell.ours.mean:.{digits}f}"
    if cell.ours.std is not None:
        text += f" ± {cell.ours.std:.{digits}f}"
    if ui_url:
        text = f"[{text}]({run_url(ui_url, cell.ours.run_ids, experiments)})"
    return f"**{text}**" if cell.best else text


def render_markdown(result: TableResult, groups: list[MissingGroup], figures: list[str],
                    ui_url: str | None = None) -> str:
    """One GitHub table; `ui_url` (an MLflow UI address) links each of our values to its runs."""
    t = result.table
    head = ["Method"] + [display(c.label) for c in t.columns]
    lines = [f"# Table {t.id}: {_md_label(display(table_title(result)))}", "",
             f"> {data_statement(result, md_plain)}", "", _md_label(display(t.caption)), "",
             "| " + " | ".join(head) + " |", "|:---|" + "|".join("---:" for _ in t.columns) + "|"]
    for line in _lines(result):
        if line.kind in ("section", "group"):
            lines.append(f"| **{_md_label(line.label)}** |" + " |" * len(t.columns))
            continue
        label = _md_label(line.label)
        label = {"reference": f"{label} *(published)*", "delta": f"&emsp;*{label}*",
                 "paper": f"&emsp;*{label}*", "ocn": f"&emsp;*{label}*"}.get(line.kind, label)
        cells = [_md_cell(line, c, OUR_DIGITS[c.metric], ui_url, result.experiments) for c in line.cells]
        lines.append("| " + " | ".join([label] + cells) + " |")
    lines += ["", f"<sub>{LEGEND}</sub>", ""]
    if result.comparisons:
        lines += ["## Comparisons", ""]
        for c in result.comparisons:
            verdict = {True: "exceeds the seed spread", False: "within the seed spread",
                       None: "single seed, spread unknown"}[c.exceeds_spread]
            lines.append(f"- {c.metric} {c.column}: {_md_label(display(c.row))} vs "
                         f"{_md_label(display(c.versus))}: {c.diff:+.4g} "
                         f"({'better' if c.better else 'not better'}; {verdict})")
        lines.append("")
    if groups:
        lines += ["## Missing cells", ""]
        for g in groups:
            fill = "; ".join(g.fillers) if g.fillers else "no sweep cell found with these tags"
            why = f" ({g.problem})" if g.problem else ""
            lines.append(f"- {_md_label(display(g.row))} [{', '.join(g.metrics)}; {', '.join(g.columns)}]{why}: "
                         f"tags {_selector_text(g.selector)} -> {fill}")
        lines.append("")
    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


# -- LaTeX ------------------------------------------------------------------------------------------

TEX_PREAMBLE = (r"\usepackage{booktabs}", r"\usepackage{siunitx}")
WIDE_COLUMNS = 5          # tables with this many data columns span both columns of a paper (table*)
TALL_LINES = 40           # and tables with this many lines are set in \footnotesize


_TEX_PLAIN_MAP = {DASH: "--", NA: "n/a"}  # an empty S-column cell, as text
# every character LaTeX gives a meaning, escaped in one pass (so no escape is escaped again)
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "^": r"\textasciicircum{}",
                "~": r"\textasciitilde{}", "&": r"\&", "%": r"\%", "#": r"\#", "$": r"\$", "_": r"\_"}
_TEX_SPECIAL_RE = re.compile("|".join(map(re.escape, _TEX_SPECIAL)))
# then the symbols the labels use, as LaTeX commands (added after escaping, so kept as they are)
_TEX_PLAIN = (("Δ", r"$\Delta$"), ("±", r"$\pm$"), (DASH, "--"), ("𝓛", r"$\mathcal{L}$"))
# the mini-markup `x_{sub}`, `𝓛_{AT}`: only a subscript without special characters is set as one
_TEX_MARKUP = re.compile(r"(𝓛_\{[^{}\\^~&%#$_]*\}|_\{[^{}\\^~&%#$_]*\})")


def _tex(text: str) -> str:
    """Plain text with the mini-markup of labels (`x_{sub}`, `𝓛_{AT}`) as LaTeX; tag values from a
    shared store pass here too, so every special character is escaped (`\\input{...}` stays text)."""
    out = []
    for i, piece in enumerate(_TEX_MARKUP.split(text)):
        if i % 2 and piece.startswith("𝓛"):
            out.append(rf"$\mathcal{{L}}_{{\mathrm{{{piece[3:-1]}}}}}$")
        elif i % 2:
            out.append(rf"$_{{\mathrm{{{piece[2:-1]}}}}}$")
        else:
            piece = _TEX_SPECIAL_RE.sub(lambda m: _TEX_SPECIAL[m.group()], piece)
            for old, new in _TEX_PLAIN:
                piece = piece.replace(old, new)
            out.append(piece)
    return "".join(out)


def _tex_number(line: _Line, cell: CellResult, digits: int) -> tuple[str, str]:
    """(number for the S column, text after it) of one cell; ("", "") when it has none."""
    if line.kind in ("paper", "reference"):
        return ("", "") if cell.paper is None else (f"{cell.paper:.{line.digits}f}", "")
    if line.kind == "delta":
        number, mark = _delta_text(cell)
        return number, {"*": r"\textsuperscript{*}", "~": r"\textsuperscript{$\sim$}", "": ""}[mark]
    stat = cell.ours_ocn if line.kind == "ocn" else cell.ours
    if stat is None:
        return "", ""
    std = "" if stat.std is None else rf"\,$\pm$\,{stat.std:.{digits}f}"
    return f"{stat.mean:.{digits}f}", std


def _s_format(numbers: list[str]) -> str:
    """siunitx table-format wide enough for every number of a column (decimal-aligned)."""
    if not numbers:
        return "1.2"
    ints = max(len(n.lstrip("+-").split(".")[0]) for n in numbers)
    decs = max(len(n.split(".")[1]) if "." in n else 0 for n in numbers)
    sign = "+" if any(n[0] in "+-" for n in numbers) else ""
    return f"{sign}{ints}.{decs}"


def _widest_after(texts: list[str]) -> str:
    """The text after a number that needs most room: a std (widest digits), else a spread mark."""
    stds = [t for t in texts if r"\pm" in t]
    if stds:
        return re.sub(r"\d", "8", max(stds, key=len))
    return r"\textsuperscript{$\sim$}" if any(texts) else ""


def render_latex(result: TableResult) -> str:
    """A `table` (or `table*`) float to `\\input` in a paper that loads booktabs and siunitx."""
    t = result.table
    lines_model = _lines(result)
    cols = len(t.columns) + 1
    per_col: list[list[tuple[str, str]]] = [[] for _ in t.columns]
    body: list[str] = []
    for i, line in enumerate(lines_model):
        if line.kind == "section":
            if i:
                body.append(r"\midrule")
            body.append(rf"\multicolumn{{{cols}}}{{@{{}}l}}{{\textit{{{_tex(line.label)}}}}} \\")
            continue
        if line.kind == "group":
            if i and lines_model[i - 1].kind != "section":
                body.append(r"\midrule")
            body.append(rf"\multicolumn{{{cols}}}{{@{{}}l}}{{\textit{{{_tex(line.label)}}}}} \\")
            continue
        label = _tex(line.label)
        if line.kind in ("delta", "paper", "ocn"):
            label = r"\quad " + {"delta": r"$\Delta$\,\%", "paper": r"\textit{paper}",
                                  "ocn": r"\textit{OCN protocol}"}[line.kind]
        cells = []
        for ci, cell in enumerate(line.cells):
            number, after = _tex_number(line, cell, OUR_DIGITS[cell.metric])
            if not number:
                cells.append("{" + _TEX_PLAIN_MAP.get(_no_value(line, cell), "--") + "}")
                continue
            per_col[ci].append((number, after))
            bold = r"\bfseries " if line.kind == "ours" and cell.best else ""
            cells.append(f"{bold}{number}" + (f" {{{after}}}" if after else ""))
        body.append(" & ".join([label] + cells) + r" \\")
    specs = []
    for numbers in per_col:
        fmt = _s_format([n for n, _ in numbers])
        after = _widest_after([a for _, a in numbers])
        specs.append(f"S[table-format={fmt}" + (f", table-space-text-post={{{after}}}" if after else "") + "]")
    env = "table*" if len(t.columns) >= WIDE_COLUMNS else "table"
    size = r"\footnotesize" if len(lines_model) >= TALL_LINES else r"\small"
    caption = f"{_tex(display(table_title(result)))} (the ATF paper's Table {t.id}). {_tex(display(t.caption))}"
    head = " & ".join(["Method"] + [f"{{{_tex(display(c.label))}}}" for c in t.columns]) + r" \\"
    note = _tex(data_statement(result))
    return "\n".join([
        f"% Table {t.id} of the ATF paper rebuilt by atf-report from MLflow runs. \\input this file",
        "% in a document whose preamble has " + " ".join(TEX_PREAMBLE) + ".",
        rf"\begin{{{env}}}[tbp]", r"\centering", size,
        rf"\setlength{{\tabcolsep}}{{{4 if env == 'table*' else 3}pt}}",
        r"\sisetup{detect-weight, mode=text, retain-explicit-plus}",
        rf"\caption{{{caption}}}", rf"\label{{tab:atf-{t.id}}}",
        rf"\begin{{tabular}}{{@{{}}l {' '.join(specs)}@{{}}}}", r"\toprule", head, r"\midrule",
        *body, r"\bottomrule", r"\end{tabular}", r"\par\smallskip",
        rf"\parbox{{\linewidth}}{{\scriptsize\raggedright {note}\par {tex_legend()}}}",
        rf"\end{{{env}}}", ""])


def tex_legend() -> str:
    return (r"Per method: ours (mean\,$\pm$\,std over seeds), then $\Delta$: our relative improvement "
            r"over our baseline row in \% ($^{*}$ beyond the seed spread, $^{\sim}$ within it), then "
            r"the paper's value. Bold: best of ours per column; --: no run.")


def render_report_tex(files: list[tuple[str, str]], uri: str) -> str:
    """`report.tex`: a two-column paper-sized document that `\\input`s every table body.

    `files` holds (table id, file name) in paper order; each float keeps the paper's number."""
    roman = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X")
    lines = [r"\documentclass[10pt,twocolumn]{article}", r"\usepackage[T1]{fontenc}",
             r"\usepackage{mathptmx}", r"\usepackage[margin=0.75in]{geometry}",
             r"\usepackage[hyphens]{url}", *TEX_PREAMBLE,
             r"\renewcommand{\thetable}{\Roman{table}}", r"\begin{document}",
             r"\twocolumn[{\centering\large ATF: the paper's tables rebuilt from MLflow runs\par",
             rf"\footnotesize MLflow store: \url{{{uri}}}\par\bigskip}}]"]
    for tid, name in files:
        lines += [rf"\setcounter{{table}}{{{roman.index(tid)}}}", rf"\input{{{name}}}"]
    return "\n".join(lines + [r"\end{document}", ""])


def render_index(results: list[TableResult], files: dict[str, list[str]], notes: list[str],
                 uri: str, figures: list[str], filters: str = "") -> str:
    """The landing page: every table with its data statement, links, and what is missing."""
    lines = ["# ATF: the paper's tables rebuilt from MLflow", "",
             f"MLflow store: `{uri}`" + (f"; runs filtered by {filters}" if filters else ""), "",
             "| Table | Title | Data | Cells filled | Files |", "|---|---|---|---|---|"]
    for r in results:
        ours = [c for c in r.cells.values() if not c.row.reference]
        filled = sum(c.ours is not None for c in ours)
        data = ", ".join(md_plain(d) for d in r.data) or "no runs"
        links = " ".join(f"[{f.rsplit('.', 1)[-1]}]({f})" for f in files.get(r.table.id, []))
        lines.append(f"| {r.table.id} | {_md_label(display(table_title(r)))} | {data} | {filled}/{len(ours)} | {links} |")
    lines.append("")
    if files.get("report"):
        lines += [f"LaTeX: [{files['report'][0]}]({files['report'][0]}) `\\input`s every `table_<ID>.tex` "
                  f"(`pdflatex {files['report'][0]}` here); each table file is a float for a paper whose "
                  "preamble loads booktabs and siunitx.", ""]
    if any(d != "real" for r in results for d in r.data):
        lines += ["> Some tables were computed on a SYNTHETIC benchmark (see the Data column): those "
                  "numbers exercise the pipeline and are not a reproduction of the paper's.", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if figures:
        lines += ["## Figures", ""] + [f"- [{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)

