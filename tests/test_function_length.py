"""No function over 60 lines in atf/, orchestration/ and reports/ (the renderer exempt): issue 12.

`tools/long_functions.py` measures (def line to last line); the renderer is exempt there (a
table layout reads best as one straight function).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_TOOL = Path(__file__).resolve().parents[1] / "tools" / "long_functions.py"
_spec = importlib.util.spec_from_file_location("long_functions", _TOOL)
long_functions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(long_functions)


def test_no_function_over_the_limit():
    over = [f"{where} {name} ({n} lines)" for where, name, n in long_functions.long_functions()]
    assert not over, f"functions over {long_functions.LIMIT} lines (split them into one-job steps): {over}"


def test_the_measure_counts_def_to_last_line(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("class A:\n    def f(self):\n        def g():\n            pass\n        return 1\n")
    assert long_functions.functions(src) == [("A.f", 2, 4), ("A.f.g", 3, 2)]
