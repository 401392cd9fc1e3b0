"""Images per second of the bare train step (forward, loss, backward, Adam step) on random tensors.

No data loading or augmentation is timed, so the figure is the ceiling the model itself sets on a
machine. Prints a Markdown table with the machine it ran on.

    .venv/bin/python bench/bench_train_step.py            # OCN-112 batch 32, HRNet-W18-256 batch 8
    .venv/bin/python bench/bench_train_step.py --quick    # a couple of iterations each (smoke test)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # orchestration.cost, run as a script

from atf.config import ModelConfig  # noqa: E402
from atf.losses import landmark_loss  # noqa: E402
from atf.models import build_model, count_params  # noqa: E402


@dataclass(frozen=True)
class Case:
    backbone: str
    input_size: int
    batch: int
    points: int = 98
    width_mult: float = 1.0

    @property
    def label(self) -> str:
        return f"{self.backbone}-{self.input_size}"


CASES = (Case("ocn", 112, 32), Case("hrnet_w18", 256, 8))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench(case: Case, device: torch.device, warmup: int, iters: int, seed: int) -> tuple[float, float, int]:
    """Returns (images per second, seconds per step, parameters) for `case`, after `warmup` untimed steps."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(backbone=case.backbone, width_mult=case.width_mult),
                        {"target": case.points}, case.input_size).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(case.batch, 3, case.input_size, case.input_size, device=device)
    if model.kind == "coords":
        kind, target = "l1", torch.rand(case.batch, case.points, 2, device=device)
    else:
        h = model.heatmap_size
        kind, target = "heatmap_mse", torch.rand(case.batch, case.points, h, h, device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = landmark_loss(kind, model(x)["target"], target)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / iters
    return case.batch / seconds, seconds, count_params(model)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 warm-up and 2 timed steps per model")
    parser.add_argument("--iters", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-throughput", action="store_true",
                        help="record these images/s as this machine's entry of orchestration/throughput.yaml "
                             "(what atf-sweep --dry-run prices sweeps with)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warmup, iters = (1, 2) if args.quick else (args.warmup, args.iters)
    device = torch.device(args.device)
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads{gpu}; {warmup} warm-up + {iters} timed steps; "
          f"load average at start {os.getloadavg()[0]:.1f}\n")
    print("| model | params | batch | device | s/step | images/s |")
    print("|---|---|---|---|---|---|")
    models = {}
    for case in CASES:
        ips, sec, params = bench(case, device, warmup, iters, args.seed)
        print(f"| {case.label} | {params / 1e6:.3f}M | {case.batch} | {device.type} | {sec:.3f} | {ips:.1f} |",
              flush=True)
        models[case.backbone] = {"images_per_s": round(ips, 2), "forward_flops": forward_flops(case),
                                 "input_size": case.input_size, "batch": case.batch}
    if args.write_throughput:
        if args.quick:
            raise SystemExit("bench_train_step: --write-throughput needs a full run, not --quick")
        from orchestration.cost import record_device
        name = (f"GPU: {torch.cuda.get_device_name(device)}" if device.type == "cuda"
                else f"CPU: {cpu_model()}, {os.cpu_count()} cores")
        path = record_device(name, "gpu" if device.type == "cuda" else "cpu", models, "bench/bench_train_step.py",
                             f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                             f"{torch.get_num_threads()} threads")
        print(f"\nrecorded as {name!r} in {path}")


def forward_flops(case: Case) -> int:
    """FLOPs of one image's forward pass of the benchmarked model (atf.models.count_flops)."""
    from atf.models import count_flops
    model = build_model(ModelConfig(backbone=case.backbone, width_mult=case.width_mult), {"target": case.points},
                        case.input_size)
    return int(count_flops(model, case.input_size).flops)


if __name__ == "__main__":
    main()
