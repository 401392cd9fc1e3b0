"""`atf-train CONFIG.yaml`: one run (baseline, atf, joint or novel) from a YAML config.

    atf-train configs/demo_atf.yaml --out runs/demo
    atf-train configs/demo_atf.yaml --out runs/demo --resume        # continue from runs/demo/checkpoints/last.pt
    atf-train configs/demo_atf.yaml --set optim.lr=5e-4 --set seed=1
    atf-train configs/demo_atf.yaml --smoke                         # tiny data, one epoch: checks the wiring
    atf-train configs/demo_atf.yaml --data-root /data/real > train.log   # progress lines every 30 s in the log
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from atf import keys
from atf.cli.common import add_data_root, make_parser
from atf.config import ConfigError, load_config, parse_assignments

SMOKE = {"data.max_train": 16, "data.max_test": 8, "optim.epochs": 1, "finetune.epochs": 1,
         "optim.batch_size": 8, "model.width_mult": 0.25}


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("atf-train", "One training run (baseline, atf, joint or novel) from a YAML config.",
                    __doc__.split("\n", 2)[2].rstrip())
    p.add_argument("config", type=Path, help="run config YAML: only what differs from atf/config.py's defaults")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder (default: runs/<config stem>)")
    p.add_argument("--resume", nargs="?", const="last", default=None, metavar="CHECKPOINT",
                   help="resume; without a value from <out>/checkpoints/last.pt (default: start afresh)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted, value parsed as YAML), repeatable")
    add_data_root(p, "data root, the same as --set data.root=DIR (default: the config's data.root)")
    p.add_argument("--smoke", action="store_true", help="tiny data and one epoch: checks the wiring")
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    p.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                   help="when stdout is not a terminal (a log file), print a progress line (stage, epoch, "
                        "step, img/s, ETA) this often during training and evaluation; on a terminal: bars")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    from atf import progress
    progress.configure(every=a.progress_every)
    try:
        overrides = {**(SMOKE if a.smoke else {}), **parse_assignments(a.sets)}
        if a.data_root:
            overrides["data.root"] = a.data_root
        from atf.datasets import check_datasets
        cfg = load_config(a.config, overrides, check_datasets)
    except ConfigError as e:
        print(f"atf-train: {e}", file=sys.stderr)
        return 2
    out = a.out or Path("runs") / a.config.stem
    resume = None
    if a.resume is not None:
        resume = out / "checkpoints" / "last.pt" if a.resume == "last" else Path(a.resume)
    import dataclasses

    from atf.threads import available_cpus, configure_threads, passive_wait
    passive_wait()  # before torch loads: idle OpenMP threads sleep, so other jobs slow us gracefully
    plan = configure_threads(available_cpus(), cfg.data.num_workers)  # the machine, no oversubscription
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_workers=plan.loader_workers))
    from atf.train import train  # after argument checks: importing torch takes a moment
    try:
        result = train(cfg, out, resume=resume)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"atf-train: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # Ctrl-C: one line, and how to continue, instead of a traceback
        again = f"atf-train {a.config} --out {out} --resume"
        hint = (f"continue with: {again}" if (out / "checkpoints" / "last.pt").is_file()
                else "no epoch finished, so no checkpoint: run it again to start over")
        print(f"atf-train: interrupted; {hint}", file=sys.stderr)
        return 130
    if a.json:
        print(json.dumps(result.metrics, indent=2))
    else:
        print(f"best epoch {result.best_epoch}; outputs in {out}")
        for name, v in sorted(result.metrics.items()):
            if keys.parse_protocol_metric(name) or name.startswith((keys.VAL_PREFIX, keys.TIME_PREFIX)):
                print(f"  {name:<40} {v:.4f}")
        for n in result.notes:
            print(f"  note: {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
