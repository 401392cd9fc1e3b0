"""Refresh what the README quotes from a rendered report, so it never drifts from `make demo`.

    python tools/readme_excerpts.py                 # report/ -> README.md (Table X excerpt)
    python tools/readme_excerpts.py --png           # also docs/img/report_table_X.png (needs pdflatex)
    make readme-excerpts                            # the same, both

The excerpt sits between `<!-- atf-report:table_<ID> begin -->` and `<!-- atf-report:table_<ID> end -->`
in the README; everything between the two markers is replaced by the table file's title, data
statement, table and legend. `--png` sets the table's LaTeX float alone on a page of the width it
takes in a two-column paper and crops the rendered page to it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- atf-report:table_{} begin -->", "<!-- atf-report:table_{} end -->"


def excerpt(table_md: str) -> str:
    """Title (as a bold line, not a README heading), data note, table and legend of a table file."""
    lines = table_md.splitlines()
    title = lines[0].lstrip("# ").strip()
    cut = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    body = lines[1:cut]
    return "\n".join([f"**{title}**", *body]).strip() + "\n"


def replace_between(text: str, tid: str, new: str, where: str) -> str:
    begin, end = BEGIN.format(tid), END.format(tid)
    if begin not in text or end not in text:
        raise SystemExit(f"readme_excerpts: {where} has no '{begin}' ... '{end}' markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{new}{end}{tail}"


def render_png(tex_file: Path, out_png: Path, dpi: int = 200) -> None:
    """The float of `tex_file` alone on a page (7 in wide for table*, 3.5 in for table), cropped."""
    if not (shutil.which("pdflatex") and shutil.which("pdftoppm")):
        raise SystemExit("readme_excerpts: --png needs pdflatex and pdftoppm (bash tools/ensure_texlive.sh)")
    import cv2
    import numpy as np

    body = tex_file.read_text()
    width = "7in" if r"\begin{table*}" in body else "3.5in"
    body = body.replace(r"\begin{table*}[tbp]", r"\begin{table}[h]").replace(r"\end{table*}", r"\end{table}")
    tid = re.search(r"\\label\{tab:atf-([IVX]+)\}", body).group(1)
    numeral = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X").index(tid)
    doc = "\n".join([r"\documentclass[10pt]{article}", r"\usepackage[T1]{fontenc}", r"\usepackage{mathptmx}",
                     rf"\usepackage[paperwidth={width},paperheight=11in,margin=0.1in]{{geometry}}",
                     r"\usepackage{booktabs}", r"\usepackage{siunitx}", r"\pagestyle{empty}",
                     r"\renewcommand{\thetable}{\Roman{table}}", r"\begin{document}",
                     rf"\setcounter{{table}}{{{numeral}}}", body, r"\end{document}", ""])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "t.tex").write_text(doc)
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp,
                              capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise SystemExit(f"readme_excerpts: pdflatex failed on {tex_file}:\n{done.stdout[-1500:]}")
        subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-f", "1", "-l", "1", "t.pdf", "p"], cwd=tmp, check=True)
        page = cv2.imread(str(next(Path(tmp).glob("p*.png"))))
    ink = np.argwhere((page < 245).any(axis=2))
    (y0, x0), (y1, x1) = ink.min(axis=0), ink.max(axis=0)
    pad = dpi // 10
    crop = page[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad]
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), crop)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--report", type=Path, default=REPO / "report", help="atf-report's --out folder")
    p.add_argument("--readme", type=Path, default=REPO / "README.md", help="file holding the markers")
    p.add_argument("--table", default="X", help="table id whose Markdown the README quotes")
    p.add_argument("--png", action="store_true", help="also render the table's LaTeX float to a PNG")
    p.add_argument("--png-out", type=Path, default=None,
                   help="PNG path (default: docs/img/report_table_<ID>.png)")
    a = p.parse_args(argv)
    table_md = a.report / f"table_{a.table}.md"
    if not table_md.is_file():
        print(f"readme_excerpts: {table_md} not found; run `make demo` (or atf-report --out {a.report}) first",
              file=sys.stderr)
        return 2
    a.readme.write_text(replace_between(a.readme.read_text(), a.table, excerpt(table_md.read_text()), str(a.readme)))
    print(f"readme_excerpts: {a.readme} <- {table_md}")
    if a.png:
        out = a.png_out or REPO / "docs" / "img" / f"report_table_{a.table}.png"
        render_png(a.report / f"table_{a.table}.tex", out)
        print(f"readme_excerpts: {out} <- {a.report / f'table_{a.table}.tex'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
