"""The six command lines explain themselves: --version, examples in --help, every option with its
help and default, and --help fast because nothing heavy is imported before the arguments are parsed."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atf.cli.common import version

BIN = Path(sys.executable).parent
HEAVY = ("torch", "matplotlib", "pandas", "scipy", "ray", "mlflow", "cv2", "optuna")
CLIS = {  # command -> (module:function building its parser, strings its --help must show)
    "atf-train": ("atf.cli.train:build_parser", ["--data-root", "--resume", "--progress-every", "--smoke"]),
    "atf-eval": ("atf.cli.eval:build_parser", ["checkpoint mode", "prediction-file mode", "--pred", "--gt",
                                               "--data-root", "--flip"]),
    "atf-predict": ("atf.cli.predict:build_parser", ["--detector", "--boxes", ".pt2", ".onnx"]),
    "atf-data": ("atf.cli.data:build_parser", ["synth", "sheet", "convert", "--data-root"]),
    "atf-sweep": ("orchestration.cli:build_parser", ["submit", "--address", "--data-root", "--mlflow-uri",
                                                     "MLFLOW_TRACKING_URI", "--dry-run"]),
    "atf-report": ("reports.cli:build_parser", ["--mlflow-uri", "MLFLOW_TRACKING_URI", "--tables", "report.tex",
                                                "--mlflow-ui-url"]),
}


def _run(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    done = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=120)
    return done, time.perf_counter() - t0


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_help_and_version(cli):
    done, seconds = _run(cli, "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith(f"usage: {cli}") and "\nexamples:\n" in text and f"  {cli} " in text.split("examples:")[1]
    for word in CLIS[cli][1]:
        assert word in text, f"{cli} --help lacks {word!r}"
    assert seconds < 5.0, f"{cli} --help took {seconds:.1f} s"    # loose: ~0.3 s on an idle 2-core box
    done, _ = _run(cli, "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"{cli} {version()}"


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_help_imports_nothing_heavy(cli):
    """What makes --help slow: the heavy libraries must load only after parsing."""
    target, _ = CLIS[cli]
    module, func = target.split(":")
    main = f"{module.rsplit('.', 0)[0]}"
    code = (f"import sys, json\nfrom {main} import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    loaded = json.loads(done.stderr.strip().splitlines()[-1])
    assert loaded == [], f"{cli} --help imports {loaded}"


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_every_option_says_what_it_does_and_its_default(cli):
    module, func = CLIS[cli][0].split(":")
    parser: argparse.ArgumentParser = getattr(__import__(module, fromlist=[func]), func)()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)) or action.help == argparse.SUPPRESS:
            continue
        assert action.help, f"{cli} {action.dest}: no help"
        flag = action.nargs == 0
        if action.option_strings and not flag:
            shown = formatter._get_help_string(action)
            assert "default" in shown, f"{cli} {'/'.join(action.option_strings)}: default not stated"
