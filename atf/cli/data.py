"""`atf-data`: data tools. Subcommands live in their own modules; this only dispatches.

    atf-data synth --out DIR --scale S --seed N      generate the SynthFace benchmark
    atf-data sheet --data DIR --out sheet.png        contact sheet of samples with landmarks
    atf-data convert --format FMT SRC --out DIR      official native layout -> CSV layout
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> "module:function"; each function takes argv (list[str]) and returns an exit code
COMMANDS = {
    "synth": "atf.synth.cli:synth_main",
    "sheet": "atf.synth.cli:sheet_main",
    "convert": "atf.native:convert_main",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"atf-data: unknown command {argv[0]!r}; expected one of {sorted(COMMANDS)}", file=sys.stderr)
            return 2
        return 0
    module, func = COMMANDS[argv[0]].split(":")
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
