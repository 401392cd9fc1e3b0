"""Full training loop vs train step alone: is the input pipeline hidden?

For OCN-112 and HRNet-W18-256 this prints images/s of
  - the train step alone (random tensors already in memory: forward, loss, backward, Adam),
  - the full loop (ATDP plan -> DataLoader -> decode, augment, heatmaps -> the same step),
and the ratio of the two. The data is a SynthFace set (generated into --data if absent).

    python bench/bench_loop.py [--quick] [--workers 2] [--data /tmp/atf_bench_synth]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _machine import cpu_model, machine_line  # noqa: E402

from atf.config import RunConfig, override
from atf.data import batch_inputs, batch_targets
from atf.losses import mixed_branch_loss
from atf.models import build_model
from atf.rundata import RunData
from atf.sampler import AtdpSampler

CASES = {  # name -> (config overrides, batch size)
    "OCN-112": ({"model.backbone": "ocn"}, 32),
    "HRNet-W18-256": ({"model.backbone": "hrnet_w18"}, 8),
}




def step_fn(model, cfg: RunConfig, opt):
    kind = cfg.loss_kind

    def step(x, gt):
        out = model(x, heads=[cfg.target])
        loss, _ = mixed_branch_loss(out, cfg.target, cfg.target, gt, {}, kind, False, 1.0, 1.0, 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def bench_case(name: str, upd: dict, batch: int, steps: int, data: Path, workers: int, device) -> dict:
    cfg = override(RunConfig(), {**upd, "data.root": str(data), "data.num_workers": workers,
                                 "optim.batch_size": batch, "data.val_fraction": 0.0,
                                 "eval.selection": "test"})  # no validation split: whole train set
    rd = RunData(cfg)
    k = rd.num_points(cfg.target)
    torch.manual_seed(0)
    model = build_model(cfg.model, {cfg.target: k}, cfg.input_size, cfg.heatmap_size).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = step_fn(model, cfg, opt)
    s = cfg.input_size
    x = torch.randn(batch, 3, s, s, device=device)
    gt = (torch.rand(batch, k, cfg.heatmap_size, cfg.heatmap_size, device=device) if model.kind == "heatmap"
          else torch.rand(batch, k, 2, device=device))
    step(x, gt)  # warm-up
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, gt)
    sync()
    step_rate = steps * batch / (time.perf_counter() - t0)

    sampler = AtdpSampler([rd.train_size(cfg.target)], batch, (1.0,), (), seed=0)
    plan = []
    while len(plan) < steps + 1:
        plan += sampler.plan()
    plan = plan[:steps + 1]
    loader = rd.train_loader((cfg.target,), plan, epoch=0)
    key = "heatmap" if model.kind == "heatmap" else "coords"
    it = iter(loader)
    b = next(it)  # warm-up (worker start-up is a one-off per epoch)
    step(batch_inputs(b, device), batch_targets(b, key, device))
    sync()
    t0 = time.perf_counter()
    n = 0
    for b in it:
        # the trainer's path: uint8 images normalised and heatmaps expanded where the model runs
        step(batch_inputs(b, device, non_blocking=True), batch_targets(b, key, device, non_blocking=True))
        n += len(b["image"])
    sync()
    loop_rate = n / (time.perf_counter() - t0)
    return {"case": name, "batch": batch, "step": step_rate, "loop": loop_rate}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few steps, HRNet at 64 px (a smoke run)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data", type=Path, default=Path("/tmp/atf_bench_synth"))
    p.add_argument("--cases", default=",".join(CASES))
    a = p.parse_args()
    if not (a.data / "synthface.json").is_file():
        from atf.synth import generate
        generate(a.data, scale=0.02, seed=0, presets=["wflw"], workers=2, force=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for name in a.cases.split(","):
        upd, batch = CASES[name]
        if a.quick and "HRNet" in name:
            upd = {**upd, "model.input_size": 64}   # a smoke run of the heatmap path, not a figure
        steps = 3 if a.quick else (40 if "OCN" in name else 8)
        if device.type == "cuda":
            steps *= 5
        rows.append(bench_case(name, upd, batch, steps, a.data, a.workers, device))
    dev = torch.cuda.get_device_name() if device.type == "cuda" else f"{cpu_model()}, {torch.get_num_threads()} threads"
    print(f"\n{machine_line()}\ntrain step on {dev}; DataLoader workers: {a.workers}\n")
    print("| model | batch | train step only (img/s) | full loop (img/s) | loop / step |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['batch']} | {r['step']:.1f} | {r['loop']:.1f} | {100 * r['loop'] / r['step']:.0f}% |")


if __name__ == "__main__":
    main()
