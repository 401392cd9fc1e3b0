"""The claims table's logic on made-up numbers: verdicts by the report's spread rule, paired
differences, a claim's verdict from its rows, the claims file's checks (reports/verdicts.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from atf import keys
from orchestration.sweepfile import load_sweep
from reports.compute import exceeds_spread
from reports.verdicts import (
    FAILS,
    HOLDS,
    NO_DATA,
    NOISE,
    ClaimError,
    claim_verdict,
    judge,
    judge_all,
    judge_row,
    load_claims,
    parse_claims,
    render_markdown,
    seed_stat,
)

ROOT = Path(__file__).resolve().parents[1]


def _stat(*values):
    return seed_stat({str(i): v for i, v in enumerate(values)})


@pytest.mark.parametrize("kind, ours, other, verdict", [
    ("better", (9.0, 9.1, 8.9), (10.0, 10.1, 9.9), HOLDS),            # 1.0 lower, spread 0.14
    ("better", (9.9, 10.3, 9.5), (10.0, 10.4, 9.6), NOISE),           # 0.1 lower, spread 0.57
    ("better", (10.1, 10.4, 9.8), (10.0, 10.4, 9.6), NOISE),          # a little higher, within it
    ("better", (11.0, 11.1, 10.9), (10.0, 10.1, 9.9), FAILS),         # higher beyond the spread
    ("no_worse", (10.1, 10.4, 9.8), (10.0, 10.4, 9.6), NOISE),        # higher, but within the spread
    ("no_worse", (9.9, 10.3, 9.5), (10.0, 10.4, 9.6), HOLDS),         # lower, within the spread
    ("no_worse", (9.0, 9.1, 8.9), (10.0, 10.1, 9.9), HOLDS),          # lower beyond it
    ("no_worse", (11.0, 11.1, 10.9), (10.0, 10.1, 9.9), FAILS),
    ("better", (9.0,), (10.0, 10.1, 9.9), NO_DATA),                   # one seed: no spread
])
def test_judge_follows_the_reports_spread_rule(kind, ours, other, verdict):
    a, b = _stat(*ours), _stat(*other)
    assert judge(kind, a, b) == verdict
    if verdict in (FAILS,) or (verdict == HOLDS and kind == "better"):
        assert exceeds_spread(a, b) is True     # the one rule the tables use
    if verdict == NOISE:
        assert exceeds_spread(a, b) is False


def test_seed_stat_is_mean_and_sample_std():
    st = seed_stat({"0": 1.0, "1": 2.0, "2": 3.0})
    assert st.mean == 2.0 and st.std == pytest.approx(1.0) and st.n == 3 and st.seeds == ("0", "1", "2")
    assert seed_stat({"0": 4.0}).std is None and seed_stat({}) is None
    assert seed_stat({"0": 1.0, "1": math.nan}).n == 1


def _spec(extra: dict | None = None) -> dict:
    cmp = {"label": "WA", "ours": "atf-WA", "other": "baseline-wflw", "head": "wflw", "kind": "better"}
    return {"sweep": "s", "claims": [{"key": "1", "claim": "ATF beats its baseline", "table": "III",
                                      "compare": [{**cmp, **(extra or {})}]}]}


def test_paired_differences_are_per_common_seed_and_rows_render():
    spec = parse_claims(_spec())
    cmp = spec.claims[0].comparisons[0]
    assert cmp.ours.metric == keys.test_metric("wflw", "full", keys.NME)
    row = judge_row(spec.claims[0], cmp, {"0": 9.0, "1": 9.5, "2": 9.1}, {"0": 10.0, "1": 10.2, "3": 10.1})
    assert row.diffs == (("0", 1.0), ("1", pytest.approx(0.7)))
    assert row.delta == pytest.approx(100 * (10.1 - 9.2) / 10.1)
    md = render_markdown([row], command="atf-sweep x.yaml")
    line = next(x for x in md.splitlines() if x.startswith("| 1 | WA |"))
    assert "s0 +1.00, s1 +0.70" in line and f"**{row.verdict}**" in line and "9.20 ± 0.26" in line
    assert f"| 1. ATF beats its baseline | III | **{row.verdict}** | 1 {row.verdict} |" in md
    assert "`atf-sweep x.yaml`" in md


def test_a_missing_side_has_a_stated_no_verdict():
    spec = parse_claims(_spec())
    rows = judge_all(spec, {("baseline-wflw", keys.test_metric("wflw", "full", keys.NME)): {"0": 1.0, "1": 2.0}})
    assert rows[0].verdict == NO_DATA and "atf-WA" in rows[0].why
    assert claim_verdict(rows) == NO_DATA


def test_claim_verdict_from_rows():
    spec = parse_claims(_spec())
    claim, cmp = spec.claims[0], spec.claims[0].comparisons[0]
    good = judge_row(claim, cmp, {"0": 9.0, "1": 9.1}, {"0": 10.0, "1": 10.1})
    noisy = judge_row(claim, cmp, {"0": 9.0, "1": 11.0}, {"0": 10.0, "1": 10.1})
    bad = judge_row(claim, cmp, {"0": 11.0, "1": 11.1}, {"0": 10.0, "1": 10.1})
    assert (good.verdict, noisy.verdict, bad.verdict) == (HOLDS, NOISE, FAILS)
    assert claim_verdict([good, good]) == HOLDS
    assert claim_verdict([good, noisy]) == NOISE
    assert claim_verdict([good, noisy, bad]) == FAILS


def test_time_and_scratch_sides():
    spec = parse_claims(_spec({"ours": {"experiment": "novel-W3", "time": "novel_head"},
                               "other": {"experiment": "novel-W3", "time": "novel_scratch"}}))
    cmp = spec.claims[0].comparisons[0]
    assert (cmp.ours.metric, cmp.unit) == (keys.time_metric("novel_head"), "s")
    cpu = parse_claims(_spec({"ours": {"experiment": "novel-W3", "cpu_time": "novel_head"},
                              "other": {"experiment": "novel-W3", "cpu_time": "novel_scratch"}}))
    assert cpu.claims[0].comparisons[0].other.metric == keys.cpu_time_metric("novel_scratch") \
        == "time/novel_scratch_cpu_seconds"
    scratch = parse_claims(_spec({"other": {"experiment": "novel-W3", "head": "cofw", "scratch": True}}))
    assert scratch.claims[0].comparisons[0].other.metric == keys.test_metric("cofw" + keys.SCRATCH_SUFFIX,
                                                                             "full", keys.NME)


@pytest.mark.parametrize("extra, needle", [
    ({"kind": "faster"}, "kind 'faster'"),
    ({"colour": 1}, "unknown key 'colour'"),
    ({"ours": {"experiment": "novel-W3", "time": "lunch"}}, "time 'lunch'"),
    ({"ours": {"experiment": "novel-W3", "time": "novel_head"}}, "one side is a time"),
    ({"head": None}, "no head"),
    ({"ours": {"head": "wflw"}}, "expected an experiment name"),
])
def test_bad_claims_file_is_one_line_naming_the_entry(extra, needle):
    with pytest.raises(ClaimError) as e:
        parse_claims(_spec(extra), "claims.yaml")
    msg = str(e.value)
    assert needle in msg and "claims.yaml: claims[0].compare[0]" in msg and "\n" not in msg


def test_shipped_claims_name_experiments_of_the_claims_sweep():
    spec = load_claims()
    names = {c.experiment for c in load_sweep(ROOT / "sweeps" / f"{spec.sweep}.yaml").cells()}
    assert spec.experiments() <= names, spec.experiments() - names
    assert len(spec.claims) == 5 and all(c.comparisons for c in spec.claims)
