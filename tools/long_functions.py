"""List the functions longer than a limit (default 60 lines) in atf/, orchestration/ and reports/.

Why: issue 12 asks for functions that do one job; length is the cheap signal. A function's length
is its `def` line to its last line, docstring and comments included; a nested function counts in
its parent and again on its own. The report renderer (`reports/render.py`) is exempt: a table
layout reads best as one straight function.

    .venv/bin/python tools/long_functions.py [--limit 60] [PATH ...]

Prints `path:line qualified.name N` per function over the limit, longest first; exit 1 when any.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("atf", "orchestration", "reports")
EXEMPT = ("reports/render.py",)
LIMIT = 60


def functions(path: Path) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length in lines) of every function and method in `path`."""
    out: list[tuple[str, int, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                out.append((name, child.lineno, child.end_lineno - child.lineno + 1))
                walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(path.read_text(), str(path)), "")
    return out


def long_functions(limit: int = LIMIT, roots: list[Path] | None = None) -> list[tuple[str, int, int]]:
    """(`path:line`, qualified name, length) over `limit`, longest first, exempt files skipped."""
    found = []
    for root in roots or [ROOT / p for p in PACKAGES]:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for f in files:
            rel = f.resolve().relative_to(ROOT).as_posix()
            if rel in EXEMPT:
                continue
            found += [(f"{rel}:{line}", name, n) for name, line, n in functions(f) if n > limit]
    return sorted(found, key=lambda r: (-r[2], r[0]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=LIMIT, help="longest allowed function, in lines")
    ap.add_argument("paths", nargs="*", type=Path, help="files or folders (default: the three packages)")
    args = ap.parse_args(argv)
    rows = long_functions(args.limit, [p.resolve() for p in args.paths] or None)
    for where, name, n in rows:
        print(f"{where} {name} {n}")
    print(f"{len(rows)} function(s) over {args.limit} lines", file=sys.stderr)
    return 1 if rows else 0


if __name__ == "__main__":
    raise SystemExit(main())
