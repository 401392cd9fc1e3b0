"""Reading a sweep file: YAML, `${VAR}` expansion, includes and base, profiles, and the
search/resources/synth/experiment sections, each checked into plain records (`SweepDoc`).

Every error is one line naming the file and the key path, raised before any cell is built.
Config keys are checked by `atf.config` (the one override engine); cells are made from a
`SweepDoc` by `orchestration.expand`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atf import keys
from atf.config import ConfigError, RunConfig, check_keys, field_type, merge, nest
from atf.config import read_yaml as read_config_yaml
from orchestration.cells import TABLES
from orchestration.sweepspec import (
    DEFAULT_SYNTH,
    DISTRIBUTIONS,
    SAMPLERS,
    Param,
    Profile,
    Resources,
    Search,
    SweepError,
    SynthSpec,
)

__all__ = ["Experiment", "SweepDoc", "read_sweep", "load_profile", "resolve_paths", "PROFILE_DIR"]

PROFILE_DIR = Path(__file__).resolve().parents[1] / "sweeps" / "profiles"
_TOP_KEYS = {"name", "description", "include", "base", "tables", "seeds", "repeats", "resources",
             "max_failures", "max_concurrent", "experiments", "set", "grid", "variants", "search", "synth"}
_PROFILE_KEYS = {"name", "description", "set", "resources", "max_failures", "max_concurrent", "search",
                 "synth", "max_seeds"}
_EXP_KEYS = {"name", "tables", "set", "grid", "variants", "seeds", "search"}
_ONE_EXPERIMENT = ("set", "grid", "variants", "search")  # top-level keys of a file without `experiments`
_SEARCH_KEYS = {"space", "sampler", "num_samples", "metric", "mode", "seed"}
_ENV = re.compile(r"\$\{(?P<name>[A-Za-z_]\w*)(?::-(?P<default>[^}]*))?\}")


@dataclass(frozen=True)
class Experiment:
    """One experiment of a sweep file, checked: what `expand` crosses into cells."""
    name: str
    where: str                      # key path of the experiment in the file ("" = top level)
    tables: tuple[str, ...]
    set: dict[str, Any]
    points: list[dict[str, Any]]    # grid points (cartesian product of the axes)
    variants: list[dict[str, Any]]  # each variant's own keys (its `include` taken out)
    blocks: list[dict[str, Any]]    # per variant: its included protocol block, merged before `set`
    seeds: list[int]
    search: Search | None


@dataclass(frozen=True)
class SweepDoc:
    """A whole sweep file, checked, before expansion."""
    path: Path
    name: str
    description: str
    base: dict[str, Any]            # nested RunConfig keys (includes, then `base`)
    experiments: list[Experiment]
    resources: Resources
    max_failures: int
    max_concurrent: int
    synth: SynthSpec | None


# -- small helpers ---------------------------------------------------------------------------

def fail(path: Path, where: str, msg: str) -> SweepError:
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
            raise fail(path, where, f"environment variable {m['name']} is not set and has no default")
        return got if got is not None else m["default"]
    return _ENV.sub(sub, value)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping (atf.config.read_yaml) with `${VAR}` expanded; SweepError naming the file."""
    try:
        data = read_config_yaml(path)
    except ConfigError as e:
        raise SweepError(str(e)) from None
    return _expand_env(data, path, "")


def _as_list(value: Any, path: Path, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise fail(path, where, f"expected a list, got {type(value).__name__}")
    return value


def _as_map(value: Any, path: Path, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(path, where, f"expected a mapping, got {type(value).__name__}")
    return value


def _int(value: Any, path: Path, where: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise fail(path, where, f"expected an integer >= {low}, got {value!r}")
    return value


def _unknown(raw: dict[str, Any], known: set[str], path: Path, prefix: str = "") -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise fail(path, f"{prefix}.{unknown[0]}" if prefix else unknown[0], f"unknown key; known: {sorted(known)}")


def _config_keys(updates: dict[str, Any], path: Path, where: str) -> dict[str, Any]:
    """`updates` after atf.config checked its keys; the error names the file and section."""
    try:
        check_keys(updates)
    except ConfigError as e:
        raise fail(path, where, str(e)) from None
    return updates


def _tables(value: Any, path: Path, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else _as_list(value, path, where)
    for i, t in enumerate(items):
        if str(t) not in TABLES:
            raise fail(path, f"{where}[{i}]", f"unknown table {t!r}; expected one of {TABLES}")
    return tuple(str(t) for t in items)


# -- includes and base -------------------------------------------------------------------------

def _includes(includes: Any, path: Path, where: str, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """RunConfig YAML files named by `include` (relative to `path`), merged in order. An included
    file may `include` others itself (its own keys win over them)."""
    out: dict[str, Any] = {}
    items = [includes] if isinstance(includes, str) else _as_list(includes, path, where)
    for i, inc in enumerate(items):
        w = where if isinstance(includes, str) else f"{where}[{i}]"
        inc_path = (path.parent / str(inc)).resolve()
        if not inc_path.is_file():
            raise fail(path, w, f"no such file {inc}")
        if inc_path in seen:
            raise fail(path, w, f"include cycle through {inc}")
        data = dict(read_yaml(inc_path))
        inner = _includes(data.pop("include"), inc_path, "include", (*seen, inc_path)) if "include" in data else {}
        try:
            check_keys(data)
        except ConfigError as e:
            raise SweepError(f"{inc_path}: {e}") from None
        out = merge(out, merge(inner, nest(data)))
    return out


def _load_base(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    base = _includes(doc["include"], path, "include") if doc.get("include") else {}
    own = _config_keys(_as_map(doc.get("base"), path, "base"), path, "base")
    return merge(base, nest(own))


# -- sections ----------------------------------------------------------------------------------

def _parse_param(key: str, spec: Any, path: Path, w: str) -> Param:
    try:
        field_type(key)
    except ConfigError as e:
        raise fail(path, w, str(e)) from None
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise fail(path, w, f"expected one of {{{', '.join(DISTRIBUTIONS)}: ...}}, got {spec!r}")
    dist, args = next(iter(spec.items()))
    args = _as_list(args, path, f"{w}.{dist}")
    if dist == "choice":
        if not args:
            raise fail(path, f"{w}.{dist}", "choice needs at least one value")
    else:
        if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise fail(path, f"{w}.{dist}", f"expected [low, high] numbers, got {args!r}")
        low, high = args
        if not low < high:
            raise fail(path, f"{w}.{dist}", f"bad range: low {low!r} must be < high {high!r}")
        if dist == "loguniform" and low <= 0:
            raise fail(path, f"{w}.{dist}", f"bad range: loguniform needs low > 0, got {low!r}")
        if dist == "randint" and not all(isinstance(a, int) for a in args):
            raise fail(path, f"{w}.{dist}", f"randint needs integer bounds, got {args!r}")
    return Param(key, dist, tuple(args))


def _parse_search(raw: Any, path: Path, where: str) -> Search:
    raw = _as_map(raw, path, where)
    _unknown(raw, _SEARCH_KEYS, path, where)
    metric = raw.get("metric", keys.VAL_NME)
    if metric != keys.VAL_NME:
        raise fail(path, f"{where}.metric", f"{metric!r}: searches optimise {keys.VAL_NME!r} only "
                   "(a validation split carved from training; never a test metric)")
    if raw.get("mode", "min") != "min":
        raise fail(path, f"{where}.mode", f"{keys.VAL_NME} is minimised; mode must be 'min'")
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise fail(path, f"{where}.sampler", f"{sampler!r} is not one of {SAMPLERS}")
    space_raw = _as_map(raw.get("space"), path, f"{where}.space")
    if not space_raw:
        raise fail(path, f"{where}.space", "a search needs at least one parameter")
    params = [_parse_param(str(k), spec, path, f"{where}.space.{k}") for k, spec in space_raw.items()]
    return Search(space=tuple(params),
                  num_samples=_int(raw.get("num_samples", 8), path, f"{where}.num_samples", 1),
                  sampler=sampler, seed=_int(raw.get("seed", 0), path, f"{where}.seed", 0))


def _parse_resources(raw: Any, path: Path) -> Resources:
    raw = _as_map(raw, path, "resources")
    unknown = sorted(set(raw) - {"cpu", "gpu"})
    if unknown:
        raise fail(path, f"resources.{unknown[0]}", "unknown key; known: ['cpu', 'gpu']")
    out = {}
    for k, default in (("cpu", 1.0), ("gpu", 0.0)):
        v = raw.get(k, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (k == "cpu" and v == 0):
            raise fail(path, f"resources.{k}", f"expected a number {'> 0' if k == 'cpu' else '>= 0'}, got {v!r}")
        if v > 1 and v != int(v):
            raise fail(path, f"resources.{k}", f"above 1 a trial takes whole units, got {v!r}")
        out[k] = float(v)
    return Resources(**out)


def _parse_synth(raw: Any, path: Path, where: str) -> SynthSpec:
    raw = _as_map(raw, path, where)
    unknown = sorted(set(raw) - {"scale", "seed"})
    if unknown:
        raise fail(path, f"{where}.{unknown[0]}", "unknown key; known: ['scale', 'seed']")
    scale = raw.get("scale", DEFAULT_SYNTH.scale)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise fail(path, f"{where}.scale", f"expected a number in (0, 1], got {scale!r}")
    return SynthSpec(float(scale), _int(raw.get("seed", DEFAULT_SYNTH.seed), path, f"{where}.seed", 0))


def _grid_points(grid: dict[str, Any], path: Path, where: str) -> list[dict[str, Any]]:
    """The cartesian product of the grid's axes, as one mapping per point."""
    axes = []
    for key, values in grid.items():
        try:
            field_type(str(key))
        except ConfigError as e:
            raise fail(path, f"{where}.{key}", str(e)) from None
        values = _as_list(values, path, f"{where}.{key}")
        if not values:
            raise fail(path, f"{where}.{key}", "a grid axis needs at least one value")
        axes.append([(str(key), v) for v in values])
    return [dict(point) for point in itertools.product(*axes)] if axes else [{}]


def _seeds(raw: dict[str, Any], path: Path, where: str, base_seed: int, default: list[int]) -> list[int]:
    if "seeds" in raw and "repeats" in raw:
        raise fail(path, where or "seeds", "give either 'seeds' or 'repeats', not both")
    if "repeats" in raw:
        n = _int(raw["repeats"], path, f"{where}.repeats" if where else "repeats", 1)
        return [base_seed + i for i in range(n)]
    if "seeds" in raw:
        w = f"{where}.seeds" if where else "seeds"
        items = _as_list(raw["seeds"], path, w)
        return [_int(s, path, f"{w}[{i}]", 0) for i, s in enumerate(items)] or default
    return default


def _variants(raw: dict[str, Any], path: Path, dot: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(each variant's own keys, each variant's included protocol block)."""
    variants, blocks = [], []
    for j, v in enumerate(_as_list(raw.get("variants", [{}]), path, f"{dot}variants") or [{}]):
        v = dict(_as_map(v, path, f"{dot}variants[{j}]"))
        blocks.append(_includes(v.pop("include"), path, f"{dot}variants[{j}].include") if "include" in v else {})
        variants.append(_config_keys(v, path, f"{dot}variants[{j}]"))
    return variants, blocks


def _parse_experiment(raw: Any, i: int, prefix: str, path: Path, tables: tuple[str, ...],
                      base_seed: int, seeds: list[int]) -> Experiment:
    raw = _as_map(raw, path, prefix or "experiments")
    _unknown(raw, _EXP_KEYS, path, prefix)
    dot = f"{prefix}." if prefix else ""
    exp_tables = _tables(raw["tables"], path, f"{dot}tables") if "tables" in raw else tables
    if not exp_tables:
        raise fail(path, f"{dot}tables", "every cell must feed at least one paper table")
    setv = _config_keys(_as_map(raw.get("set"), path, f"{dot}set"), path, f"{dot}set")
    points = _grid_points(_as_map(raw.get("grid"), path, f"{dot}grid"), path, f"{dot}grid")
    variants, blocks = _variants(raw, path, dot)
    search = _parse_search(raw["search"], path, f"{dot}search") if "search" in raw else None
    return Experiment(name=str(raw.get("name", f"exp{i}")), where=prefix, tables=exp_tables, set=setv,
                      points=points, variants=variants, blocks=blocks,
                      seeds=_seeds(raw, path, prefix, base_seed, seeds), search=search)


def _experiments(doc: dict[str, Any], path: Path, base: dict[str, Any]) -> list[Experiment]:
    if "experiments" in doc and any(k in doc for k in _ONE_EXPERIMENT):
        raise fail(path, "experiments", "use either 'experiments' or top-level set/grid/variants/search")
    base_seed = base.get("seed", 0) if isinstance(base.get("seed", 0), int) else 0
    tables = _tables(doc.get("tables", []), path, "tables")
    seeds = _seeds(doc, path, "", base_seed, [base_seed])
    if "experiments" not in doc:
        one = {k: doc[k] for k in _ONE_EXPERIMENT if k in doc}
        return [_parse_experiment(one, 0, "", path, tables, base_seed, seeds)]
    exps = _as_list(doc["experiments"], path, "experiments")
    if not exps:
        raise fail(path, "experiments", "needs at least one experiment")
    return [_parse_experiment(raw, i, f"experiments[{i}]", path, tables, base_seed, seeds)
            for i, raw in enumerate(exps)]


# -- whole files -------------------------------------------------------------------------------

def read_sweep(path: Path) -> SweepDoc:
    """Read and check a sweep file (not its profile or --set: `expand` applies those)."""
    doc = read_yaml(path)
    _unknown(doc, _TOP_KEYS, path)
    base = _load_base(doc, path)
    return SweepDoc(
        path=path, name=str(doc.get("name", path.stem)), description=str(doc.get("description", "")),
        base=base, experiments=_experiments(doc, path, base),
        resources=_parse_resources(doc.get("resources"), path),
        max_failures=_int(doc.get("max_failures", 1), path, "max_failures", 0),
        max_concurrent=_int(doc.get("max_concurrent", 0), path, "max_concurrent", 0),
        synth=_parse_synth(doc["synth"], path, "synth") if "synth" in doc else None)


def _find_profile(name_or_path: str | Path, sweep_dir: Path | None) -> Path:
    given = Path(name_or_path)
    candidates = [given] if given.suffix in (".yaml", ".yml") else []
    candidates += [d / f"{name_or_path}.yaml" for d in ((sweep_dir / "profiles") if sweep_dir else None,
                                                         PROFILE_DIR) if d is not None]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise SweepError(f"--profile {name_or_path}: no such profile (known: {', '.join(known) or 'none'}; "
                         f"looked for {', '.join(str(c) for c in candidates)})")
    return path


def load_profile(name_or_path: str | Path, sweep_dir: Path | None = None) -> Profile:
    """A profile by name (`<sweep dir>/profiles/NAME.yaml`, else sweeps/profiles/NAME.yaml) or path."""
    path = _find_profile(name_or_path, sweep_dir)
    doc = read_yaml(path)
    _unknown(doc, _PROFILE_KEYS, path)
    setv = _config_keys(_as_map(doc.get("set"), path, "set"), path, "set")
    search = _as_map(doc.get("search"), path, "search")
    if set(search) - {"num_samples"}:
        raise fail(path, "search", "a profile may only cap num_samples")
    return Profile(
        name=str(doc.get("name", path.stem)), path=path, set=setv,
        resources=_parse_resources(doc["resources"], path) if "resources" in doc else None,
        max_failures=_int(doc["max_failures"], path, "max_failures", 0) if "max_failures" in doc else None,
        max_concurrent=_int(doc["max_concurrent"], path, "max_concurrent", 0) if "max_concurrent" in doc else None,
        max_samples=_int(search["num_samples"], path, "search.num_samples", 1) if "num_samples" in search else None,
        synth=_parse_synth(doc["synth"], path, "synth") if "synth" in doc else None,
        max_seeds=_int(doc["max_seeds"], path, "max_seeds", 1) if "max_seeds" in doc else None)


def resolve_paths(cfg: RunConfig, cwd: Path) -> RunConfig:
    """Absolute data paths (trials run in other working directories, maybe other nodes)."""
    def absolute(p: str) -> str:
        return p if not p or os.path.isabs(p) else str((cwd / p).resolve())
    data = cfg.data
    paths = {name: dataclasses.replace(dp, annotations=absolute(dp.annotations), images=absolute(dp.images))
             for name, dp in data.paths.items()}
    data = dataclasses.replace(data, root=absolute(data.root), paths=paths,
                               registry=tuple(absolute(r) for r in data.registry),
                               cache_dir=absolute(os.path.expanduser(data.cache_dir)) if data.cache_dir else "")
    return dataclasses.replace(cfg, data=data)
