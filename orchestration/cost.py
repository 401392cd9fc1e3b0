"""What a sweep will cost before it starts: trials, images seen, training FLOPs, hours on a device.

Why: the table sweeps run 400-epoch OCN cells and 60-epoch HRNet cells over every dataset pair; a
user should know the bill (and how many loader cores each GPU trial needs) before the cluster is
booked. `atf-sweep FILE --dry-run` ends with these lines.

- images seen: every stage's batches exactly as `atf.sampler.AtdpSampler` plans them (ATDP ratios
  and their decay, `optim.epoch_passes`, fine-tuning passes, the novel scenario's scratch run),
  on the data's face counts: the annotation files when present, SynthFace's planned counts when
  the sweep will generate it, else the registry's published sizes (`DatasetSpec.sizes`);
- training FLOPs: 3 x the forward FLOPs (`atf.models.count_flops`) per trained image (forward and a
  backward of twice its cost), 1 x per image of a frozen-trunk stage and per evaluated image;
- hours: those FLOPs at a device's measured rate (`throughput.yaml`: images/s of the full train
  step at a reference config, written by bench/bench_gpu.py on a GPU, bench/bench_train_step.py on
  a CPU), and loader cores: the trial's images/s on that device over the crop-cache loader's
  measured samples/s per core (bench/bench_loader.py).
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import yaml

from atf import keys
from atf.config import RunConfig

__all__ = ["THROUGHPUT_FILE", "CellCost", "cell_cost", "sweep_cost_lines", "load_throughput",
           "record_loader_rates", "record_device"]

THROUGHPUT_FILE = Path(__file__).with_name("throughput.yaml")
PIPELINE = {"ocn": "ocn112", "hrnet_w18": "hrnet256"}   # bench_loader's pipeline per backbone


@dataclass
class CellCost:
    trials: int
    images: float = 0.0          # trained images, all stages, per trial
    frozen_images: float = 0.0   # of which in frozen-trunk stages
    eval_images: float = 0.0     # validation every epoch + the final test sets, per trial
    forward_flops: float = 0.0   # one image, the cell's model (every head)
    notes: list[str] = field(default_factory=list)

    @property
    def flops(self) -> float:
        """Training FLOPs of all trials."""
        per = 3 * (self.images - self.frozen_images) + self.frozen_images + self.eval_images
        return self.trials * per * self.forward_flops


# -- face counts --------------------------------------------------------------------------------

def face_counts(cfg: RunConfig, name: str, synth: tuple[float, int] | None) -> tuple[int, int, str]:
    """(train faces, test faces over every subset, where they come from) of dataset `name`."""
    from atf import datasets
    from atf.readers import read_csv
    spec = datasets.get_dataset(name)
    try:
        train = len(read_csv(datasets.csv_path(name, "train", root=cfg.data)))
        test = sum(len(read_csv(datasets.csv_path(name, "test", s, root=cfg.data))) for s in spec.subsets)
        return train, test, "the annotation files"
    except (datasets.DatasetError, ValueError, OSError):
        pass
    if synth is not None:
        from atf.synth.generate import expected_counts
        from atf.synth.presets import get_preset
        counts = expected_counts(synth[0], synth[1], [name]).get(name, {})
        preset = get_preset(name)
        train_suffix = spec.train.removeprefix(f"{name}_")
        test = sum(v for k, v in counts.items() if k != train_suffix and k in dict(preset.files))
        return counts.get(train_suffix, 0), test, f"SynthFace at scale {synth[0]:g} (to be generated)"
    return spec.sizes[0], spec.sizes[1], "the published sizes (no annotation files here)"


# -- one cell -----------------------------------------------------------------------------------

@lru_cache(maxsize=16)
def _trunk_flops(model: tuple, input_size: int, heatmap_size: int) -> tuple[int, Any]:
    """(trunk FLOPs, its features) of a model config, built on the meta device: shapes only, so
    counting HRNet-W18 runs no real convolution; each head is then counted on those features."""
    import torch

    from atf.config import ModelConfig
    from atf.models import build_model, count_call
    mc = dataclasses.replace(ModelConfig(**dict(model)), pretrained="")
    with torch.device("meta"):
        net = build_model(mc, {"_": 1}, input_size, heatmap_size)
        x = torch.zeros(1, 3, input_size, input_size)
    out: dict[str, Any] = {}
    flops = count_call(net.trunk, lambda: out.setdefault("features", net.trunk.forward_features(x))).flops
    return flops, (net, out["features"])


@lru_cache(maxsize=64)
def _head_flops(model: tuple, input_size: int, heatmap_size: int, points: int) -> int:
    import torch
    _, (net, features) = _trunk_flops(model, input_size, heatmap_size)
    with torch.device("meta"):
        head = net.trunk.new_head(points)
    from atf.models import count_call
    return count_call(head, lambda: head(features)).flops


def _forward_flops(model: tuple, heads: tuple[tuple[str, int], ...], input_size: int, heatmap_size: int) -> int:
    """One image through the trunk and every head (what an L_MB batch runs)."""
    trunk, _ = _trunk_flops(model, input_size, heatmap_size)
    return trunk + sum(_head_flops(model, input_size, heatmap_size, k) for _, k in heads)


def _stage_images(sizes: list[int], batch: int, ratios: tuple[float, ...], decays: tuple[float, ...],
                  epochs: int, passes: int = 1) -> float:
    from atf.sampler import AtdpSampler
    s = AtdpSampler(sizes, batch, ratios, decays, seed=0, passes=passes)
    per_batch = [min(batch, n) for n in sizes]
    return float(sum(sum(c * b for c, b in zip(s.counts(e), per_batch)) for e in range(epochs)))


def cell_cost(cfg: RunConfig, trials: int, faces: Callable[[str], tuple[int, int, str]]) -> CellCost:
    """Images seen and FLOPs of one cell (a search's `trials` samples each cost the same)."""
    from atf import datasets
    from atf.schemes import get_scheme
    d, o, ft = cfg.data, cfg.optim, cfg.finetune
    names = [*cfg.datasets, *([cfg.novel] if cfg.novel else [])]
    counts = {n: faces(n) for n in names}
    val = {n: round(d.val_fraction * _cap(counts[n][0], d.max_train)) if n in cfg.selected_heads else 0 for n in names}
    train = {n: max(1, _cap(counts[n][0], d.max_train) - val[n]) for n in names}
    test = {n: _cap_test(counts[n][1], d.max_test, len(datasets.get_dataset(n).subsets)) for n in names}
    c = CellCost(trials=trials, notes=sorted({f"{n}: faces from {counts[n][2]}" for n in names}))
    c.images = _stage_images([train[n] for n in cfg.datasets], o.batch_size, cfg.ratios, cfg.decays, o.epochs,
                             o.epoch_passes)
    c.eval_images = o.epochs * val[cfg.target]
    if cfg.scenario in (keys.SCENARIO_JOINT, keys.SCENARIO_NOVEL):
        frozen = [n for n in cfg.aux] + ([cfg.novel] if cfg.scenario == keys.SCENARIO_NOVEL else [])
        for n in frozen:
            imgs = ft.epochs * (train[n] // o.batch_size or 1) * min(o.batch_size, train[n])
            c.images += imgs
            c.frozen_images += imgs
            c.eval_images += ft.epochs * val[n]
        if cfg.scenario == keys.SCENARIO_NOVEL and ft.compare_scratch:
            c.images += _stage_images([train[cfg.novel]], o.batch_size, (1.0,), (), o.epochs, o.epoch_passes)
            c.eval_images += o.epochs * val[cfg.novel] + test[cfg.novel]
    c.eval_images += sum(test[n] for n in cfg.selected_heads) * len(cfg.protocols) * (2 if cfg.eval.flip_test else 1)
    heads = tuple((n, get_scheme(datasets.get_dataset(n).scheme).num_points) for n in names)
    model = tuple(sorted(dataclasses.asdict(cfg.model).items()))
    c.forward_flops = float(_forward_flops(model, heads, cfg.input_size, cfg.heatmap_size))
    return c


def _cap(n: int, cap: int) -> int:
    return min(n, cap) if cap else n


def _cap_test(n: int, cap: int, subsets: int) -> int:
    return min(n, cap * subsets) if cap else n


# -- the throughput table -----------------------------------------------------------------------

def load_throughput(path: Path | None = None) -> dict[str, Any]:
    """`throughput.yaml`: {"devices": [{name, kind, measured_by, date, machine, models: {backbone:
    {images_per_s, forward_flops, input_size, batch}}}], "loader": {machine, date, per_core: {ocn112,
    hrnet256}}}; images_per_s is the whole train step (forward, loss, backward, optimiser)."""
    path = path or THROUGHPUT_FILE
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {"devices": [], "loader": {}}
    return {"devices": list(data.get("devices") or []), "loader": dict(data.get("loader") or {})}


def _write(data: dict, path: Path) -> Path:
    head = ("# Measured throughputs that `atf-sweep --dry-run` prices a sweep with (orchestration/cost.py).\n"
            "# devices: bench/bench_gpu.py --write-throughput (GPU), bench/bench_train_step.py --write-throughput\n"
            "# (CPU); loader: bench/bench_loader.py --write-throughput. Rewritten by those commands.\n")
    path.write_text(head + yaml.safe_dump(data, sort_keys=False))
    return path


def record_device(name: str, kind: str, models: dict[str, dict], measured_by: str, machine: str,
                  path: Path | None = None) -> Path:
    """Add or replace a device's entry (keyed by name)."""
    path = path or THROUGHPUT_FILE
    data = load_throughput(path)
    entry = {"name": name, "kind": kind, "measured_by": measured_by, "date": datetime.date.today().isoformat(),
             "machine": machine, "models": models}
    data["devices"] = [d for d in data["devices"] if d.get("name") != name] + [entry]
    return _write(data, path)


def record_loader_rates(per_core: dict[str, float], machine: str, path: Path | None = None) -> Path:
    path = path or THROUGHPUT_FILE
    data = load_throughput(path)
    data["loader"] = {"machine": machine, "date": datetime.date.today().isoformat(),
                      "measured_by": "bench/bench_loader.py", "per_core": {k: round(v) for k, v in per_core.items()}}
    return _write(data, path)


def _device(table: dict, name: str | None) -> dict | None:
    devices = table["devices"]
    if name:
        match = [d for d in devices if name.lower() in str(d.get("name", "")).lower()]
        return match[0] if match else None
    gpus = [d for d in devices if d.get("kind") == "gpu"]
    return (gpus or devices or [None])[0]


def _seconds(c: CellCost, cfg: RunConfig, device: dict) -> tuple[float, float] | None:
    """(seconds of all trials, the trial's images/s) on `device`: its reference model's images/s,
    scaled by forward FLOPs to this cell's model."""
    ref = (device.get("models") or {}).get(cfg.model.backbone) or {}
    if not ref.get("images_per_s") or not ref.get("forward_flops") or not c.forward_flops:
        return None
    rate = float(ref["images_per_s"]) * float(ref["forward_flops"]) / c.forward_flops   # training images/s
    work = 3 * (c.images - c.frozen_images) + c.frozen_images + c.eval_images   # in forward passes
    return c.trials * work / 3.0 / rate, rate


def sweep_cost_lines(cells: list, cfg_of: Callable[[Any], RunConfig],
                     synth_of: Callable[[Any], tuple[float, int] | None], device_name: str | None = None,
                     table: dict | None = None, faces: Callable = None) -> list[str]:
    """The dry run's closing lines: per table and in total (a cell in two tables counts in each
    table's line, once in the total). `synth_of(cell)`: (scale, seed) of the SynthFace data a cell
    will generate, None for data that must already be there. `faces(cfg, name, synth)`: face
    counts (default `face_counts`)."""
    table = table or load_throughput()
    faces = faces or face_counts
    device = _device(table, device_name)
    costs = []
    for cell in cells:
        cfg, synth = cfg_of(cell), synth_of(cell)
        trials = cell.search.num_samples if cell.search else 1
        costs.append((cell, cfg, cell_cost(cfg, trials, lambda n, cfg=cfg, synth=synth: faces(cfg, n, synth))))
    loader = (table.get("loader") or {}).get("per_core") or {}
    rows = [(f"table {t}", [x for x in costs if t in x[0].tables]) for t in keys.TABLES
            if any(t in x[0].tables for x in costs)]
    rows.append(("total", costs))
    lines = [_device_line(device, device_name, table)]
    lines.append(f"{'':<10}{'trials':>7}{'images seen':>14}{'train FLOPs':>13}{'hours':>9}{'loader cores/trial':>20}")
    for label, group in rows:
        trials = sum(c.trials for _, _, c in group)
        images = sum(c.trials * c.images for _, _, c in group)
        flops = sum(c.flops for _, _, c in group)
        secs, cores = _time_and_cores(group, device, loader)
        hours = f"{secs / 3600:.3g}" if secs is not None else "n/a"
        lines.append(f"{label:<10}{trials:>7}{images:>14.3g}{flops:>13.3g}{hours:>9}{cores:>20}")
    notes = sorted({n for _, _, c in costs for n in c.notes})
    lines += [f"  ({n})" for n in notes]
    return lines


def _time_and_cores(group, device, loader: dict) -> tuple[float | None, str]:
    if device is None:
        return None, "n/a"
    secs, need = 0.0, []
    for _, cfg, c in group:
        got = _seconds(c, cfg, device)
        if got is None:
            return None, "n/a"
        secs += got[0]
        per_core = loader.get(PIPELINE.get(cfg.model.backbone, ""))
        if per_core:
            need.append(got[1] / float(per_core))
    cores = f"{max(need):.2g}" if need else "n/a"
    return secs, (f"up to {cores}" if len(set(round(x, 2) for x in need)) > 1 else cores)


def _device_line(device: dict | None, asked: str | None, table: dict) -> str:
    if device is None:
        known = ", ".join(d.get("name", "?") for d in table["devices"]) or "none recorded"
        return (f"cost before it starts: no measured device{f' matching {asked!r}' if asked else ''} "
                f"(known: {known}); hours and loader cores are n/a")
    what = ("a CPU measurement: no GPU figure recorded yet; run `python bench/bench_gpu.py --write-throughput` "
            "on a GPU node" if device.get("kind") != "gpu" else "a GPU measurement")
    return (f"cost before it starts, on {device.get('name')} ({what}; {device.get('measured_by', '?')}, "
            f"{device.get('date', '?')}; hours scale its reference models by FLOPs):")
