"""The paper's claims as paired comparisons between a sweep's experiments, each with a verdict.

`claims.yaml` states what `sweeps/synth_claims.yaml` tests (ATF beats its baseline, L_MB vs L_AT,
wd vs wod, the joint and novel detectors). Each comparison reads one lower-is-better metric of two
experiments per seed; its verdict uses the report's spread rule (`reports.compute.exceeds_spread`,
the one the tables mark with * and ~), never a second rule:

- kind `better` (ours lower): holds when ours is lower beyond the spread, does not hold when it is
  higher beyond the spread, within noise otherwise;
- kind `no_worse` (ours not higher): holds when ours is not higher, does not hold when it is higher
  beyond the spread, within noise when it is higher within the spread (a higher mean is reported as
  noise, never as a claim that holds).

A claim holds when every comparison holds, does not hold when one does not, else it is within
noise. Everything here is pure (numbers in, rows and Markdown out); reading a store is the CLI's
job (`tools/study_summary.py --claims`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from atf import keys

from .compute import Stat, exceeds_spread, relative_change

__all__ = ["CLAIMS_FILE", "HOLDS", "FAILS", "NOISE", "NO_DATA", "KINDS", "ClaimError", "Side", "Comparison",
           "Claim", "ClaimSpec", "Judged", "load_claims", "parse_claims", "seed_stat", "judge", "judge_row",
           "claim_verdict", "judge_all", "render_markdown"]

CLAIMS_FILE = Path(__file__).with_name("claims.yaml")
HOLDS = "holds"
FAILS = "does not hold"
NOISE = "within noise"
NO_DATA = "no verdict"           # a side lacks runs, or has one seed (no spread to judge by)
KINDS = ("better", "no_worse")
_SIDE_KEYS = {"experiment", "head", "subset", "scratch", "time", "cpu_time"}
_COMPARE_KEYS = {"label", "ours", "other", "head", "subset", "kind"}
_CLAIM_KEYS = {"key", "claim", "table", "compare"}


class ClaimError(ValueError):
    """A malformed claims file; the message names the file and the entry."""


@dataclass(frozen=True)
class Side:
    experiment: str                  # experiment name in the sweep file
    metric: str                      # keys.test_metric(...) or keys.time_metric(...)
    label: str                       # what a reader sees, e.g. "atf-WA" or "novel-W3 cofw (scratch)"


@dataclass(frozen=True)
class Comparison:
    label: str
    ours: Side                       # the side the claim is about
    other: Side
    kind: str                        # one of KINDS
    unit: str = "NME"                # "NME" (%) or "s"


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    table: str                       # the paper's table(s) the claim comes from
    comparisons: tuple[Comparison, ...]


@dataclass(frozen=True)
class ClaimSpec:
    sweep: str                       # name of the sweep whose experiments the sides name
    claims: tuple[Claim, ...]

    def experiments(self) -> set[str]:
        return {s.experiment for c in self.claims for cmp in c.comparisons for s in (cmp.ours, cmp.other)}


@dataclass(frozen=True)
class Judged:
    """One comparison, computed: both sides over their seeds, the paired differences, the verdict."""
    claim: Claim
    comparison: Comparison
    ours: Stat | None
    other: Stat | None
    diffs: tuple[tuple[str, float], ...]   # (seed, other - ours) on the seeds both sides have; + = ours lower
    delta: float | None                    # relative improvement of ours over other (%), + = better
    verdict: str
    why: str = ""                          # NO_DATA: what is missing


# -- the claims file ---------------------------------------------------------------------------

def _unknown(raw: Mapping, known: set[str], where: str) -> None:
    extra = sorted(set(raw) - known)
    if extra:
        raise ClaimError(f"{where}: unknown key {extra[0]!r}; known: {sorted(known)}")


def _side(raw: Any, defaults: Mapping[str, Any], where: str) -> Side:
    spec = {"experiment": raw} if isinstance(raw, str) else raw
    if not isinstance(spec, dict) or not spec.get("experiment"):
        raise ClaimError(f"{where}: expected an experiment name or {{experiment, head | time | cpu_time}}, "
                         f"got {raw!r}")
    _unknown(spec, _SIDE_KEYS, where)
    exp = str(spec["experiment"])
    for k, metric, what in (("time", keys.time_metric, "time"), ("cpu_time", keys.cpu_time_metric, "CPU time")):
        if k in spec:
            phase = str(spec[k])
            if phase not in keys.TIME_PHASES:
                raise ClaimError(f"{where}: {k} {phase!r} is not one of {keys.TIME_PHASES}")
            return Side(exp, metric(phase), f"{exp} {phase} {what}")
    head = spec.get("head", defaults.get("head"))
    if not head:
        raise ClaimError(f"{where}: no head (give `head` on the side or the comparison)")
    scratch = bool(spec.get("scratch", False))
    dataset = f"{head}{keys.SCRATCH_SUFFIX}" if scratch else str(head)
    subset = str(spec.get("subset", defaults.get("subset", "full")))
    label = f"{exp} {head}" + (" (scratch)" if scratch else "") + (f" {subset}" if subset != "full" else "")
    return Side(exp, keys.test_metric(dataset, subset, keys.NME), label)


def _comparison(raw: Any, where: str) -> Comparison:
    if not isinstance(raw, dict):
        raise ClaimError(f"{where}: expected a mapping, got {raw!r}")
    _unknown(raw, _COMPARE_KEYS, where)
    for k in ("label", "ours", "other", "kind"):
        if k not in raw:
            raise ClaimError(f"{where}: missing {k!r}")
    if raw["kind"] not in KINDS:
        raise ClaimError(f"{where}: kind {raw['kind']!r} is not one of {KINDS}")
    ours, other = _side(raw["ours"], raw, f"{where}.ours"), _side(raw["other"], raw, f"{where}.other")
    timed = [s.metric.startswith(keys.TIME_PREFIX) for s in (ours, other)]
    if timed[0] != timed[1]:
        raise ClaimError(f"{where}: one side is a time, the other an NME")
    return Comparison(str(raw["label"]), ours, other, raw["kind"], "s" if timed[0] else "NME")


def parse_claims(raw: Any, where: str = CLAIMS_FILE.name) -> ClaimSpec:
    """A checked ClaimSpec from the YAML mapping; ClaimError naming the entry otherwise."""
    if not isinstance(raw, dict) or not isinstance(raw.get("claims"), list) or not raw.get("sweep"):
        raise ClaimError(f"{where}: expected a mapping with `sweep` and a list `claims`")
    _unknown(raw, {"sweep", "claims"}, where)
    claims = []
    for i, c in enumerate(raw["claims"]):
        w = f"{where}: claims[{i}]"
        if not isinstance(c, dict):
            raise ClaimError(f"{w}: expected a mapping, got {c!r}")
        _unknown(c, _CLAIM_KEYS, w)
        if not c.get("claim") or not isinstance(c.get("compare"), list) or not c["compare"]:
            raise ClaimError(f"{w}: needs `claim` and a non-empty list `compare`")
        comps = tuple(_comparison(x, f"{w}.compare[{j}]") for j, x in enumerate(c["compare"]))
        claims.append(Claim(str(c.get("key", i + 1)), str(c["claim"]), str(c.get("table", "")), comps))
    return ClaimSpec(str(raw["sweep"]), tuple(claims))


@cache
def load_claims(path: Path = CLAIMS_FILE) -> ClaimSpec:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ClaimError(f"{path}: cannot read the claims file ({str(e).splitlines()[0]})") from None
    return parse_claims(raw, str(path))


# -- verdicts ----------------------------------------------------------------------------------

def seed_stat(values: Mapping[str, float]) -> Stat | None:
    """Mean and sample standard deviation over seeds (std None with one seed), as the report's cells."""
    vals = [(s, v) for s, v in sorted(values.items()) if v is not None and math.isfinite(v)]
    if not vals:
        return None
    xs = [v for _, v in vals]
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return Stat(mean, std, len(xs), tuple(s for s, _ in vals), ())


def judge(kind: str, ours: Stat, other: Stat) -> str:
    """The verdict of one comparison of lower-is-better values (module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown comparison kind {kind!r}; expected one of {KINDS}")
    beyond = exceeds_spread(ours, other)
    if beyond is None:
        return NO_DATA
    lower = ours.mean < other.mean
    if kind == "better":
        return (HOLDS if lower else FAILS) if beyond else NOISE
    if ours.mean <= other.mean:
        return HOLDS
    return FAILS if beyond else NOISE


def judge_row(claim: Claim, cmp: Comparison, ours: Mapping[str, float], other: Mapping[str, float]) -> Judged:
    """`ours` / `other`: seed -> value of the two sides."""
    a, b = seed_stat(ours), seed_stat(other)
    both = sorted(set(a.seeds if a else ()) & set(b.seeds if b else ()), key=_seed_order)
    diffs = tuple((s, other[s] - ours[s]) for s in both)
    if a is None or b is None:
        missing = " and ".join(s.label for s, st in ((cmp.ours, a), (cmp.other, b)) if st is None)
        return Judged(claim, cmp, a, b, diffs, None, NO_DATA, f"no finished run of {missing}")
    delta = relative_change(a.mean, b.mean, higher_is_better=False)
    verdict = judge(cmp.kind, a, b)
    why = "" if verdict != NO_DATA else "one seed on a side: no spread to judge by"
    return Judged(claim, cmp, a, b, diffs, delta, verdict, why)


def claim_verdict(rows: list[Judged]) -> str:
    """A claim's verdict from its comparisons' (module docstring)."""
    verdicts = [r.verdict for r in rows]
    if FAILS in verdicts:
        return FAILS
    if NO_DATA in verdicts or not verdicts:
        return NO_DATA
    return HOLDS if all(v == HOLDS for v in verdicts) else NOISE


def judge_all(spec: ClaimSpec, values: Mapping[tuple[str, str], Mapping[str, float]]) -> list[Judged]:
    """Every comparison of `spec`; `values[(experiment, metric)]` is seed -> value."""
    out = []
    for claim in spec.claims:
        for cmp in claim.comparisons:
            out.append(judge_row(claim, cmp, values.get((cmp.ours.experiment, cmp.ours.metric), {}),
                                 values.get((cmp.other.experiment, cmp.other.metric), {})))
    return out


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), "") if seed.isdigit() else (1 << 30, seed)


# -- Markdown ----------------------------------------------------------------------------------

def _fmt_stat(st: Stat | None, unit: str) -> str:
    if st is None:
        return "–"
    d = 2 if unit == "NME" else 1
    spread = f" ± {st.std:.{d}f}" if st.std is not None else ""
    return f"{st.mean:.{d}f}{spread}" + (" s" if unit == "s" else "")


def _fmt_diffs(r: Judged) -> str:
    d = 2 if r.comparison.unit == "NME" else 1
    return ", ".join(f"s{s} {v:+.{d}f}" for s, v in r.diffs) or "–"


def _claim_lines(rows: list[Judged]) -> list[str]:
    lines = ["| claim | paper | verdict | comparisons |", "|---|---|---|---|"]
    for claim in dict.fromkeys(r.claim for r in rows):
        mine = [r for r in rows if r.claim == claim]
        counts = ", ".join(f"{sum(r.verdict == v for r in mine)} {v}" for v in (HOLDS, NOISE, FAILS, NO_DATA)
                           if any(r.verdict == v for r in mine))
        lines.append(f"| {claim.key}. {claim.text} | {claim.table} | **{claim_verdict(mine)}** | {counts} |")
    return lines


def _comparison_lines(rows: list[Judged]) -> list[str]:
    lines = ["| claim | comparison | kind | ours | other | Δ | other − ours, per seed | verdict |",
             "|---|---|---|---|---|---:|---|---|"]
    for r in rows:
        c = r.comparison
        delta = f"{r.delta:+.1f}%" if r.delta is not None else "–"
        verdict = f"**{r.verdict}**" + (f" ({r.why})" if r.why else "")
        lines.append(f"| {r.claim.key} | {c.label} | {c.kind.replace('_', ' ')} | {c.ours.label}: "
                     f"{_fmt_stat(r.ours, c.unit)} | {c.other.label}: {_fmt_stat(r.other, c.unit)} | {delta} "
                     f"| {_fmt_diffs(r)} | {verdict} |")
    return lines


def render_markdown(rows: list[Judged], command: str = "") -> str:
    """A verdict per claim, then its comparisons: both sides, Δ, the paired differences, a verdict each."""
    lines = _claim_lines(rows) + [""] + _comparison_lines(rows)
    lines += ["", "NME in %, times in seconds; mean ± standard deviation over seeds; Δ: relative improvement "
              "of ours over other (+ = ours lower). Verdicts by the report's spread rule, |Δmean| > "
              "√(sd₁² + sd₂²): *better* holds only beyond the spread (within it: within noise), *no worse* "
              "holds when ours is not higher (higher within the spread: within noise). A claim holds when every comparison holds, "
              "does not hold when one does not."]
    if command:
        lines += ["", f"Runs: `{command}`."]
    return "\n".join(lines) + "\n"
