"""Sweep files: parse, validate and expand a YAML sweep into cells.

A sweep file is a base RunConfig plus experiments; each experiment crosses a
grid (and optional variants) with the seeds, and may carry an Optuna search.
Everything is checked before anything runs, and every error is one line naming
the file and the key path. This module is pure (no Ray, MLflow or Optuna), so
the report can import it to list which sweep file and cell fill a table cell.

    name: demo                       # default: the file stem
    include: base.yaml               # optional RunConfig YAML(s), relative to this file
    base: {model: {width_mult: 0.25}}  # RunConfig keys (nested or dotted)
    tables: [III]                    # default tables for every experiment
    seeds: [0]                       # or `repeats: 3` (seeds base.seed .. base.seed+2)
    resources: {cpu: 1, gpu: 0.25}   # per trial; fractional GPUs share one card
    max_failures: 2                  # retries of a crashed trial (from its checkpoint)
    max_concurrent: 0                # 0 = as many as resources allow
    experiments:
      - name: atf
        tables: [III, VII]
        set: {scenario: atf}         # overrides for every cell of this experiment
        grid: {aux: [[300w], [cofw]]}  # cartesian product over config keys
        variants: [{model.backbone: ocn}, {model.backbone: hrnet_w18, optim.lr: 1.0e-4}]
        # a variant may `include` RunConfig YAML(s) (a backbone's protocol block, sweeps/base/):
        # merged after `base` and BEFORE `set`, so an experiment's own keys win over the block
        # variants: [{include: base/protocol_ocn.yaml}, {include: base/protocol_hrnet_atf.yaml}]
        search:                      # optional: each cell becomes one tuned cell
          num_samples: 8
          sampler: tpe               # tpe | random
          metric: val/nme            # only keys.VAL_NME: tuning never sees a test metric
          seed: 0
          space: {optim.lr: {loguniform: [1.0e-4, 1.0e-2]}, atdp.ratios[0]: {choice: [2, 3]}}

Without `experiments`, top-level `set`/`grid`/`variants`/`search` form one.
String values may use `${VAR}` or `${VAR:-default}` (environment).

    synth: {scale: 0.02, seed: 0}    # optional: data.root is SynthFace, generated when absent
                                     # (implied for the default root data/synth)

Profiles (`load_sweep(..., profile="smoke")`, `atf-sweep FILE --profile smoke`) are data too:
`sweeps/profiles/<name>.yaml` holds `set` (config keys applied to every cell after the sweep
file and before --set), and optionally `resources`, `max_failures`, `max_concurrent`, `synth`
and `search: {num_samples: N}` (a cap). A profile changes the resolved configs, so its cells
hash apart from the real ones and are never reused as them; the sweep is named `<name>-<profile>`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from atf import keys
from atf.config import ConfigError, DataConfig, RunConfig, from_dict, to_dict
from orchestration.cells import TABLES, cell_tags, data_provenance, table_list

__all__ = [
    "SweepError", "Param", "Search", "Resources", "Cell", "Sweep", "load_sweep", "cell_tags",
    "apply_values", "check_ranges", "check_datasets", "resolve_paths", "parse_set",
    "Profile", "SynthSpec", "load_profile", "PROFILE_DIR", "DEFAULT_SYNTH", "synth_for", "synth_provenance",
]

SAMPLERS = ("tpe", "random")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
_TOP_KEYS = {"name", "description", "include", "base", "tables", "seeds", "repeats", "resources",
             "max_failures", "max_concurrent", "experiments", "set", "grid", "variants", "search", "synth"}
_PROFILE_KEYS = {"name", "description", "set", "resources", "max_failures", "max_concurrent", "search",
                 "synth"}
PROFILE_DIR = Path(__file__).resolve().parents[1] / "sweeps" / "profiles"
_EXP_KEYS = {"name", "tables", "set", "grid", "variants", "seeds", "search"}
_SEARCH_KEYS = {"space", "sampler", "num_samples", "metric", "mode", "seed"}
_INDEX = re.compile(r"^(?P<path>[A-Za-z_][\w.]*)\[(?P<index>\d+)\]$")
_ENV = re.compile(r"\$\{(?P<name>[A-Za-z_]\w*)(?::-(?P<default>[^}]*))?\}")


class SweepError(ConfigError):
    """A bad sweep file; the message names the file and the key path."""


@dataclass(frozen=True)
class Param:
    """One searched value: `path` may index a tuple field ("atdp.ratios[0]")."""
    path: str
    dist: str                       # one of DISTRIBUTIONS
    args: tuple[Any, ...]           # (low, high) or the choices

    def bounds(self) -> tuple[Any, ...]:
        """Values that span the range, for validating a config at its edges."""
        return self.args if self.dist == "choice" else (self.args[0], self.args[1])


@dataclass(frozen=True)
class Search:
    space: tuple[Param, ...]
    num_samples: int = 8
    sampler: str = "tpe"
    metric: str = keys.VAL_NME      # minimised; the only metric tuning may see
    mode: str = "min"
    seed: int = 0

    def spec(self) -> dict[str, Any]:
        """Canonical mapping (part of a tuned cell's id)."""
        return {"space": {p.path: [p.dist, list(p.args)] for p in self.space},
                "num_samples": self.num_samples, "sampler": self.sampler, "metric": self.metric,
                "mode": self.mode, "seed": self.seed}


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0                # CPUs per trial (also the trial's torch threads)
    gpu: float = 0.0                # GPUs per trial; < 1 lets trials share one card

    def as_tune(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}


@dataclass(frozen=True)
class SynthSpec:
    """How the SynthFace data at a sweep's data root is made (`atf-data synth` arguments)."""
    scale: float = 0.02
    seed: int = 0


DEFAULT_SYNTH = SynthSpec()         # the embedded default: data/synth at scale 0.02, seed 0 (demo.yaml)


@dataclass(frozen=True)
class Profile:
    """Overrides applied after a sweep file (e.g. `smoke`: every cell, shrunk)."""
    name: str
    path: Path
    set: dict[str, Any]
    resources: Resources | None = None
    max_failures: int | None = None
    max_concurrent: int | None = None
    max_samples: int | None = None  # cap on every search's num_samples
    synth: SynthSpec | None = None


@dataclass(frozen=True)
class Cell:
    """One run a table reports (or, with `search`, the run chosen by a search)."""
    cell_id: str
    config: RunConfig               # resolved config (the search's starting point when tuned)
    seed: int
    tables: tuple[str, ...]
    tags: dict[str, str]            # keys.CELL_TAGS -> value (plus keys.TAG_PROFILE under a profile)
    experiment: str                 # experiment name in the sweep file
    search: Search | None = None
    label: str = ""                 # readable run name: experiment, grid point, variant, seed ("atf-3W hrnet_w18 s0")

    def summary(self) -> dict[str, str]:
        """Key config values for a one-line listing."""
        t = self.tags
        return {"cell": self.cell_id, "tables": t[keys.TAG_TABLES], "experiment": self.experiment,
                "scenario": t[keys.TAG_SCENARIO], "backbone": t[keys.TAG_BACKBONE],
                "target": t[keys.TAG_TARGET], "aux": t[keys.TAG_AUX] or "-",
                "loss": t[keys.TAG_LOSS] or "-", "prop": t[keys.TAG_PROPORTIONS] or "-",
                "seed": t[keys.TAG_SEED],
                "search": f"{self.search.sampler}x{self.search.num_samples}" if self.search else "-"}


@dataclass(frozen=True)
class Sweep:
    name: str
    path: Path
    description: str
    resources: Resources
    max_failures: int
    max_concurrent: int
    cells_: tuple[Cell, ...] = field(repr=False)
    synth: SynthSpec | None = None  # data.root is SynthFace made this way (generated when absent)
    profile: Profile | None = None

    def cells(self) -> list[Cell]:
        return list(self.cells_)

    def cell(self, cid: str) -> Cell:
        for c in self.cells_:
            if c.cell_id == cid:
                return c
        raise KeyError(f"{self.path}: no cell {cid!r}")


# -- small helpers ---------------------------------------------------------------------------

def _fail(path: Path, where: str, msg: str) -> SweepError:
    return SweepError(f"{path}: {where}: {msg}" if where else f"{path}: {msg}")


def _expand_env(value: Any, path: Path, where: str) -> Any:
    """Replace ${VAR} / ${VAR:-default} in every string of a YAML tree."""
    if isinstance(value, dict):
        return {k: _expand_env(v, path, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, path, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        got = os.environ.get(m["name"])
        if got is None and m["default"] is None:
            raise _fail(path, where, f"environment variable {m['name']} is not set and has no default")
        return got if got is not None else m["default"]
    return _ENV.sub(sub, value)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise SweepError(f"{path}: cannot read ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SweepError(f"{path}:{where} malformed YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SweepError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return _expand_env(data, path, "")


def _nest(updates: dict[str, Any]) -> dict[str, Any]:
    """{"optim.lr": 1} and {"optim": {"lr": 1}} alike -> nested mapping."""
    out: dict[str, Any] = {}
    for k, v in updates.items():
        node = out
        *head, last = str(k).split(".")
        for h in head:
            node = node.setdefault(h, {})
            if not isinstance(node, dict):
                raise ConfigError(f"'{k}' sets a field inside a non-mapping value")
        if isinstance(v, dict) and isinstance(node.get(last), dict):
            node[last] = _merge(node[last], _nest(v))
        else:
            node[last] = _nest(v) if isinstance(v, dict) and not _is_free_mapping(k) else v
    return out


def _is_free_mapping(dotted: str) -> bool:
    """Fields whose values are user-keyed mappings (dataset names), not config sections."""
    return dotted in ("data.paths", "loss.sigma")


def _merge(base: dict[str, Any], upd: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in upd.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _field_type(dotted: str) -> Any:
    """Type of a dotted RunConfig field; ConfigError naming the key when there is none."""
    tp: Any = RunConfig
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if part not in hints:
                raise ConfigError(f"unknown config key '{'.'.join(parts[:i + 1])}'; "
                                  f"known keys: {sorted(hints)}")
            tp = hints[part]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            raise ConfigError(f"unknown config key '{dotted}': '{'.'.join(parts[:i])}' has no fields")
    return tp


def _check_keys(updates: dict[str, Any], prefix: str = "") -> None:
    """Refuse unknown keys in an override mapping (nested or dotted) before building."""
    for k, v in updates.items():
        dotted = f"{prefix}{k}"
        tp = _field_type(dotted)
        if isinstance(v, dict) and dataclasses.is_dataclass(tp):
            _check_keys(v, f"{dotted}.")


def _with_index(cfg_dict: dict[str, Any], cfg: RunConfig, dotted: str, value: Any) -> dict[str, Any]:
    """Set element i of a tuple field (`atdp.ratios[0]`), starting from its effective value."""
    m = _INDEX.match(dotted)
    assert m is not None
    path, index = m["path"], int(m["index"])
    if typing.get_origin(_field_type(path)) is not tuple:
        raise ConfigError(f"'{dotted}': {path} is not a list")
    effective = {"atdp.ratios": cfg.ratios, "atdp.decays": cfg.atdp.decays or (0.9,) * len(cfg.aux)}
    node: Any = cfg_dict
    *head, last = path.split(".")
    for h in head:
        node = node[h]
    items = list(node[last] or effective.get(path, ()))
    if index >= len(items):
        raise ConfigError(f"'{dotted}': index {index} out of range (the list has {len(items)} values)")
    items[index] = value
    node[last] = items
    return cfg_dict


def apply_values(cfg: RunConfig, values: dict[str, Any]) -> RunConfig:
    """`cfg` with dotted (and indexed, e.g. `atdp.ratios[0]`) values applied, re-validated."""
    plain = {k: v for k, v in values.items() if not _INDEX.match(k)}
    _check_keys(plain)
    d = _merge(to_dict(cfg), _nest(plain))
    staged = from_dict(RunConfig, d)
    for k, v in values.items():
        if _INDEX.match(k):
            d = _with_index(d, staged, k, v)
    return from_dict(RunConfig, d)


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are read as YAML (numbers, lists, booleans)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--set {item!r}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise SweepError(f"--set {key}: value {raw!r} is not valid YAML") from None
    return out


# -- value checks the dataclasses cannot express --------------------------------------------

_RANGES: dict[str, tuple[str, float, float]] = {
    # key: (kind, low, high); kind "oo" open-open, "co" closed-open, "cc" closed-closed
    "optim.lr": ("oo", 0.0, math.inf),
    "optim.weight_decay": ("co", 0.0, math.inf),
    "optim.trunk_lr": ("co", 0.0, math.inf),
    "optim.factor": ("oc", 0.0, 1.0),
    "optim.patience": ("co", 0.0, math.inf),
    "finetune.lr": ("oo", 0.0, math.inf),
    "finetune.epochs": ("co", 1.0, math.inf),
    "loss.alpha": ("co", 0.0, math.inf),
    "loss.beta": ("co", 0.0, math.inf),
    "loss.gamma": ("co", 0.0, math.inf),
    "model.width_mult": ("oo", 0.0, math.inf),
    "model.input_size": ("co", 0.0, math.inf),
    "model.heatmap_size": ("co", 0.0, math.inf),
    "data.max_train": ("co", 0.0, math.inf),
    "data.max_test": ("co", 0.0, math.inf),
    "data.num_workers": ("co", 0.0, math.inf),
    "data.crop_margin": ("oo", 0.0, math.inf),
    "augment.flip": ("cc", 0.0, 1.0),
    "augment.grayscale": ("cc", 0.0, 1.0),
    "augment.rotation_prob": ("cc", 0.0, 1.0),
    "augment.scale": ("co", 0.0, 1.0),
    "augment.random_crop": ("co", 0.0, 1.0),
    "atdp.ratios[]": ("oo", 0.0, math.inf),
    "atdp.decays[]": ("oc", 0.0, 1.0),
}


def _in_range(kind: str, lo: float, hi: float, v: float) -> bool:
    left = v > lo if kind[0] == "o" else v >= lo
    right = v < hi if kind[1] == "o" else v <= hi
    return left and right


def check_ranges(cfg: RunConfig) -> None:
    """Refuse values outside their meaningful range; ConfigError names the key path."""
    d = to_dict(cfg)
    for key, (kind, lo, hi) in _RANGES.items():
        node: Any = d
        for part in key.rstrip("[]").split("."):
            node = node[part]
        values = list(enumerate(node)) if key.endswith("[]") else [(None, node)]
        for i, v in values:
            if not _in_range(kind, lo, hi, float(v)):
                name = f"{key[:-2]}[{i}]" if i is not None else key
                span = f"{'(' if kind[0] == 'o' else '['}{lo:g}, {hi:g}{')' if kind[1] == 'o' else ']'}"
                raise ConfigError(f"{name}: {v!r} is out of range {span}")
    if cfg.model.input_size and cfg.model.input_size < 16:
        raise ConfigError(f"model.input_size: {cfg.model.input_size} is too small (>= 16)")


def check_datasets(cfg: RunConfig) -> None:
    """Every dataset named by the config must exist in the dataset registry."""
    from atf.datasets import apply_registry, get_dataset
    if cfg.data.registry:
        apply_registry(cfg.data)
    named = [("target", cfg.target), *((f"aux[{i}]", a) for i, a in enumerate(cfg.aux))]
    if cfg.novel:
        named.append(("novel", cfg.novel))
    for where, name in named:
        try:
            get_dataset(name)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"{where}: {str(e).strip(chr(39))}") from None


def resolve_paths(cfg: RunConfig, cwd: Path) -> RunConfig:
    """Absolute data paths (trials run in other working directories, maybe other nodes)."""
    def absolute(p: str) -> str:
        return p if not p or os.path.isabs(p) else str((cwd / p).resolve())
    data = cfg.data
    paths = {name: dataclasses.replace(dp, annotations=absolute(dp.annotations), images=absolute(dp.images))
             for name, dp in data.paths.items()}
    data = dataclasses.replace(data, root=absolute(data.root), paths=paths,
                               registry=tuple(absolute(r) for r in data.registry))
    return dataclasses.replace(cfg, data=data)


# -- parsing ---------------------------------------------------------------------------------

def _as_list(value: Any, path: Path, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(path, where, f"expected a list, got {type(value).__name__}")
    return value


def _as_map(value: Any, path: Path, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, where, f"expected a mapping, got {type(value).__name__}")
    return value


def _int(value: Any, path: Path, where: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(path, where, f"expected an integer >= {low}, got {value!r}")
    return value


def _tables(value: Any, path: Path, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else _as_list(value, path, where)
    for i, t in enumerate(items):
        if str(t) not in TABLES:
            raise _fail(path, f"{where}[{i}]", f"unknown table {t!r}; expected one of {TABLES}")
    return tuple(str(t) for t in items)


def _includes(includes: Any, path: Path, where: str, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """RunConfig YAML files named by `include` (relative to `path`), merged in order. An included
    file may `include` others itself (its own keys win over them)."""
    out: dict[str, Any] = {}
    items = [includes] if isinstance(includes, str) else _as_list(includes, path, where)
    for i, inc in enumerate(items):
        w = where if isinstance(includes, str) else f"{where}[{i}]"
        inc_path = (path.parent / str(inc)).resolve()
        if not inc_path.is_file():
            raise _fail(path, w, f"no such file {inc}")
        if inc_path in seen:
            raise _fail(path, w, f"include cycle through {inc}")
        data = dict(_read_yaml(inc_path))
        inner = _includes(data.pop("include"), inc_path, "include", (*seen, inc_path)) if "include" in data else {}
        try:
            _check_keys(data)
        except ConfigError as e:
            raise SweepError(f"{inc_path}: {e}") from None
        out = _merge(out, _merge(inner, _nest(data)))
    return out


def _load_base(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    base = _includes(doc["include"], path, "include") if doc.get("include") else {}
    own = _as_map(doc.get("base"), path, "base")
    try:
        _check_keys(own)
    except ConfigError as e:
        raise _fail(path, "base", str(e)) from None
    return _merge(base, _nest(own))


def _parse_search(raw: Any, path: Path, where: str) -> Search:
    raw = _as_map(raw, path, where)
    unknown = sorted(set(raw) - _SEARCH_KEYS)
    if unknown:
        raise _fail(path, f"{where}.{unknown[0]}", f"unknown key; known: {sorted(_SEARCH_KEYS)}")
    metric = raw.get("metric", keys.VAL_NME)
    if metric != keys.VAL_NME:
        raise _fail(path, f"{where}.metric", f"{metric!r}: searches optimise {keys.VAL_NME!r} only "
                    "(a validation split carved from training; never a test metric)")
    if raw.get("mode", "min") != "min":
        raise _fail(path, f"{where}.mode", f"{keys.VAL_NME} is minimised; mode must be 'min'")
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise _fail(path, f"{where}.sampler", f"{sampler!r} is not one of {SAMPLERS}")
    space_raw = _as_map(raw.get("space"), path, f"{where}.space")
    if not space_raw:
        raise _fail(path, f"{where}.space", "a search needs at least one parameter")
    params = []
    for key, spec in space_raw.items():
        w = f"{where}.space.{key}"
        try:
            _field_type(_INDEX.match(key)["path"] if _INDEX.match(key) else key)
        except ConfigError as e:
            raise _fail(path, w, str(e)) from None
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise _fail(path, w, f"expected one of {{{', '.join(DISTRIBUTIONS)}: ...}}, got {spec!r}")
        dist, args = next(iter(spec.items()))
        args = _as_list(args, path, f"{w}.{dist}")
        if dist == "choice":
            if not args:
                raise _fail(path, f"{w}.{dist}", "choice needs at least one value")
        else:
            if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
                raise _fail(path, f"{w}.{dist}", f"expected [low, high] numbers, got {args!r}")
            low, high = args
            if not low < high:
                raise _fail(path, f"{w}.{dist}", f"bad range: low {low!r} must be < high {high!r}")
            if dist == "loguniform" and low <= 0:
                raise _fail(path, f"{w}.{dist}", f"bad range: loguniform needs low > 0, got {low!r}")
            if dist == "randint" and not all(isinstance(a, int) for a in args):
                raise _fail(path, f"{w}.{dist}", f"randint needs integer bounds, got {args!r}")
        params.append(Param(str(key), dist, tuple(args)))
    return Search(space=tuple(params),
                  num_samples=_int(raw.get("num_samples", 8), path, f"{where}.num_samples", 1),
                  sampler=sampler, seed=_int(raw.get("seed", 0), path, f"{where}.seed", 0))


def _parse_resources(raw: Any, path: Path) -> Resources:
    raw = _as_map(raw, path, "resources")
    unknown = sorted(set(raw) - {"cpu", "gpu"})
    if unknown:
        raise _fail(path, f"resources.{unknown[0]}", "unknown key; known: ['cpu', 'gpu']")
    out = {}
    for k, default in (("cpu", 1.0), ("gpu", 0.0)):
        v = raw.get(k, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (k == "cpu" and v == 0):
            raise _fail(path, f"resources.{k}", f"expected a number {'> 0' if k == 'cpu' else '>= 0'}, got {v!r}")
        if v > 1 and v != int(v):
            raise _fail(path, f"resources.{k}", f"above 1 a trial takes whole units, got {v!r}")
        out[k] = float(v)
    return Resources(**out)


def _grid_points(grid: dict[str, Any], path: Path, where: str) -> list[dict[str, Any]]:
    axes = []
    for key, values in grid.items():
        try:
            _field_type(str(key))
        except ConfigError as e:
            raise _fail(path, f"{where}.{key}", str(e)) from None
        values = _as_list(values, path, f"{where}.{key}")
        if not values:
            raise _fail(path, f"{where}.{key}", "a grid axis needs at least one value")
        axes.append([(str(key), v) for v in values])
    return [dict(point) for point in itertools.product(*axes)] if axes else [{}]


def _seeds(raw: dict[str, Any], path: Path, where: str, base_seed: int, default: list[int]) -> list[int]:
    if "seeds" in raw and "repeats" in raw:
        raise _fail(path, where or "seeds", "give either 'seeds' or 'repeats', not both")
    if "repeats" in raw:
        n = _int(raw["repeats"], path, f"{where}.repeats" if where else "repeats", 1)
        return [base_seed + i for i in range(n)]
    if "seeds" in raw:
        w = f"{where}.seeds" if where else "seeds"
        items = _as_list(raw["seeds"], path, w)
        return [_int(s, path, f"{w}[{i}]", 0) for i, s in enumerate(items)] or default
    return default


def _build_cell(path: Path, where: str, base: dict[str, Any], parts: list[dict[str, Any]], seed: int,
                overrides: dict[str, Any], tables: tuple[str, ...], exp_name: str,
                search: Search | None, profile: Profile | None = None, label: str = "",
                synth: SynthSpec | None = None) -> Cell:
    d = base
    for part in parts:
        d = _merge(d, _nest(part))
    d = _merge(d, _nest({"seed": seed}))
    try:
        cfg = from_dict(RunConfig, d)
    except ConfigError as e:
        raise _fail(path, where, str(e)) from None
    if profile is not None:
        try:
            cfg = apply_values(cfg, profile.set)
        except ConfigError as e:
            raise SweepError(f"{profile.path}: set: {e} (applied to {path} {where})") from None
        if search is not None and profile.max_samples is not None:
            search = dataclasses.replace(search, num_samples=min(search.num_samples, profile.max_samples))
    if overrides:
        try:
            cfg = apply_values(cfg, overrides)
        except ConfigError as e:
            raise SweepError(f"{path}: --set: {e}") from None
    try:
        check_ranges(cfg)
        check_datasets(cfg)
        if search:
            for p in search.space:
                for v in p.bounds():
                    check_ranges(apply_values(cfg, {p.path: v}))
    except ConfigError as e:
        raise _fail(path, where, str(e)) from None
    prov = _provenance(cfg, synth)
    spec = search.spec() if search else None
    tags = cell_tags(cfg, tables, spec, prov)
    if profile is not None:
        tags[keys.TAG_PROFILE] = profile.name
    return Cell(cell_id=tags[keys.TAG_CELL], config=cfg, seed=seed, tables=table_list(tables),
                tags=tags, experiment=exp_name, search=search, label=label)


def synth_for(cfg: RunConfig, synth: SynthSpec | None) -> SynthSpec | None:
    """How `cfg`'s data root is made when it is SynthFace: the sweep's `synth`, or the embedded
    default for the default root (data/synth); None for any other root (real data)."""
    if synth is not None:
        return synth
    default = DataConfig().root
    if Path(cfg.data.root) == Path(default) or Path(cfg.data.root) == Path(default).resolve():
        return DEFAULT_SYNTH
    return None


def synth_provenance(spec: SynthSpec) -> str:
    """The keys.TAG_DATA value of SynthFace made with `spec` (as atf.datasets writes it)."""
    return f"synthetic(scale={spec.scale:g},seed={spec.seed})"


def _provenance(cfg: RunConfig, synth: SynthSpec | None) -> str:
    """The data's provenance; a SynthFace root not generated yet counts as what it will be, so a
    cell's id is the same before and after `atf-sweep` makes the data."""
    from atf.keys import SYNTH_MARKER
    spec = synth_for(cfg, synth)
    if spec is not None and not (Path(cfg.data.root) / SYNTH_MARKER).is_file() and not _has_files(cfg.data.root):
        return synth_provenance(spec)
    return data_provenance(cfg)


def _has_files(root: str) -> bool:
    p = Path(root)
    return p.is_dir() and any(p.iterdir())


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(_short(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={_short(v)}" for k, v in value.items())
    return f"{value:g}" if isinstance(value, float) else str(value)


def _label(name: str, point: dict[str, Any], variant: dict[str, Any], j: int, n_variants: int, seed: int) -> str:
    """`atf-3W hrnet_w18 s0`: what a person reads in the MLflow runs table instead of a hash."""
    parts = [name] + [f"{str(k).rsplit('.', 1)[-1]}={_short(v)}" for k, v in point.items()]
    if n_variants > 1:
        backbone = _nest(variant).get("model", {}).get("backbone") if variant else None
        parts.append(str(backbone) if backbone else f"v{j}")
    return " ".join([*parts, f"s{seed}"])


def _parse_synth(raw: Any, path: Path, where: str) -> SynthSpec:
    raw = _as_map(raw, path, where)
    unknown = sorted(set(raw) - {"scale", "seed"})
    if unknown:
        raise _fail(path, f"{where}.{unknown[0]}", "unknown key; known: ['scale', 'seed']")
    scale = raw.get("scale", DEFAULT_SYNTH.scale)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise _fail(path, f"{where}.scale", f"expected a number in (0, 1], got {scale!r}")
    return SynthSpec(float(scale), _int(raw.get("seed", DEFAULT_SYNTH.seed), path, f"{where}.seed", 0))


def load_profile(name_or_path: str | Path, sweep_dir: Path | None = None) -> Profile:
    """A profile by name (`<sweep dir>/profiles/NAME.yaml`, else sweeps/profiles/NAME.yaml) or path."""
    given = Path(name_or_path)
    candidates = [given] if given.suffix in (".yaml", ".yml") else []
    candidates += [d / f"{name_or_path}.yaml" for d in ((sweep_dir / "profiles") if sweep_dir else None,
                                                         PROFILE_DIR) if d is not None]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise SweepError(f"--profile {name_or_path}: no such profile (known: {', '.join(known) or 'none'}; "
                         f"looked for {', '.join(str(c) for c in candidates)})")
    doc = _read_yaml(path)
    unknown = sorted(set(doc) - _PROFILE_KEYS)
    if unknown:
        raise _fail(path, unknown[0], f"unknown key; known: {sorted(_PROFILE_KEYS)}")
    setv = _as_map(doc.get("set"), path, "set")
    try:
        _check_keys(setv)
    except ConfigError as e:
        raise _fail(path, "set", str(e)) from None
    search = _as_map(doc.get("search"), path, "search")
    if set(search) - {"num_samples"}:
        raise _fail(path, "search", "a profile may only cap num_samples")
    return Profile(
        name=str(doc.get("name", path.stem)), path=path, set=setv,
        resources=_parse_resources(doc["resources"], path) if "resources" in doc else None,
        max_failures=_int(doc["max_failures"], path, "max_failures", 0) if "max_failures" in doc else None,
        max_concurrent=_int(doc["max_concurrent"], path, "max_concurrent", 0) if "max_concurrent" in doc else None,
        max_samples=_int(search["num_samples"], path, "search.num_samples", 1) if "num_samples" in search else None,
        synth=_parse_synth(doc["synth"], path, "synth") if "synth" in doc else None)


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None,
               profile: str | Path | Profile | None = None) -> Sweep:
    """Parse, validate and expand a sweep file; `profile` (see the module docstring) applies to
    every cell after the file, `overrides` (dotted keys) last."""
    path = Path(path)
    if profile is not None and not isinstance(profile, Profile):
        profile = load_profile(profile, path.parent)
    doc = _read_yaml(path)
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise _fail(path, unknown[0], f"unknown key; known: {sorted(_TOP_KEYS)}")
    if "experiments" in doc and any(k in doc for k in ("set", "grid", "variants", "search")):
        raise _fail(path, "experiments", "use either 'experiments' or top-level set/grid/variants/search")
    base = _load_base(doc, path)
    base_seed = base.get("seed", 0) if isinstance(base.get("seed", 0), int) else 0
    tables = _tables(doc.get("tables", []), path, "tables")
    seeds = _seeds(doc, path, "", base_seed, [base_seed])
    if "experiments" in doc:
        exps = _as_list(doc["experiments"], path, "experiments")
        if not exps:
            raise _fail(path, "experiments", "needs at least one experiment")
        prefixes = [f"experiments[{i}]" for i in range(len(exps))]
    else:
        exps = [{k: doc[k] for k in ("set", "grid", "variants", "search") if k in doc}]
        prefixes = [""]
    synth = _parse_synth(doc["synth"], path, "synth") if "synth" in doc else None
    if profile is not None and profile.synth is not None:
        synth = profile.synth
    cells: dict[str, Cell] = {}
    for i, (raw, prefix) in enumerate(zip(exps, prefixes)):
        raw = _as_map(raw, path, prefix or "experiments")
        unknown = sorted(set(raw) - _EXP_KEYS)
        if unknown:
            raise _fail(path, f"{prefix}.{unknown[0]}" if prefix else unknown[0],
                        f"unknown key; known: {sorted(_EXP_KEYS)}")
        dot = f"{prefix}." if prefix else ""
        name = str(raw.get("name", f"exp{i}"))
        exp_tables = _tables(raw["tables"], path, f"{dot}tables") if "tables" in raw else tables
        if not exp_tables:
            raise _fail(path, f"{dot}tables", "every cell must feed at least one paper table")
        setv = _as_map(raw.get("set"), path, f"{dot}set")
        try:
            _check_keys(setv)
        except ConfigError as e:
            raise _fail(path, f"{dot}set", str(e)) from None
        points = _grid_points(_as_map(raw.get("grid"), path, f"{dot}grid"), path, f"{dot}grid")
        variants = list(_as_list(raw.get("variants", [{}]), path, f"{dot}variants") or [{}])
        blocks = []  # per variant: its included protocol block, merged before `set`
        for j, v in enumerate(variants):
            v = dict(_as_map(v, path, f"{dot}variants[{j}]"))
            blocks.append(_includes(v.pop("include"), path, f"{dot}variants[{j}].include") if "include" in v else {})
            variants[j] = v
            try:
                _check_keys(v)
            except ConfigError as e:
                raise _fail(path, f"{dot}variants[{j}]", str(e)) from None
        search = _parse_search(raw["search"], path, f"{dot}search") if "search" in raw else None
        exp_seeds = _seeds(raw, path, prefix, base_seed, seeds)
        for point, (j, variant), seed in itertools.product(points, enumerate(variants), exp_seeds):
            where = prefix or "grid"
            if len(variants) > 1:
                where += f".variants[{j}]"
            cell = _build_cell(path, where, base, [blocks[j], setv, point, variant or {}], seed, overrides or {},
                               exp_tables, name, search, profile,
                               _label(name, point, _merge(blocks[j], _nest(variant or {})), j, len(variants), seed),
                               synth)
            if cell.cell_id in cells:  # same experiment reached twice: one run, tables merged
                old = cells[cell.cell_id]
                merged = table_list((*old.tables, *cell.tables))
                tags = {**old.tags, keys.TAG_TABLES: ",".join(merged)}
                cell = dataclasses.replace(old, tables=merged, tags=tags)
            cells[cell.cell_id] = cell
    name = str(doc.get("name", path.stem))
    resources = _parse_resources(doc.get("resources"), path)
    max_failures = _int(doc.get("max_failures", 1), path, "max_failures", 0)
    max_concurrent = _int(doc.get("max_concurrent", 0), path, "max_concurrent", 0)
    if profile is not None:
        name = f"{name}-{profile.name}"
        resources = profile.resources or resources
        max_failures = max_failures if profile.max_failures is None else profile.max_failures
        max_concurrent = max_concurrent if profile.max_concurrent is None else profile.max_concurrent
    return Sweep(name=name, path=path, description=str(doc.get("description", "")), resources=resources,
                 max_failures=max_failures, max_concurrent=max_concurrent, cells_=tuple(cells.values()),
                 synth=synth, profile=profile)
