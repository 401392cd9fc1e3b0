"""What every atf command line shares: `--version`, help that shows each default and examples,
one spelling for the data root, and the default MLflow store.

Why here: six commands (atf-train, atf-eval, atf-predict, atf-data, atf-sweep, atf-report) must
read alike, and `--help` must stay fast, so this module imports nothing heavy (no torch, pandas,
matplotlib, scipy, ray or mlflow).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["HelpFormatter", "make_parser", "version", "add_data_root", "default_mlflow_uri",
           "MLFLOW_URI_HELP"]

MLFLOW_URI_HELP = ("MLflow tracking URI: sqlite:///FILE, a folder, or http(s)://SERVER (default: "
                   "$MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db as an absolute path)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout and appends "(default: X)" to every option whose help does not
    already say its default ("none" when it is unset; flags are off unless given, which needs no
    saying)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.nargs == 0 or action.default is argparse.SUPPRESS:
            return text
        if action.default is None or action.default == []:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


def version() -> str:
    """The installed atf's version (the package metadata; the source tree's when not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version("atf")
    except PackageNotFoundError:
        import atf
        return getattr(atf, "__version__", "unknown")


def make_parser(prog: str, description: str, examples: str) -> argparse.ArgumentParser:
    """A parser with the house formatter, `--version` and an "examples:" epilog."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter,
                                epilog="examples:\n" + examples.strip("\n"))
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    return p


def add_data_root(p: argparse.ArgumentParser | argparse._ArgumentGroup, help_text: str,
                  *old: str) -> None:
    """`--data-root DIR`, the one name for the data root in every command; `old` spellings stay
    accepted but hidden from the help."""
    p.add_argument("--data-root", metavar="DIR", default=None, help=help_text)
    for name in old:
        p.add_argument(name, dest="data_root", metavar="DIR", default=None, help=argparse.SUPPRESS)


def default_mlflow_uri(cwd: Path | None = None) -> str:
    """$MLFLOW_TRACKING_URI when set, else sqlite:///<cwd>/mlflow.db (absolute, so a report and a
    sweep started in different folders do not silently read different stores)."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    return f"sqlite:///{((cwd or Path.cwd()) / 'mlflow.db').resolve()}"
