"""Typed run configuration: frozen dataclasses loaded from YAML.

One `RunConfig` describes one training run of the paper (any scenario). Unknown
keys are errors that name their full path, so a typo never silently falls back
to a default. Variants are made with `dataclasses.replace` or `override`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from atf import keys

__all__ = [
    "ConfigError", "DatasetPaths", "DataConfig", "ModelConfig", "LossConfig", "AtdpConfig",
    "OptimConfig", "AugmentConfig", "EvalConfig", "FinetuneConfig", "RunConfig",
    "from_dict", "to_dict", "load_config", "override", "protocol_summary",
    "RANGES", "check_ranges", "crop_cache_on", "validate", "apply", "parse_assignments", "field_type",
    "field_paths", "check_keys", "nest", "merge", "FREE_MAPPINGS", "read_yaml", "RETIRED",
]


class ConfigError(ValueError):
    """A bad configuration value; the message names the file and key path."""


# Keys that once existed: still read (old configs, sweep files and checkpoints keep working), then
# dropped with one warning line saying what replaced them.
RETIRED = {
    "data.cache_images": "decoded images are no longer kept per process; the shared, memory-mapped "
                         "face-crop cache replaces it (data.crop_cache, on by default for real data)",
}


def _drop_retired(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`d` without RETIRED keys (dotted or nested), each reported once."""
    out = {}
    for k, v in d.items():
        dotted = f"{prefix}{k}"
        if dotted in RETIRED:
            if dotted not in _WARNED:
                _WARNED.add(dotted)
                warnings.warn(f"config key '{dotted}' is retired and ignored: {RETIRED[dotted]}", FutureWarning,
                              stacklevel=3)
            continue
        out[k] = _drop_retired(v, f"{dotted}.") if isinstance(v, dict) and dotted not in FREE_MAPPINGS else v
    return out


_WARNED: set[str] = set()


@dataclass(frozen=True)
class DatasetPaths:
    annotations: str = ""          # folder holding face_landmarks_<name>_*.csv ("" = <data.root>/<name>)
    images: str = ""               # folder the CSV image names are relative to ("" = <annotations>/images)


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/synth"       # default parent folder: <root>/<dataset>/face_landmarks_*.csv
    paths: dict[str, DatasetPaths] = field(default_factory=dict)  # per-dataset overrides of root
    val_fraction: float = 0.1      # share of each SELECTED head's train split held out for model selection
                                   # (the target; joint/novel: also the fine-tuned heads); auxiliaries keep
                                   # all their data. 0 only with eval.selection: test (the paper's practice)
    max_train: int = 0             # cap on train images per dataset (0 = all); small/fast modes
    max_test: int = 0              # cap on test images per subset (0 = all)
    num_workers: int = 0           # DataLoader worker processes (0 = in the main process)
    skip_unreadable: bool = False  # skip (count and report) unreadable images instead of failing
    crop: Literal["center_scale", "box"] = "center_scale"  # crop from scale*200 around centre, or from the box
    crop_margin: float = 1.25      # crop side = margin x (scale*200 or box side)
    registry: tuple[str, ...] = () # extra YAML files declaring schemes/datasets (a novel dataset, no code)
    crop_cache: bool | Literal["auto"] = "auto"  # face crops cut once into a shared memory-mapped file
                                   # (atf.cropcache): auto = on for real data, off for SynthFace (its small
                                   # images decode in a fraction of a millisecond). Changes resampling only
    cache_dir: str = ""            # where crop caches live ("" = ~/.cache/atf/crops); shared storage lets
                                   # one build serve every node
    bad_rows: Literal["refuse", "skip"] = "refuse"  # rows atf.datacheck finds bad (image missing or outside
                                   # the root, NaN, points far outside the image, degenerate box): refuse the
                                   # run naming them, or skip them (counted, listed in <out>/data_problems.txt)


@dataclass(frozen=True)
class ModelConfig:
    backbone: Literal["ocn", "hrnet_w18"] = "ocn"
    input_size: int = 0            # 0 = backbone default (OCN 112, HRNet 256)
    width_mult: float = 1.0        # channel multiplier for small CPU configs
    heatmap_size: int = 0          # heatmap backbones only; 0 = input_size // 4
    mean_shape_init: bool = True   # coordinate heads start at the training set's mean shape (bias of the FC)
    pretrained: str = ""           # HRNet: ImageNet weights for the trunk (official HRNet or timm layout; "" = none)
    ocn_variant: Literal["public", "legacy"] = "public"  # public ATF code's OCN (ReLU6, BN on conv8); legacy = ours v1
    ocn_head: Literal["fc", "branch"] = "fc"  # paper: one FC per dataset; branch = public code's private tail + FC
    hrnet_upsample: Literal["bilinear", "nearest"] = "bilinear"  # fusion upsampling: face code bilinear, ImageNet nearest


@dataclass(frozen=True)
class LossConfig:
    kind: Literal["auto", "l1", "l2", "wing", "heatmap_mse"] = "auto"  # auto: OCN l1, HRNet heatmap_mse
    mixed: bool = True             # True = L_MB (eq. 3-5); False = L_AT (no similar-point term)
    # eq. 3 weights. The paper gives them only for WFLW+AFLW (0.2/0.8/0.1); elsewhere the public code
    # rules: OCN one mixed weight 0.5 (alpha = gamma = 0.5, beta = 1); HRNet 0.2/0.5/0.1 rescaled
    # ("running"). Defaults: the OCN code's (docs/protocol.md).
    alpha: float = 0.5             # weight of L_ps on target batches (eq. 3)
    beta: float = 1.0              # weight of an auxiliary head's own loss on its batches
    gamma: float = 0.5             # weight of L_ps on auxiliary batches
    weighting: Literal["fixed", "running"] = "fixed"  # running: public HRNet ATF code, weights x
                                   # mean(L_main)/mean(L_ps or L_aux) over the epoch so far (losses.LossWeights)
    pairs: Literal["official", "rich"] = "official"  # similar-point table: the official 10, or pair-specific
    sigma: dict[str, float] = field(default_factory=dict)  # heatmap sigma per dataset (default 1.5)


@dataclass(frozen=True)
class AtdpConfig:
    ratios: tuple[float, ...] = ()   # r_0 (target) : r_1 : ... (one per aux); () = 1 for each
    decays: tuple[float, ...] = ()   # per-aux multiplier applied every epoch (eq. 2); () = 0.9 each
    decreasing: bool = True          # False = "wod": decays forced to 1


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3               # heads' lr (and the trunk's unless trunk_lr is set); OCN paper 1e-3
    trunk_lr: float = 0.0          # 0 = lr; public HRNet ATF code: trunk 1.5e-4, heads 2e-4
    weight_decay: float = 1e-6     # public OCN code 1e-6; HRNet face code 0
    schedule: Literal["plateau", "multistep", "none"] = "plateau"
    patience: int = 10             # plateau: epochs without val improvement before lr x factor
    factor: float = 0.1
    milestones: tuple[int, ...] = (30, 50)  # multistep
    epochs: int = 60
    batch_size: int = 16
    epoch_passes: int = 1          # passes over the target per epoch (public OCN code: dataset_exp 15);
                                   # ATDP decays and plateau patience count these longer epochs


@dataclass(frozen=True)
class AugmentConfig:
    """Defaults: the paper's OCN list (random crop 0.2, flip 0.5, rotation +-30); our extras are off."""
    enabled: bool = True
    flip: float = 0.5              # probability of a horizontal flip (with the scheme permutation)
    rotation: float = 30.0         # max degrees, uniform in +-rotation
    rotation_prob: float = 1.0     # paper: every sample (no probability given); HRNet face code 0.6
    scale: float = 0.0             # random scale in 1 +- scale (HRNet face code 0.25; not in the OCN list)
    translate: float = 0.0         # random shift, fraction of the crop side
    random_crop: float = 0.2       # random crop: jitter of crop side/position, fraction of the side
    color: float = 0.0             # ours, off in the paper protocol: brightness/contrast/saturation jitter
    grayscale: float = 0.0         # ours, off in the paper protocol: probability of a grayscale sample
    auxiliary: bool = True         # augment auxiliary datasets too (public HRNet ATF code: false)


@dataclass(frozen=True)
class EvalConfig:
    selection: Literal["val", "test"] = "val"  # "test" = the paper's protocol (best test epoch); outputs say so
    protocol: Literal["benchmark", "ocn", "both"] = "benchmark"  # NME protocol(s) of the test metrics:
                                   # benchmark = original pixels, benchmark normalisers (keys.test_metric);
                                   # ocn = the public OCN code's crop units (keys.PROTOCOL_OCN names)
    flip_test: bool = False        # average predictions of the image and its mirror
    decode: Literal["argmax_shift", "subpixel"] = "argmax_shift"  # heatmap decoding


@dataclass(frozen=True)
class FinetuneConfig:
    """Joint/novel head fine-tuning on the frozen trunk (BatchNorm in eval): the public fine_tune.py."""
    epochs: int = 100              # public code 100 (the paper gives no schedule)
    lr: float = 2e-4               # Adam (optim.name), public code 2e-4
    milestones: tuple[int, ...] = (30, 50, 70)  # lr x optim.factor at these epochs; () = constant lr
    compare_scratch: bool = True   # novel: also train the novel dataset's model from scratch, for timing


@dataclass(frozen=True)
class RunConfig:
    scenario: Literal["baseline", "atf", "joint", "novel"] = "baseline"
    target: str = "wflw"           # dataset whose detector we want
    aux: tuple[str, ...] = ()      # auxiliary datasets (atf/joint/novel)
    novel: str = ""                # novel scenario: dataset of the new head
    seed: int = 0
    device: str = "auto"           # auto = cuda when present, else cpu
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    atdp: AtdpConfig = field(default_factory=AtdpConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        if self.scenario not in keys.SCENARIOS:
            raise ConfigError(f"scenario: unknown {self.scenario!r}; expected one of {keys.SCENARIOS}")
        if self.scenario == keys.SCENARIO_BASELINE and self.aux:
            raise ConfigError("aux: a baseline run takes no auxiliary datasets")
        if self.scenario != keys.SCENARIO_BASELINE and not self.aux:
            raise ConfigError(f"aux: scenario {self.scenario!r} needs at least one auxiliary dataset")
        if self.scenario == keys.SCENARIO_NOVEL and not self.novel:
            raise ConfigError("novel: the novel scenario needs the novel dataset's name")
        if self.target in self.aux or (self.novel and self.novel in (self.target, *self.aux)):
            raise ConfigError("aux/novel: a dataset may appear only once among target, aux and novel")
        n = len(self.aux)
        if self.atdp.ratios and len(self.atdp.ratios) != n + 1:
            raise ConfigError(f"atdp.ratios: expected {n + 1} values (target first), got {len(self.atdp.ratios)}")
        if self.atdp.decays and len(self.atdp.decays) != n:
            raise ConfigError(f"atdp.decays: expected {n} values (one per aux), got {len(self.atdp.decays)}")
        if not 0.0 <= self.data.val_fraction < 1.0:
            raise ConfigError("data.val_fraction: must be in [0, 1)")
        if self.data.val_fraction == 0 and self.eval.selection == "val":
            raise ConfigError("data.val_fraction: 0 leaves no validation split; set eval.selection: test "
                              "(the paper's practice) or a fraction > 0")
        if self.optim.epochs < 1 or self.optim.batch_size < 1 or self.optim.epoch_passes < 1:
            raise ConfigError("optim.epochs, optim.batch_size and optim.epoch_passes must be >= 1")
        check_ranges(self)

    # -- derived values, so no caller recomputes them differently --------------------------
    @property
    def datasets(self) -> tuple[str, ...]:
        """Heads of the trained model: target first, then aux (novel is added later)."""
        return (self.target, *self.aux)

    @property
    def selected_heads(self) -> tuple[str, ...]:
        """Heads chosen at their best epoch, each on its own validation split (or test set under
        selection=test), and reported: the target; joint/novel also every fine-tuned head."""
        if self.scenario == keys.SCENARIO_JOINT:
            return self.datasets
        if self.scenario == keys.SCENARIO_NOVEL:
            return (*self.datasets, self.novel)
        return (self.target,)

    @property
    def protocols(self) -> tuple[str, ...]:
        """NME protocols the test metrics are computed in (keys.PROTOCOLS order)."""
        p = self.eval.protocol
        return (keys.PROTOCOL_BENCHMARK, keys.PROTOCOL_OCN) if p == "both" else (p,)

    @property
    def ratios(self) -> tuple[float, ...]:
        return self.atdp.ratios or tuple(1.0 for _ in self.datasets)

    @property
    def decays(self) -> tuple[float, ...]:
        if not self.atdp.decreasing:
            return tuple(1.0 for _ in self.aux)
        return self.atdp.decays or tuple(0.9 for _ in self.aux)

    @property
    def input_size(self) -> int:
        return self.model.input_size or (112 if self.model.backbone == "ocn" else 256)

    @property
    def heatmap_size(self) -> int:
        return self.model.heatmap_size or self.input_size // 4

    @property
    def loss_kind(self) -> str:
        if self.loss.kind != "auto":
            return self.loss.kind
        return "l1" if self.model.backbone == "ocn" else "heatmap_mse"

    def sigma(self, dataset: str) -> float:
        return self.loss.sigma.get(dataset, 1.5)


def crop_cache_on(mode: bool | str, provenance: str) -> bool:
    """data.crop_cache resolved: "auto" is on for real data, off for SynthFace (provenance
    "synthetic(...)", atf.datasets.data_provenance)."""
    if mode == "auto":
        return not provenance.startswith("synthetic")
    return bool(mode)


def protocol_summary(cfg: RunConfig) -> str:
    """One line naming the protocol a run follows (`atf-sweep --dry-run` prints it per cell)."""
    m, o, a, e, lc, d = cfg.model, cfg.optim, cfg.augment, cfg.eval, cfg.loss, cfg.data
    g = "{:g}".format
    sched = {"plateau": f"plateau x{g(o.factor)}/{o.patience}", "none": "constant",
             "multistep": f"steps {','.join(map(str, o.milestones))} x{g(o.factor)}"}[o.schedule]
    lr = f"lr {g(o.lr)}" + (f" trunk {g(o.trunk_lr)}" if o.trunk_lr else "")
    epochs = f"{o.epochs} ep" + (f" x{o.epoch_passes} passes" if o.epoch_passes > 1 else "")
    selection = (f"sel val({g(d.val_fraction)} of selected heads)" if e.selection == "val"
                 else "sel TEST (paper)")
    extras = [f"{k}{g(v)}" for k, v in (("crop", a.random_crop), ("flip", a.flip), ("scale", a.scale),
                                         ("shift", a.translate), ("color", a.color), ("gray", a.grayscale)) if v]
    if a.rotation:
        extras.append(f"rot{g(a.rotation)}@{g(a.rotation_prob)}")
    aug = ("aug " + ",".join(extras) + ("" if a.auxiliary else " (aux plain)")) if a.enabled else "aug off"
    parts = [f"{m.backbone}", f"{cfg.input_size}px", f"crop {d.crop} x{g(d.crop_margin)}",
             f"{o.name} {lr} wd {g(o.weight_decay)}", sched, epochs, f"batch {o.batch_size}", aug,
             f"loss {cfg.loss_kind}"]
    if cfg.loss_kind == "heatmap_mse":
        sig = ",".join(f"{k}={g(v)}" for k, v in sorted(lc.sigma.items()))
        parts.append("sigma 1.5" + (f" ({sig})" if sig else ""))
    if cfg.aux:
        mix = (f"L_MB {lc.weighting} a/b/g {g(lc.alpha)}/{g(lc.beta)}/{g(lc.gamma)}" if lc.mixed else "L_AT")
        ratios = ":".join(g(r) for r in cfg.ratios)
        parts += [mix, f"atdp {ratios} decay {','.join(g(x) for x in cfg.decays)}"]
    if cfg.scenario in (keys.SCENARIO_JOINT, keys.SCENARIO_NOVEL):
        ft = cfg.finetune
        parts.append(f"finetune lr {g(ft.lr)} {ft.epochs} ep steps {','.join(map(str, ft.milestones)) or '-'}")
    parts += [selection, f"nme {e.protocol}"]
    if m.backbone == "ocn":
        parts.append(f"ocn {m.ocn_variant} head {m.ocn_head}")
    else:
        parts.append(f"pretrained {m.pretrained or 'NONE (random init)'}")
    return " | ".join(parts)


# -- value ranges (every path that builds a RunConfig passes here) -----------------------------

# key -> (low, high, low inclusive, high inclusive); a tuple-valued key is checked item by item.
# Bounds are what a sane run can use, not the paper's values: a negative or 1e30 learning rate
# reaches torch as a cryptic error or NaN metrics after hours; here it is refused naming the key.
# The one table: `atf-train`, `atf-sweep` and a search's space bounds all pass through it.
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "optim.lr": (0.0, 1.0, False, True),
    "optim.trunk_lr": (0.0, 1.0, True, True),
    "optim.weight_decay": (0.0, 1.0, True, False),
    "optim.factor": (0.0, 1.0, False, True),
    "optim.patience": (0, float("inf"), True, False),
    "optim.milestones": (1, float("inf"), True, False),
    "finetune.lr": (0.0, 1.0, False, True),
    "finetune.epochs": (1, float("inf"), True, False),  # 0 would report an untrained head
    "finetune.milestones": (1, float("inf"), True, False),
    "loss.alpha": (0.0, 1e3, True, True),
    "loss.beta": (0.0, 1e3, True, True),
    "loss.gamma": (0.0, 1e3, True, True),
    "atdp.ratios": (0.0, 1e6, False, True),
    "atdp.decays": (0.0, 1.0, False, True),
    "augment.flip": (0.0, 1.0, True, True),
    "augment.rotation": (0.0, 180.0, True, True),
    "augment.rotation_prob": (0.0, 1.0, True, True),
    "augment.scale": (0.0, 1.0, True, False),
    "augment.translate": (0.0, 1.0, True, True),
    "augment.random_crop": (0.0, 1.0, True, False),
    "augment.color": (0.0, 1.0, True, True),
    "augment.grayscale": (0.0, 1.0, True, True),
    "data.crop_margin": (0.0, 10.0, False, True),
    "data.max_train": (0, float("inf"), True, False),
    "data.max_test": (0, float("inf"), True, False),
    "data.num_workers": (0, 256, True, True),
    "model.width_mult": (0.0, 16.0, False, True),
    "model.input_size": (0, 4096, True, True),
    "model.heatmap_size": (0, 4096, True, True),
}
MIN_INPUT_SIZE = 16                # a set model.input_size below this leaves no feature map


def check_ranges(cfg: RunConfig) -> None:
    """Refuse a value outside RANGES (or NaN/inf) with a ConfigError naming the key."""
    for key, (lo, hi, lo_in, hi_in) in RANGES.items():
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part, None)
        if node is None:
            continue  # a key another version of the config does not have
        for i, v in enumerate(node if isinstance(node, tuple) else (node,)):
            name = f"{key}[{i}]" if isinstance(node, tuple) else key
            ok = isinstance(v, (int, float)) and v == v and (v > lo or (lo_in and v == lo)) \
                and (v < hi or (hi_in and v == hi)) and abs(v) != float("inf")
            if not ok:
                left = f"{lo:g} {'<=' if lo_in else '<'} " if lo > -float("inf") else ""
                right = f" {'<=' if hi_in else '<'} {hi:g}" if hi < float("inf") else ""
                raise ConfigError(f"{name}: {v!r} is out of range; expected {left}{name}{right}")
    if 0 < cfg.model.input_size < MIN_INPUT_SIZE:
        raise ConfigError(f"model.input_size: {cfg.model.input_size} is too small; expected 0 (the "
                          f"backbone's default) or >= {MIN_INPUT_SIZE}")


def validate(cfg: RunConfig, check_names: typing.Callable[[RunConfig], None] | None = None) -> RunConfig:
    """Everything a built config can still get wrong: ranges and dataset names (types and unknown
    keys were refused while building it); returns `cfg`. Dataset names are the registry's
    business: pass `atf.datasets.check_datasets` as `check_names` (this module cannot import it)."""
    check_ranges(cfg)
    if check_names is not None:
        check_names(cfg)
    return cfg


# -- dict <-> dataclass with key-path errors ----------------------------------------------------

def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, path)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{path}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if origin is tuple:
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        _k, v_tp = typing.get_args(tp)
        return {str(k): _convert(v_tp, v, f"{path}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(arg, value, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} does not match {tp}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass `cls` from a plain mapping; unknown keys raise ConfigError naming them."""
    if not path:
        data = _drop_retired(dict(data))
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise _unknown_key(f"{path}.{unknown[0]}" if path else unknown[0], names)
    kwargs = {k: _convert(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{path + ': ' if path else ''}{e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML-safe mapping of a config (tuples become lists)."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(cfg)



# -- dotted overrides: the one engine for atf-train --set, sweep files, profiles and searches ---

_INDEX = re.compile(r"^(?P<path>[A-Za-z_][\w.]*)\[(?P<index>\d+)\]$")
FREE_MAPPINGS = ("data.paths", "loss.sigma")  # fields keyed by dataset name, not config sections


def field_paths(cls: type | None = None, prefix: str = "") -> list[str]:
    """Every dotted field path of RunConfig ("optim.lr", "data.paths", ...): what a key may name."""
    out = []
    for name, tp in typing.get_type_hints(cls or RunConfig).items():
        out.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            out += field_paths(tp, f"{prefix}{name}.")
    return out


def _unknown_key(dotted: str, known: typing.Iterable[str]) -> ConfigError:
    """'unknown config key' with the closest field path as a suggestion (a typo names its fix)."""
    close = difflib.get_close_matches(dotted, field_paths(), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{dotted}'{hint}; known keys: {sorted(known)}")


def field_type(dotted: str) -> Any:
    """Type of a dotted (or indexed, "atdp.ratios[0]") RunConfig field; ConfigError naming the key."""
    m = _INDEX.match(dotted)
    tp: Any = RunConfig
    parts = (m["path"] if m else dotted).split(".")
    for i, part in enumerate(parts):
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if part not in hints:
                raise _unknown_key(".".join(parts[:i + 1]), hints)
            tp = hints[part]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            raise ConfigError(f"unknown config key '{dotted}': '{'.'.join(parts[:i])}' has no fields")
    if m and typing.get_origin(tp) is not tuple:
        raise ConfigError(f"'{dotted}': {m['path']} is not a list")
    return tp


def check_keys(updates: dict[str, Any], prefix: str = "") -> None:
    """Refuse unknown keys in an override mapping (nested or dotted) before anything is built."""
    for k, v in updates.items():
        dotted = f"{prefix}{k}"
        if dotted in RETIRED:   # read, then dropped with a warning (apply)
            continue
        tp = field_type(dotted)
        if isinstance(v, dict) and dataclasses.is_dataclass(tp):
            check_keys(v, f"{dotted}.")


def merge(base: dict[str, Any], upd: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `upd`, mappings merged recursively (neither argument changes)."""
    out = dict(base)
    for k, v in upd.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def nest(updates: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim.lr": 1} and {"optim": {"lr": 1}} alike -> nested mapping (free mappings kept as given)."""
    out: dict[str, Any] = {}
    for k, v in updates.items():
        node = out
        *head, last = str(k).split(".")
        for h in head:
            node = node.setdefault(h, {})
            if not isinstance(node, dict):
                raise ConfigError(f"'{k}' sets a field inside a non-mapping value")
        dotted = f"{prefix}{k}"
        if isinstance(v, dict) and dotted not in FREE_MAPPINGS:
            v = nest(v, f"{dotted}.")
        node[last] = merge(node[last], v) if isinstance(v, dict) and isinstance(node.get(last), dict) else v
    return out


def _set_index(d: dict[str, Any], cfg: RunConfig, dotted: str, value: Any) -> None:
    """Set element i of a tuple field (`atdp.ratios[0]`) in `d`, starting from its effective value."""
    m = _INDEX.match(dotted)
    assert m is not None
    path, index = m["path"], int(m["index"])
    effective = {"atdp.ratios": cfg.ratios, "atdp.decays": cfg.atdp.decays or (0.9,) * len(cfg.aux)}
    node: Any = d
    *head, last = path.split(".")
    for h in head:
        node = node[h]
    items = list(node[last] or effective.get(path, ()))
    if index >= len(items):
        raise ConfigError(f"'{dotted}': index {index} out of range (the list has {len(items)} values)")
    items[index] = value
    node[last] = items


def apply(cfg: RunConfig | dict[str, Any], updates: dict[str, Any]) -> RunConfig:
    """A new RunConfig: `cfg` (a config or a plain mapping) with `updates` applied. Keys may be
    dotted ("optim.lr"), nested mappings or indexed ("atdp.ratios[0]"); values are converted by
    the field's type and checked (types, ranges) as the config is built."""
    base = to_dict(cfg) if dataclasses.is_dataclass(cfg) else _drop_retired(dict(cfg))
    updates = _drop_retired(dict(updates))
    plain = {k: v for k, v in updates.items() if not _INDEX.match(str(k))}
    indexed = {k: v for k, v in updates.items() if _INDEX.match(str(k))}
    check_keys(plain)
    for k in indexed:
        field_type(k)
    d = merge(base, nest(plain))
    if indexed:
        staged = from_dict(RunConfig, d)
        for k, v in indexed.items():
            _set_index(d, staged, k, v)
    return from_dict(RunConfig, d)


def override(cfg: RunConfig, updates: dict[str, Any]) -> RunConfig:
    """New config with `updates` applied (see `apply`)."""
    return apply(cfg, updates)


def parse_assignments(items: typing.Iterable[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are read as YAML (numbers, lists, booleans; empty = "")."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {key.strip()}: value {raw!r} is not valid YAML") from None
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping ({} when empty); ConfigError naming the file (and line).
    Run configs and sweep files alike are read here."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where} malformed YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None,
                check_names: typing.Callable[[RunConfig], None] | None = None) -> RunConfig:
    """Read a YAML run config, apply `overrides` and validate (see `validate`); errors name the file."""
    path = Path(path)
    data = read_yaml(path)
    try:
        return validate(apply(data, overrides or {}), check_names)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
