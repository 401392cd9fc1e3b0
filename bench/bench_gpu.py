"""GPU figures: training throughput of OCN-112 and HRNet-W18-256, the input pipeline, trials per GPU.

For each model at its table config (OCN 112 px batch 300, HRNet-W18 256 px batch 16; the
protocol files in sweeps/base/):
  model step   images/s of forward + loss + backward + Adam on device tensors, with mixed
               precision off/on (CUDA float16 + GradScaler; CPU bfloat16) and channels-last off/on;
               peak memory of a step (CUDA)
  input        images/s of the training input pipeline (SynthFace, atf's crops and augmentation,
               DataLoader with W workers) and the workers a trial needs to feed its fastest step
  per GPU      trials that fit one GPU at that config: free memory / (peak reserved + CUDA context)
On a machine without CUDA use `--device cpu --tiny` (small widths, sizes and batches): it checks
that the script works, its numbers say nothing about GPUs.

    python bench/bench_gpu.py                          # CUDA, the table configs
    python bench/bench_gpu.py --device cpu --tiny      # smoke
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


@dataclass(frozen=True)
class Case:
    label: str
    backbone: str
    input_size: int
    batch: int
    width_mult: float = 1.0


FULL = (Case("OCN-112", "ocn", 112, 300), Case("HRNet-W18-256", "hrnet_w18", 256, 16))
TINY = (Case("OCN-112 (tiny: 48 px, width 0.25)", "ocn", 48, 4, 0.25),
        Case("HRNet-W18-256 (tiny: 64 px, width 0.25)", "hrnet_w18", 64, 2, 0.25))


def model_step(case: Case, device, amp: bool, channels_last: bool, warmup: int, iters: int
               ) -> tuple[float, int]:
    """(images/s, peak reserved bytes or 0 on CPU) of the bare train step."""
    import torch

    from atf.config import ModelConfig
    from atf.losses import landmark_loss
    from atf.models import build_model
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(ModelConfig(backbone=case.backbone, width_mult=case.width_mult), {"target": 98},
                        case.input_size).to(device).train().to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(case.batch, 3, case.input_size, case.input_size, device=device).to(memory_format=fmt)
    if model.kind == "coords":
        kind, target = "l1", torch.rand(case.batch, 98, 2, device=device)
    else:
        h = model.heatmap_size
        kind, target = "heatmap_mse", torch.rand(case.batch, 98, h, h, device=device)
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and cuda)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            out = model(x)["target"]
        loss = landmark_loss(kind, out.float(), target)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(iters):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    ips = case.batch * iters / (time.perf_counter() - t)
    peak = torch.cuda.max_memory_reserved(device) if cuda else 0
    return ips, peak


def input_rate(case: Case, root: Path, workers: int, images: int) -> float:
    """Images/s of the training pipeline (decode, crop, augment, collate) with `workers` workers."""
    from torch.utils.data import DataLoader

    from atf.config import RunConfig, from_dict
    from atf.data import collate
    from atf.rundata import RunData
    cfg = from_dict(RunConfig, {"scenario": "baseline", "target": "wflw", "data": {"root": str(root)},
                                "model": {"backbone": case.backbone, "input_size": case.input_size}})
    data = RunData(cfg)
    ds = data.dataset("wflw", data.load("wflw", "train"), train=True)
    batch = max(1, min(case.batch, len(ds)))
    seen, t = 0, 0.0
    while seen < images:
        loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate)
        it = iter(loader)
        next(it)  # worker start-up and the first batch are not timed
        t0 = time.perf_counter()
        n = 0
        for b in it:
            n += len(b["index"])
        t += time.perf_counter() - t0
        seen += n if n else images  # a one-batch set: nothing timed, stop
    return seen / t if t > 0 else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--tiny", action="store_true", help="small models and batches, few steps (CPU smoke)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", default="", help="DataLoader workers to time, comma separated (default: 0,1,CPUs/2)")
    p.add_argument("--images", type=int, default=600, help="images per input-pipeline timing")
    p.add_argument("--data", default=str(ROOT / "data" / "synth"), help="SynthFace root (generated if absent)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "atf-bench-stores")
    p.add_argument("--write-throughput", action="store_true",
                   help="record the fastest step per model as this GPU's entry of orchestration/throughput.yaml "
                        "(what atf-sweep --dry-run prices sweeps with)")
    a = p.parse_args(argv)
    if a.write_throughput and (a.tiny or a.device == "cpu"):
        raise SystemExit("bench_gpu: --write-throughput records a GPU at the table configs: not with --tiny or cpu")
    import torch
    from _machine import machine_line
    from _seed import synth_root
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device here; on a CPU machine run --device cpu --tiny")
    cases = TINY if a.tiny else FULL
    if a.tiny:   # tiny tensors gain nothing from threads, and on a busy machine OpenMP's barriers
        torch.set_num_threads(1)   # between two threads cost a time slice per op (15 s a step seen)
    warmup, iters = (0, 1) if a.tiny else (a.warmup, a.iters)
    images = min(a.images, 64) if a.tiny else a.images
    cpus = os.cpu_count() or 1
    workers = [int(w) for w in a.workers.split(",")] if a.workers else sorted({0, 1, max(1, cpus // 2)})
    root = synth_root(a.data, a.cache)
    gpu = ""
    context = 0
    if device.type == "cuda":
        torch.cuda.init()
        free0, total = torch.cuda.mem_get_info(device)
        torch.empty(1, device=device)
        free1, _ = torch.cuda.mem_get_info(device)
        context = max(0, free0 - free1)  # what a process's CUDA context takes before any tensor
        gpu = f"; GPU {torch.cuda.get_device_name(device)}, {total / 2**30:.0f} GiB"
    print(f"\n{machine_line()}{gpu}\n")
    print(f"{warmup} warm-up + {iters} timed steps per figure; input pipeline over {images} SynthFace images\n")
    print("| model | batch | AMP | channels-last | images/s | peak memory (GiB) |")
    print("|---|---:|---|---|---:|---:|")
    best: dict[str, tuple[float, int]] = {}
    for case in cases:
        for amp in (False, True):
            for cl in (False, True):
                ips, peak = model_step(case, device, amp, cl, warmup, iters)
                mem = f"{peak / 2**30:.2f}" if peak else "n/a"
                print(f"| {case.label} | {case.batch} | {'on' if amp else 'off'} | {'on' if cl else 'off'} | "
                      f"{ips:.1f} | {mem} |", flush=True)
                if case.label not in best or ips > best[case.label][0]:
                    best[case.label] = (ips, peak)
    print("\n| model | DataLoader workers | input images/s | workers to feed the fastest step |")
    print("|---|---:|---:|---:|")
    for case in cases:
        rates = {w: input_rate(case, root, w, images) for w in workers}
        per_worker = rates[max(workers)] / max(1, max(workers))
        need = math.ceil(best[case.label][0] / per_worker) if per_worker > 0 else 0
        for w, r in rates.items():
            print(f"| {case.label} | {w} | {r:.1f} | {need} |", flush=True)
    if a.write_throughput:
        _record(cases, best, device)
    print("\n| model | fastest step images/s | peak + context (GiB) | trials per GPU |")
    print("|---|---:|---:|---:|")
    for case in cases:
        ips, peak = best[case.label]
        if device.type == "cuda":
            _, total = torch.cuda.mem_get_info(device)
            need = peak + context
            fits = int(0.95 * total // need) if need else 0
            print(f"| {case.label} | {ips:.1f} | {need / 2**30:.2f} | {fits} |")
        else:
            print(f"| {case.label} | {ips:.1f} | n/a | n/a (no GPU) |")
    return 0


def _record(cases, best: dict, device) -> None:
    """The fastest step of each model, with its forward FLOPs, into orchestration/throughput.yaml."""
    import torch
    from _machine import machine_line

    from atf.config import ModelConfig
    from atf.models import build_model, count_flops
    from orchestration.cost import record_device
    models = {}
    for case in cases:
        net = build_model(ModelConfig(backbone=case.backbone, width_mult=case.width_mult), {"target": 98},
                          case.input_size)
        models[case.backbone] = {"images_per_s": round(best[case.label][0], 1), "input_size": case.input_size,
                                 "batch": case.batch, "forward_flops": int(count_flops(net, case.input_size).flops),
                                 "note": "fastest of AMP and channels-last on/off"}
    name = f"GPU: {torch.cuda.get_device_name(device)}"
    print(f"\nrecorded as {name!r} in {record_device(name, 'gpu', models, 'bench/bench_gpu.py', machine_line())}")


if __name__ == "__main__":
    sys.exit(main())
