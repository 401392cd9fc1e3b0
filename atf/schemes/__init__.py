"""Landmark annotation schemes as data: point names, flip permutation, normaliser, semantics.

Why YAML: every scheme fact (which index is the left eye corner, how a mirror permutes the
points, what NME divides by) lives in one reviewable file per scheme, and a user adds a new
scheme with `register_file` instead of code. The loader expands compact group specs into point
names, builds the flip permutation from ``[left, right]`` range pairs and refuses any table that
is not an involutive permutation, so a typo cannot silently corrupt flip augmentation.

"left"/"right" always mean IMAGE sides (the subject's right is the image left), matching the
official similar-point list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

__all__ = [
    "SchemeError", "Normalizer", "Scheme", "OFFICIAL_SEMANTIC", "get_scheme", "scheme_names",
    "similar_pairs", "pair_names", "register_file", "register_scheme", "scheme_from_dict",
]

_HERE = Path(__file__).resolve().parent
_BUILTIN = ("wflw98", "300w68", "cofw29", "aflw19")
RICH_PAIRS_FILE = _HERE / "pairs_rich.yaml"

# The 10 similar points of the official ATF code, in its order (REFERENCE.md).
OFFICIAL_SEMANTIC = (
    "brow_outer_left", "brow_outer_right", "eye_outer_left", "eye_inner_left", "eye_inner_right",
    "eye_outer_right", "nose_tip", "mouth_corner_left", "mouth_corner_right", "chin",
)


class SchemeError(ValueError):
    """A bad or unknown scheme or pair table; the message names the file/scheme and key."""


@dataclass(frozen=True)
class Normalizer:
    """What NME divides by: the distance of two points, or the annotation's face box size."""
    kind: Literal["interocular", "box"]
    points: tuple[int, ...] = ()   # the two point indices for "interocular"


@dataclass(frozen=True, eq=False)
class Scheme:
    name: str
    num_points: int
    point_names: tuple[str, ...]
    flip_perm: np.ndarray            # [K] int: point i of a mirrored face is point flip_perm[i] of the original
    normalizer: Normalizer
    semantic: dict[str, int]         # meaning shared across schemes -> index (official 10 first)
    left: tuple[int, ...] = ()       # image-left member of every mirror pair
    source: str = ""                 # file it was loaded from (for error messages)
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def right(self) -> tuple[int, ...]:
        return tuple(int(self.flip_perm[i]) for i in self.left)

    def index(self, name: str | int) -> int:
        """Index of a point given by index, point name or semantic name."""
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
            if not 0 <= int(name) < self.num_points:
                raise SchemeError(f"scheme {self.name}: point index {name} out of range 0..{self.num_points - 1}")
            return int(name)
        if name in self.semantic:
            return self.semantic[name]
        if name in self._index:
            return self._index[name]
        raise SchemeError(f"scheme {self.name}: no point named {name!r}")


# -- building a scheme from its YAML mapping -------------------------------------------------

_RANGE = re.compile(r"^\s*(\d+)\s*(?:\.\.\s*(\d+))?\s*$")
_KEYS = {"name", "num_points", "points", "flip", "normalizer", "semantic"}


def _expand(spec: Any, where: str) -> list[int]:
    """`5` -> [5]; `"0..3"` -> [0,1,2,3]; `"3..0"` -> [3,2,1,0]."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        return [spec]
    m = _RANGE.match(str(spec))
    if not m:
        raise SchemeError(f"{where}: {spec!r} is not an index or an 'a..b' range")
    a, b = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
    step = 1 if b >= a else -1
    return list(range(a, b + step, step))


def _point_names(groups: Any, where: str) -> list[str]:
    if not isinstance(groups, list):
        raise SchemeError(f"{where}.points: expected a list of groups")
    names: list[str] = []
    for g, spec in enumerate(groups):
        if isinstance(spec, dict) and set(spec) == {"group", "count"}:
            names += [f"{spec['group']}_{i}" for i in range(int(spec["count"]))]
        elif isinstance(spec, dict) and set(spec) == {"names"} and isinstance(spec["names"], list):
            names += [str(n) for n in spec["names"]]
        else:
            raise SchemeError(f"{where}.points[{g}]: expected {{group, count}} or {{names: [...]}}, got {spec!r}")
    return names


def _flip(pairs: Any, k: int, where: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Permutation from [left, right] range pairs; validated to be an involution."""
    perm = np.arange(k)
    touched: set[int] = set()
    left: list[int] = []
    for p, pair in enumerate(pairs or []):
        if not isinstance(pair, list) or len(pair) != 2:
            raise SchemeError(f"{where}.flip[{p}]: expected [left, right], got {pair!r}")
        a, b = _expand(pair[0], f"{where}.flip[{p}]"), _expand(pair[1], f"{where}.flip[{p}]")
        if len(a) != len(b):
            raise SchemeError(f"{where}.flip[{p}]: ranges {pair[0]!r} and {pair[1]!r} differ in length")
        for i, j in zip(a, b):
            if not (0 <= i < k and 0 <= j < k) or i == j:
                raise SchemeError(f"{where}.flip[{p}]: bad pair ({i}, {j}) for {k} points")
            if i in touched or j in touched:
                raise SchemeError(f"{where}.flip[{p}]: point {i if i in touched else j} is paired twice")
            touched |= {i, j}
            perm[i], perm[j] = j, i
            left.append(i)
    check_flip(perm, where)
    return perm, tuple(left)


def check_flip(perm: np.ndarray, where: str) -> None:
    """Raise unless `perm` is a permutation with perm[perm[i]] == i."""
    k = len(perm)
    if sorted(perm.tolist()) != list(range(k)):
        raise SchemeError(f"{where}.flip: not a permutation of 0..{k - 1}")
    bad = np.flatnonzero(perm[perm] != np.arange(k))
    if bad.size:
        raise SchemeError(f"{where}.flip: not an involution at point {int(bad[0])}")


def scheme_from_dict(data: dict[str, Any], source: str = "<dict>") -> Scheme:
    """Validate and build a Scheme from its YAML mapping; errors name `source` and the key."""
    if not isinstance(data, dict):
        raise SchemeError(f"{source}: a scheme must be a mapping")
    unknown = sorted(set(data) - _KEYS)
    missing = sorted({"name", "num_points", "points", "normalizer"} - set(data))
    if unknown or missing:
        what = f"unknown key {unknown[0]!r}" if unknown else f"missing key {missing[0]!r}"
        raise SchemeError(f"{source}: {what}; scheme keys are {sorted(_KEYS)}")
    name, k = str(data["name"]), data["num_points"]
    where = f"{source}: scheme {name}"
    if not isinstance(k, int) or k < 1:
        raise SchemeError(f"{where}.num_points: expected a positive integer, got {k!r}")
    names = _point_names(data["points"], where)
    if len(names) != k:
        raise SchemeError(f"{where}.points: {len(names)} names generated for num_points={k}")
    if len(set(names)) != k:
        dup = next(n for n in names if names.count(n) > 1)
        raise SchemeError(f"{where}.points: duplicate point name {dup!r}")
    perm, left = _flip(data.get("flip"), k, where)
    index = {n: i for i, n in enumerate(names)}

    def resolve(v: Any, key: str) -> int:
        i = index.get(v) if isinstance(v, str) else v
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < k:
            raise SchemeError(f"{where}.{key}: {v!r} is not a point of this scheme")
        return i

    norm = data["normalizer"]
    if not isinstance(norm, dict) or norm.get("kind") not in ("interocular", "box"):
        raise SchemeError(f"{where}.normalizer: expected {{kind: interocular, points: [a, b]}} or {{kind: box}}")
    pts: tuple[int, ...] = ()
    if norm["kind"] == "interocular":
        raw = norm.get("points")
        if not isinstance(raw, list) or len(raw) != 2:
            raise SchemeError(f"{where}.normalizer.points: expected two points, got {raw!r}")
        pts = tuple(resolve(v, "normalizer.points") for v in raw)
    semantic = {str(s): resolve(v, f"semantic.{s}") for s, v in (data.get("semantic") or {}).items()}
    return Scheme(name=name, num_points=k, point_names=tuple(names), flip_perm=perm,
                  normalizer=Normalizer(norm["kind"], pts), semantic=semantic, left=left,
                  source=source, _index=index)


# -- registry ------------------------------------------------------------------------------

_SCHEMES: dict[str, Scheme] = {}
_PAIRS: dict[tuple[str, str], list[tuple[str, str]]] = {}   # (a, b) -> [(name in a, name in b)]
_LOADED_FILES: set[Path] = set()


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as e:
        raise SchemeError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise SchemeError(f"{path}: malformed YAML ({getattr(e, 'problem', e)})") from None


_BUILTIN_LOADED = False


def _load_builtin() -> None:
    global _BUILTIN_LOADED
    if _BUILTIN_LOADED:
        return
    _BUILTIN_LOADED = True   # set first: the pair tables below look schemes up again
    for stem in _BUILTIN:
        path = _HERE / f"{stem}.yaml"
        register_scheme(scheme_from_dict(_read_yaml(path), str(path)))
    if RICH_PAIRS_FILE.exists():
        _register_pairs(_read_yaml(RICH_PAIRS_FILE).get("pairs", {}), str(RICH_PAIRS_FILE))


def register_scheme(scheme: Scheme) -> None:
    """Add (or replace) a scheme in the registry."""
    _SCHEMES[scheme.name] = scheme


def _register_pairs(tables: Any, source: str) -> None:
    if not isinstance(tables, dict):
        raise SchemeError(f"{source}: pairs: expected a mapping 'a/b' -> [[point in a, point in b], ...]")
    for key, rows in tables.items():
        parts = str(key).split("/")
        if len(parts) != 2 or not isinstance(rows, list):
            raise SchemeError(f"{source}: pairs.{key}: expected key 'scheme_a/scheme_b' and a list of pairs")
        try:
            a, b = get_scheme(parts[0]), get_scheme(parts[1])
        except SchemeError as e:
            raise SchemeError(f"{source}: pairs.{key}: {e}") from None
        table = []
        seen: tuple[set[int], set[int]] = (set(), set())
        for r, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != 2:
                raise SchemeError(f"{source}: pairs.{key}[{r}]: expected [point in {a.name}, point in {b.name}]")
            for sch, v, used in zip((a, b), row, seen):
                try:
                    i = sch.index(v)
                except SchemeError as e:
                    raise SchemeError(f"{source}: pairs.{key}[{r}]: {e}") from None
                if i in used:   # a point with two partners would be pulled two ways by L_MB
                    raise SchemeError(f"{source}: pairs.{key}[{r}]: point {v!r} of {sch.name} is paired twice")
                used.add(i)
            table.append((row[0], row[1]))
        _PAIRS[(a.name, b.name)] = table


def register_file(path: str | Path) -> list[str]:
    """Register the schemes and pair tables of a YAML file; returns the scheme names added.

    The file holds either one scheme at top level, or `schemes: [...]` and/or
    `pairs: {"a/b": [[name_or_index_in_a, name_or_index_in_b], ...]}`; a `datasets:` key is left
    to `atf.datasets.register_file`. Registering the same file twice is a no-op.
    """
    _load_builtin()
    path = Path(path).resolve()
    if path in _LOADED_FILES:
        return []
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise SchemeError(f"{path}: top level must be a mapping")
    if "num_points" in data:
        specs = [data]
    else:
        unknown = sorted(set(data) - {"schemes", "pairs", "datasets"})
        if unknown:
            raise SchemeError(f"{path}: unknown key {unknown[0]!r}; expected schemes, pairs, datasets")
        specs = data.get("schemes") or []
    added = []
    for i, spec in enumerate(specs):
        scheme = scheme_from_dict(spec, f"{path}: schemes[{i}]" if len(specs) > 1 else str(path))
        register_scheme(scheme)
        added.append(scheme.name)
    if "num_points" not in data and "pairs" in data:
        _register_pairs(data["pairs"], str(path))
    _LOADED_FILES.add(path)
    return added


def scheme_names() -> list[str]:
    _load_builtin()
    return list(_SCHEMES)


def get_scheme(name: str) -> Scheme:
    """The registered scheme `name`; unknown names raise a one-line error listing the known ones."""
    _load_builtin()
    try:
        return _SCHEMES[name]
    except KeyError:
        raise SchemeError(f"unknown scheme {name!r}; known schemes: {sorted(_SCHEMES)}") from None


def pair_names(a: str, b: str, table: str = "official") -> list[tuple[str, str]]:
    """Similar points of schemes a and b as (name in a, name in b), for reports and checks."""
    sa, sb = get_scheme(a), get_scheme(b)
    idx = similar_pairs(a, b, table)
    return [(sa.point_names[i], sb.point_names[j]) for i, j in idx]


def similar_pairs(a: str, b: str, table: str = "official") -> np.ndarray:
    """[P, 2] int array of (index in scheme a, index in scheme b) of points with the same meaning.

    "official": the 10 points of the official ATF code (OFFICIAL_SEMANTIC order), matched by
    semantic name. "rich": the pair-specific table of pairs_rich.yaml (or a registered file),
    derived from the geometry of real mean shapes by tools/derive_rich_pairs.py.
    For a == b every point pairs with itself.
    """
    sa, sb = get_scheme(a), get_scheme(b)
    if sa.name == sb.name:
        return np.stack([np.arange(sa.num_points)] * 2, axis=1)
    if table == "official":
        missing = [s for s in OFFICIAL_SEMANTIC for sch in (sa, sb) if s not in sch.semantic]
        if missing:
            raise SchemeError(f"similar_pairs({a}, {b}): scheme lacks semantic point {missing[0]!r}")
        return np.array([[sa.semantic[s], sb.semantic[s]] for s in OFFICIAL_SEMANTIC], dtype=np.int64)
    if table == "rich":
        if (sa.name, sb.name) in _PAIRS:
            rows = _PAIRS[(sa.name, sb.name)]
            return np.array([[sa.index(x), sb.index(y)] for x, y in rows], dtype=np.int64)
        if (sb.name, sa.name) in _PAIRS:
            rows = _PAIRS[(sb.name, sa.name)]
            return np.array([[sa.index(y), sb.index(x)] for x, y in rows], dtype=np.int64)
        raise SchemeError(f"similar_pairs: no rich pair table for {a}/{b}; use table='official' "
                          "or declare `pairs: {\"a/b\": ...}` in a registry file")
    raise SchemeError(f"similar_pairs: unknown table {table!r}; expected 'official' or 'rich'")
