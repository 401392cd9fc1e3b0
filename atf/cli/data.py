"""`atf-data`: data tools. Subcommands live in their own modules; this only dispatches.

    atf-data synth --out DIR --scale S --seed N         generate the SynthFace benchmark
    atf-data sheet --data-root DIR --out sheet.png      contact sheet of samples with landmarks
    atf-data convert --format FMT SRC --out DIR         official native layout -> CSV layout
    atf-data check ROOT                                 every bad row, image and split file, one line each
    atf-data cache --data-root DIR                      face-crop caches for fast loading of large photos
"""

from __future__ import annotations

import argparse
import importlib
import sys

from atf.cli.common import make_parser

# subcommand -> "module:function"; each function takes argv (list[str]) and returns an exit code
COMMANDS = {
    "synth": "atf.synth.cli:synth_main",
    "sheet": "atf.synth.cli:sheet_main",
    "convert": "atf.native:convert_main",
    "check": "atf.cli.data:check_main",
    "cache": "atf.cli.cache:cache_main",
}


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("atf-data", "Data tools: generate SynthFace, draw samples, convert official releases.",
                    "\n".join("  " + line.strip() for line in __doc__.strip().splitlines()[2:])
                    + "\n  atf-data COMMAND --help                            a command's own options")
    p.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND",
                   help=f"one of: {', '.join(sorted(COMMANDS))}")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="...", help="the command's own options")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    module, func = COMMANDS[a.command].split(":")
    return int(getattr(importlib.import_module(module), func)(a.args) or 0)


def check_main(argv: list[str] | None = None) -> int:
    """`atf-data check ROOT [--no-decode] [--margin M]`: one line per problem (atf.datacheck); exit 1 when any."""
    from pathlib import Path

    from atf.datacheck import MARGIN, check_root
    p = argparse.ArgumentParser(prog="atf-data check",
                                description="Check a data root: every annotation row, image and split file. "
                                            "Prints one line per problem (file and 1-based data row).")
    p.add_argument("root", type=Path, help="data root (<root>/<dataset>/face_landmarks_*.csv)")
    p.add_argument("--no-decode", action="store_true", help="read image headers only (faster; a damaged "
                   "image body then goes unnoticed)")
    p.add_argument("--margin", type=float, default=MARGIN,
                   help=f"how far points may lie outside the image, x the face size (default {MARGIN})")
    p.add_argument("--registry", action="append", default=[], help="extra dataset/scheme YAML (data.registry)")
    a = p.parse_args(argv)
    problems = check_root(a.root, decode=not a.no_decode, margin=a.margin, registry=a.registry)
    for prob in problems:
        print(prob)
    rows = sum(1 for prob in problems if prob.row)
    if not problems:
        print(f"atf-data check {a.root}: OK, no problems")
        return 0
    print(f"atf-data check {a.root}: {len(problems)} problem(s): {rows} bad row(s), "
          f"{len(problems) - rows} bad file(s)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
