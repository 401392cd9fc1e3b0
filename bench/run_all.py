"""Run every benchmark in turn and print their Markdown tables (`make bench`).

    python bench/run_all.py [--quick]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["count_models.py", "bench_synth.py", "bench_loader.py", "bench_warp.py", "bench_train_step.py", "bench_loop.py", "bench_sweep.py"]


def main() -> int:
    extra = ["--quick"] if "--quick" in sys.argv[1:] else []
    failed = []
    for name in BENCHES:
        args = extra if name not in ("bench_synth.py", "count_models.py") else []
        print(f"\n## {name} {' '.join(args)}\n", flush=True)
        if subprocess.run([sys.executable, str(HERE / name), *args]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
