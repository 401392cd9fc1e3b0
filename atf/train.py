"""One training run of the paper: baseline, ATF, joint or novel detector (sec. III).

`train(cfg, out_dir, on_epoch, resume)` is the one public entry point that the
sweep wraps: config in, a callback per epoch, a `RunResult` out. A run is a
list of stages:

- main:  ATDP over target (+ auxiliaries) with L_MB or L_AT; the best epoch is
         chosen on a validation split carved from the target's training data.
- joint: trunk frozen (BatchNorm in eval), each auxiliary head fine-tuned on its
         own data and chosen on its own validation split: in this stage that head
         is the "target" (so joint/novel runs hold out a validation share of every
         fine-tuned head's data, for the whole run; see atf.rundata).
- novel: trunk frozen, a new head added and fine-tuned on the novel dataset;
         its time is compared against training that dataset's model from scratch.

Under `eval.selection: test` (the paper's practice) every selected head is chosen
on its own test set instead, and every output says so.

Everything is written under `out_dir`: checkpoints/last.pt (every epoch, enough
to resume), checkpoints/best.pt, model/<target>.pt (pruned TorchScript),
ced/*.csv, predictions/*.csv and result.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from atf import keys
from atf.checkpoint import load_checkpoint, load_resumable, rng_state, save_checkpoint, set_rng_state
from atf.config import ConfigError, RunConfig, from_dict, to_dict
from atf.data import batch_inputs, batch_targets
from atf.datacheck import PROBLEMS_FILE
from atf.datacheck import enforce as enforce_data_policy
from atf.device import pick_device
from atf.evaluate import evaluate_head, report_tests
from atf.losses import LossWeights, mixed_branch_terms
from atf.models import build_model
from atf.models.pretrained import check_pretrained, load_pretrained
from atf.rundata import RunData
from atf.sampler import AtdpSampler
from atf.schemes import similar_pairs

__all__ = ["train", "EpochReport", "RunResult", "Stage", "plan_stages"]

log = logging.getLogger("atf.train")


@dataclass
class EpochReport:
    stage: int
    epoch: int                      # 1-based within the stage
    metrics: dict[str, float]       # keys.* names
    checkpoint: Path                # complete last.pt of this epoch
    is_best: bool


@dataclass
class RunResult:
    metrics: dict[str, float]
    best_epoch: int
    best_checkpoint: Path
    exported_model: Path | None
    ced: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    predictions: dict[tuple[str, str], Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # the same phases, CPU time of this process


@dataclass(frozen=True)
class Stage:
    name: str                       # "main" | "joint" | "novel"
    datasets: tuple[str, ...]       # batches come from these; the first sets the epoch length
    select: tuple[str, ...]         # heads chosen at their best epoch on their own validation split
    epochs: int
    lr: float
    frozen_trunk: bool
    mixed: bool                     # L_MB term on (main stage of an ATF run only)
    milestones: tuple[int, ...] = ()  # fine-tuning stages: multistep lr (the main stage follows optim.*)


def plan_stages(cfg: RunConfig) -> list[Stage]:
    stages = [Stage("main", cfg.datasets, (cfg.target,), cfg.optim.epochs, cfg.optim.lr,
                    frozen_trunk=False, mixed=cfg.loss.mixed and bool(cfg.aux))]
    ft = cfg.finetune
    if cfg.scenario in (keys.SCENARIO_JOINT, keys.SCENARIO_NOVEL):
        stages.append(Stage("joint", cfg.aux, cfg.aux, ft.epochs, ft.lr, frozen_trunk=True, mixed=False,
                            milestones=ft.milestones))
    if cfg.scenario == keys.SCENARIO_NOVEL:
        stages.append(Stage("novel", (cfg.novel,), (cfg.novel,), ft.epochs, ft.lr, frozen_trunk=True, mixed=False,
                            milestones=ft.milestones))
    return stages


def sampler_seed(seed: int, stage: str) -> int:
    """The batch-order seed of one stage. Each stage draws its own from (seed, crc32 of its name),
    so the joint and novel stages of one seed never share a batch order (they did when the seed
    was seed*31 + len(name)). The main stage keeps that old value: every baseline and ATF run, the
    bulk of the tables, keeps its numbers."""
    if stage == "main":
        return seed * 31 + len(stage)
    return int(np.random.SeedSequence([seed, zlib.crc32(stage.encode())]).generate_state(1)[0])


def report_heads(cfg: RunConfig) -> tuple[str, ...]:
    """Heads whose test sets a scenario reports (tables VIII/IX need every head): the selected ones."""
    return cfg.selected_heads


class _Run:
    """State of one `train` call; methods are the steps of the loop, top to bottom."""

    def __init__(self, cfg: RunConfig, out_dir: Path, on_epoch: Callable[[EpochReport], None] | None):
        self.cfg, self.out = cfg, Path(out_dir)
        self.on_epoch = on_epoch
        self.device = pick_device(cfg.device)
        self.ckpt_dir = self.out / "checkpoints"
        check_pretrained(cfg.model.backbone, cfg.model.pretrained)   # before any data is read
        skip = enforce_data_policy(cfg, self.out)  # bad rows: refused naming them, or skipped and listed
        # a missing crop cache is built with the CPUs this process was given (atf.threads' plan)
        self.data = RunData(cfg, skip, cache_workers=torch.get_num_threads() + cfg.data.num_workers)
        if skip:
            self.data.notes.append(f"data.bad_rows=skip: {sum(map(len, skip.values()))} bad row(s) skipped "
                                   f"(listed in {PROBLEMS_FILE})")
        self.kind = cfg.loss_kind
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, {d: self.data.num_points(d) for d in cfg.datasets},
                                 cfg.input_size, cfg.heatmap_size)
        pretrained = load_pretrained(self.model.trunk, cfg.model.pretrained) if cfg.model.pretrained else None
        self.model.to(self.device)
        for name in cfg.datasets:
            self._init_head(name)
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}   # phase -> CPU s of this process: a shared machine's load
                                                  # inflates wall seconds, hardly these (a time claim, Table IX)
        self.notes: list[str] = list(self.data.notes) + ([pretrained.note()] if pretrained else [])
        self.best: dict[str, dict] = {}     # head -> {"nme", "epoch", "state"}; "main" best lives in best.pt
        self.best_epoch = 0
        lc = cfg.loss
        self.weights = LossWeights(lc.weighting, lc.alpha, lc.beta, lc.gamma)

    # -- pieces of a stage ----------------------------------------------------------------------
    def _pairs(self, heads: tuple[str, ...]) -> dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]:
        table = self.cfg.loss.pairs
        out = {}
        for a in heads:
            for b in heads:
                if a != b:
                    p = similar_pairs(self.data.scheme(a).name, self.data.scheme(b).name, table=table)
                    if len(p):
                        out[(a, b)] = (torch.as_tensor(p[:, 0], device=self.device),
                                       torch.as_tensor(p[:, 1], device=self.device))
        return out

    def _optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        """Heads at the stage's lr; the trunk at optim.trunk_lr when set (public HRNet ATF code)."""
        o = self.cfg.optim
        head_ids = {id(p) for p in self.model.heads.parameters()}
        trunk = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        heads = [p for p in self.model.heads.parameters() if p.requires_grad]
        trunk_lr = o.trunk_lr if (o.trunk_lr > 0 and stage.name == "main") else stage.lr
        groups = [g for g in ({"params": trunk, "lr": trunk_lr}, {"params": heads, "lr": stage.lr}) if g["params"]]
        if o.name == "sgd":
            return torch.optim.SGD(groups, lr=stage.lr, momentum=0.9, weight_decay=o.weight_decay)
        cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
        return cls(groups, lr=stage.lr, weight_decay=o.weight_decay)

    def _scheduler(self, stage: Stage, opt: torch.optim.Optimizer):
        o = self.cfg.optim
        if stage.name != "main":  # fine-tuning: the public fine_tune.py's multistep schedule
            if not stage.milestones:
                return None
            return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(stage.milestones), gamma=o.factor)
        if o.schedule == "none":
            return None
        if o.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=o.factor, patience=o.patience)
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(o.milestones), gamma=o.factor)

    def _sampler(self, stage: Stage) -> AtdpSampler:
        sizes = [self.data.train_size(d) for d in stage.datasets]
        passes = 1
        if stage.name == "main":
            ratios, decays, passes = self.cfg.ratios, self.cfg.decays, self.cfg.optim.epoch_passes
        else:  # fine-tuning: one pass over each dataset per epoch, no decay
            ratios, decays = tuple(s / sizes[0] for s in sizes), tuple(1.0 for _ in sizes[1:])
        return AtdpSampler(sizes, self.cfg.optim.batch_size, ratios, decays, seed=sampler_seed(self.cfg.seed, stage.name),
                           passes=passes)

    def _train_epoch(self, stage: Stage, sampler: AtdpSampler, opt: torch.optim.Optimizer,
                     pairs: dict, epoch: int) -> float:
        plan = sampler.plan()
        plain = self.cfg.aux if stage.name == "main" and not self.cfg.augment.auxiliary else ()
        loader = self.data.train_loader(stage.datasets, plan, epoch, plain=plain)
        self.weights.reset()  # running weights: means over this epoch (HRNet's per-epoch meters)
        self.model.train()
        total, n = 0.0, 0
        bar = _progress(len(plan), stage.name, epoch + 1, stage.epochs)
        for (d, _idx), batch in zip(plan, loader):
            name = stage.datasets[d]
            self.data.skipped += len(batch["skipped"])  # counted here: collate runs in the workers
            if "image" not in batch:  # every sample of the batch was unreadable and skipped
                continue
            x = batch_inputs(batch, self.device, non_blocking=True)
            gt = batch_targets(batch, self.model.kind, self.device, non_blocking=True)
            heads = stage.datasets if stage.mixed else (name,)
            outputs = self.model(x, heads=list(heads))
            target = self.cfg.target if stage.name == "main" else name
            own, ps = mixed_branch_terms(outputs, name, gt, pairs, self.kind, stage.mixed)
            if not stage.mixed:
                loss = own
            else:
                alpha, beta, gamma = self.weights.step(name == target, own.detach().item(), ps.detach().item())
                loss = own + alpha * ps if name == target else beta * own + gamma * ps
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at {stage.name} epoch {epoch + 1} "
                                         f"on a batch of {name}; lower optim.lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(x)
            n += len(x)
            if bar is not None:
                bar.update(1, len(x))
        if bar is not None:
            bar.close()
        return total / max(n, 1)

    def _validate(self, stage: Stage) -> tuple[dict[str, float], dict[str, float]]:
        """Per-head validation NME (%) and loss; with selection=test each head's test NME instead."""
        nmes, losses = {}, {}
        for head in stage.select:
            if self.cfg.eval.selection == "test":
                res = report_tests(self.model, head, self.data, self.device, subsets=("full",))
                nmes[head] = res.metrics[keys.test_metric(head, "full", keys.NME)]
                losses[head] = float("nan")
                continue
            ev = evaluate_head(self.model, head, self.data.val_set(head), self.data, self.device)
            if ev is None:  # no validation split (val_fraction 0): keep the last epoch
                continue
            nmes[head], losses[head] = ev.nme, ev.loss
        return nmes, losses

    # -- checkpoints ----------------------------------------------------------------------------
    def _state(self, stage_idx: int, epoch: int, opt, sched, sampler: AtdpSampler) -> dict:
        return {
            "model": self.model.state_dict(),
            "heads": self._head_points(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "sampler": sampler.state_dict(),
            "loss_weights": self.weights.state_dict(),
            "rng": rng_state(),
            "stage": stage_idx,
            "epoch": epoch,
            "best": {h: {k: v for k, v in b.items()} for h, b in self.best.items()},
            "best_epoch": self.best_epoch,
            "seconds": dict(self.seconds),
            "cpu_seconds": dict(self.cpu_seconds),
            "model_config": to_dict(self.cfg.model),
            "run_config": to_dict(self.cfg),
        }

    def _restore(self, state: dict) -> None:
        saved = from_dict(RunConfig, state["run_config"])
        if _result_fields(saved) != _result_fields(self.cfg):
            raise ConfigError("resume: the checkpoint was made with a different config; "
                              "start a new out_dir or resume with the same config")
        self._ensure_heads(state["heads"])
        self.model.load_state_dict(state["model"])
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.seconds = dict(state["seconds"])
        self.cpu_seconds = dict(state.get("cpu_seconds") or {})   # absent from checkpoints before it

    def _head_points(self) -> dict[str, int]:
        return {name: self.data.num_points(name) for name in self.model.heads}

    def _ensure_heads(self, heads: dict[str, int]) -> None:
        for name, k in heads.items():
            if name not in self.model.heads:
                torch.manual_seed(self.cfg.seed + 1000 + len(self.model.heads))
                self.model.add_branch(name, k)
                self._init_head(name)
        self.model.to(self.device)

    @torch.no_grad()
    def _init_head(self, name: str) -> None:
        """Start a coordinate head at the mean shape: from-scratch regression converges far sooner."""
        fc = getattr(self.model.heads[name], "fc", None)
        if self.model.kind != "coords" or not self.cfg.model.mean_shape_init or not isinstance(fc, torch.nn.Linear):
            return
        fc.bias.copy_(torch.as_tensor(self.data.mean_crop_coords(name)).reshape(-1))

    # -- the loop ---------------------------------------------------------------------------
    def run(self, resume: Path | None) -> RunResult:
        stages = plan_stages(self.cfg)
        start_stage, start_epoch, state = 0, 0, None
        if resume is not None:
            state, used, damaged = load_resumable(resume)  # a damaged last.pt falls back to last.prev.pt
            if damaged:
                log.warning(damaged)
                self.notes.append(damaged)
            resume = used
            self._restore(state)
            start_stage, start_epoch = state["stage"], state["epoch"]
            if start_epoch >= stages[start_stage].epochs:   # the stage had finished
                self._finish_stage(stages[start_stage])
                start_stage, start_epoch, state = start_stage + 1, 0, None
            self.notes.append(f"resumed from {resume} at stage {start_stage} epoch {start_epoch + 1}")
        for si in range(start_stage, len(stages)):
            stage = stages[si]
            self._run_stage(si, stage, start_epoch if si == start_stage else 0,
                            state if si == start_stage else None)
            self._finish_stage(stage)
        return self._final()

    def _run_stage(self, si: int, stage: Stage, start_epoch: int, state: dict | None) -> None:
        if stage.name == "novel":
            self._ensure_heads({self.cfg.novel: self.data.num_points(self.cfg.novel)})
        if stage.frozen_trunk:
            self.model.freeze_trunk()
            for name, head in self.model.heads.items():
                head.requires_grad_(name in stage.datasets)
        opt = self._optimizer(stage)
        sched = self._scheduler(stage, opt)
        sampler = self._sampler(stage)
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            if sched is not None and state["scheduler"] is not None:
                sched.load_state_dict(state["scheduler"])
            sampler.load_state_dict(state["sampler"])
            if "loss_weights" in state:
                self.weights.load_state_dict(state["loss_weights"])
            set_rng_state(state["rng"])
        pairs = self._pairs(stage.datasets) if stage.mixed else {}
        phase = "novel_head" if stage.name == "novel" else stage.name
        for epoch in range(start_epoch, stage.epochs):
            t0, c0 = time.perf_counter(), time.process_time()
            train_loss = self._train_epoch(stage, sampler, opt, pairs, epoch)
            nmes, losses = self._validate(stage)
            is_best = self._update_best(stage, nmes, epoch)
            if sched is not None:
                first = stage.select[0]
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    metric = losses.get(first, float("nan"))
                    sched.step(metric if np.isfinite(metric) else train_loss)
                else:
                    sched.step()
            seconds = time.perf_counter() - t0
            self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
            self.cpu_seconds[phase] = self.cpu_seconds.get(phase, 0.0) + time.process_time() - c0
            metrics = {keys.STAGE: float(si), keys.EPOCH: float(epoch + 1), keys.TRAIN_LOSS: train_loss,
                       keys.LR: opt.param_groups[-1]["lr"], keys.EPOCH_TIME: seconds}
            for head, v in nmes.items():
                metrics[keys.val_metric(head)] = v
            if nmes:
                metrics[keys.VAL_NME] = float(np.mean(list(nmes.values())))
            if stage.select[0] in losses and np.isfinite(losses[stage.select[0]]):
                metrics[keys.VAL_LOSS] = losses[stage.select[0]]
            last = save_checkpoint(self._state(si, epoch + 1, opt, sched, sampler), self.ckpt_dir / "last.pt",
                                   keep_previous=True)
            _log_epoch(stage, epoch, metrics)
            if self.on_epoch is not None:
                self.on_epoch(EpochReport(si, epoch + 1, metrics, last, is_best))

    def _update_best(self, stage: Stage, nmes: dict[str, float], epoch: int) -> bool:
        improved = False
        for head in stage.select:
            nme = nmes.get(head, float("nan"))
            if not np.isfinite(nme):
                nme = -float(epoch)  # no validation: every epoch is "best", i.e. keep the last
            prev = self.best.get(head)
            if prev is None or nme < prev["nme"]:
                improved = True
                if stage.name == "main":
                    save_checkpoint({"model": self.model.state_dict(), "heads": self._head_points(),
                                     "run_config": to_dict(self.cfg), "model_config": to_dict(self.cfg.model),
                                     "epoch": epoch + 1, "val_nme": nme}, self.ckpt_dir / "best.pt")
                    self.best[head] = {"nme": nme, "epoch": epoch + 1}
                    self.best_epoch = epoch + 1
                else:
                    state = {k: v.detach().cpu().clone() for k, v in self.model.heads[head].state_dict().items()}
                    self.best[head] = {"nme": nme, "epoch": epoch + 1, "state": state}
        return improved

    def _finish_stage(self, stage: Stage) -> None:
        """Load the selected weights of the stage before the next one starts."""
        if stage.name == "main":
            best = load_checkpoint(self.ckpt_dir / "best.pt")
            self.model.load_state_dict(best["model"])
            return
        for head in stage.select:
            if "state" in self.best.get(head, {}):
                self.model.heads[head].load_state_dict(self.best[head]["state"])

    def _final(self) -> RunResult:
        cfg = self.cfg
        if cfg.eval.selection == "test":
            self.notes.append("selection=test: the best epoch was chosen on the TEST set (paper protocol), "
                              "not on a validation split; these numbers are optimistic")
        if keys.PROTOCOL_OCN in cfg.protocols:
            self.notes.append(f"eval.protocol={cfg.eval.protocol}: metrics named "
                              f"{keys.test_metric('<d>', '<s>', keys.NME, keys.PROTOCOL_OCN)} use the public OCN "
                              "code's protocol (test crop from the detector box joined with the ground truth, "
                              "crop units), which the paper's OCN numbers use")
        metrics: dict[str, float] = {}
        ced, preds = {}, {}
        for head in report_heads(cfg):
            for protocol in cfg.protocols:
                res = report_tests(self.model, head, self.data, self.device, out_dir=self.out, protocol=protocol)
                metrics.update(res.metrics)
                ced.update(res.ced)
                preds.update(res.predictions)
                self.notes.extend(res.notes)
        for head, b in self.best.items():
            if np.isfinite(b["nme"]) and b["nme"] >= 0:
                metrics[keys.val_metric(head)] = float(b["nme"])
        if cfg.target in self.best and self.best[cfg.target]["nme"] >= 0:
            metrics[keys.VAL_NME] = float(self.best[cfg.target]["nme"])
        exported = self._export()
        if cfg.scenario == keys.SCENARIO_NOVEL and cfg.finetune.compare_scratch:
            metrics.update(self._scratch())
        for phase, s in self.seconds.items():
            metrics[keys.time_metric(phase)] = s
        for phase, s in self.cpu_seconds.items():
            metrics[keys.cpu_time_metric(phase)] = s
        if self.data.skipped:
            self.notes.append(f"skipped {self.data.skipped} unreadable images (data.skip_unreadable)")
        result = RunResult(metrics, self.best_epoch, self.ckpt_dir / "best.pt", exported, ced, preds,
                           dict(self.seconds), self.notes, dict(self.cpu_seconds))
        _write_result(self.out / "result.json", result)
        return result

    def _export(self) -> Path | None:
        from atf.export import export_model
        pruned = self.model.prune(self.cfg.target).cpu().eval()
        meta = self.data.export_meta(self.cfg.target, self.model.kind)
        return export_model(pruned, self.out / keys.ARTIFACT_MODEL_DIR / f"{self.cfg.target}.pt2", meta)

    def _scratch(self) -> dict[str, float]:
        """Novel scenario: the same dataset trained from scratch, for the time and accuracy comparison."""
        cfg = self.cfg
        scratch_cfg = dataclasses.replace(cfg, scenario=keys.SCENARIO_BASELINE, target=cfg.novel, aux=(), novel="",
                                          atdp=dataclasses.replace(cfg.atdp, ratios=(), decays=()))
        cb = None
        if self.on_epoch is not None:
            def cb(r: EpochReport) -> None:
                self.on_epoch(dataclasses.replace(r, stage=len(plan_stages(cfg)), metrics={
                    **r.metrics, keys.STAGE: float(len(plan_stages(cfg)))}))
        last = self.out / "scratch" / "checkpoints" / "last.pt"  # a restored trial continues it
        res = train(scratch_cfg, self.out / "scratch", on_epoch=cb, resume=last if last.is_file() else None)
        self.seconds["novel_scratch"] = res.seconds.get("main", 0.0)
        self.cpu_seconds["novel_scratch"] = res.cpu_seconds.get("main", 0.0)
        out = {}
        for name, v in res.metrics.items():
            parsed = keys.parse_protocol_metric(name)
            if parsed:
                protocol, dataset, subset, metric = parsed
                out[keys.test_metric(dataset + keys.SCRATCH_SUFFIX, subset, metric, protocol)] = v
        return out


def train(cfg: RunConfig, out_dir: Path | str, on_epoch: Callable[[EpochReport], None] | None = None,
          resume: Path | str | None = None) -> RunResult:
    """Run one configuration end to end; see the module docstring. Raising in `on_epoch` stops it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / keys.ARTIFACT_CONFIG).write_text(_yaml_dump(to_dict(cfg)))
    return _Run(cfg, out_dir, on_epoch).run(Path(resume) if resume is not None else None)


# -- small helpers ------------------------------------------------------------------------------

def _result_fields(cfg: RunConfig) -> dict:
    """Config fields that change results (resume refuses a checkpoint made with others)."""
    d = to_dict(cfg)
    d["data"].pop("num_workers", None)
    d.pop("device", None)
    return d


def _progress(total: int, stage: str, epoch: int, epochs: int):
    """A bar on a terminal, periodic lines (step, img/s, ETA) in a log file: atf.progress."""
    from atf.progress import Progress
    return Progress(total, "train", stage, epoch, epochs)


def _log_epoch(stage: Stage, epoch: int, m: dict[str, float]) -> None:
    val = f" val_nme={m[keys.VAL_NME]:.3f}" if keys.VAL_NME in m else ""
    log.info("%s epoch %d/%d loss=%.4f%s lr=%.2e (%.1fs)", stage.name, epoch + 1, stage.epochs,
             m[keys.TRAIN_LOSS], val, m[keys.LR], m[keys.EPOCH_TIME])


def _yaml_dump(d: dict) -> str:
    import yaml
    return yaml.safe_dump(d, sort_keys=False)


def _write_result(path: Path, r: RunResult) -> None:
    path.write_text(json.dumps({
        "metrics": r.metrics, "best_epoch": r.best_epoch, "best_checkpoint": str(r.best_checkpoint),
        "exported_model": str(r.exported_model) if r.exported_model else None,
        "predictions": {f"{d}/{s}": str(p) for (d, s), p in r.predictions.items()},
        "seconds": r.seconds, "notes": r.notes,
    }, indent=2))
