"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from atf import keys, metrics
from atf.metrics import MetricAccumulator, MetricError, auc, ced, failure_rate, nme, summarize


def test_nme_hand_computed():
    gt = np.zeros((2, 2, 2))
    pred = np.array([[[3.0, 4.0], [0.0, 0.0]],      # errors 5 and 0 -> mean 2.5
                     [[6.0, 8.0], [0.0, 10.0]]])    # errors 10 and 10 -> mean 10
    out = nme(pred, gt, np.array([10.0, 50.0]))
    assert out.shape == (2,)
    assert out.tolist() == pytest.approx([0.25, 0.2])


def test_failure_rate_is_strictly_above_threshold_in_percent():
    assert failure_rate(np.array([0.05, 0.10, 0.15])) == pytest.approx(100 / 3)
    assert failure_rate(np.array([0.05, 0.10, 0.15]), threshold=0.2) == 0.0


def test_auc_exact_step_area():
    e = np.array([0.02, 0.05, 0.2])
    # CED = 0 on [0, .02), 1/3 on [.02, .05), 2/3 on [.05, .1]: area .01 + .0333.. = .04333.., / 0.1
    assert auc(e) == pytest.approx(0.4333333333, abs=1e-9)
    assert auc(np.zeros(4)) == 1.0 and auc(np.array([0.1, 0.3])) == 0.0
    # agrees with a very fine numerical integral of the CED
    rng = np.random.default_rng(0)
    e = rng.uniform(0, 0.15, 200)
    t = np.linspace(0, 0.1, 200001)
    frac = np.searchsorted(np.sort(e), t, "right") / e.size
    assert auc(e) == pytest.approx(np.trapezoid(frac, t) / 0.1, abs=1e-4)


def test_ced_counts_errors_at_or_below_each_threshold():
    curve = ced(np.array([0.02, 0.05, 0.2]), threshold=0.1, steps=3)
    assert curve.shape == (3, 2)
    assert curve[:, 0].tolist() == pytest.approx([0.0, 0.05, 0.1])
    assert curve[:, 1].tolist() == pytest.approx([0.0, 2 / 3, 2 / 3])


def test_accumulator_and_summary_units():
    acc = MetricAccumulator()
    gt = np.zeros((1, 1, 2))
    acc.add(np.array([[[0.3, 0.4]]]), gt, np.array([10.0]))        # 0.05
    acc.add(np.array([[[3.0, 4.0]]]), gt, np.array([25.0]))        # 0.2
    assert len(acc) == 2
    s = acc.summary()
    assert set(s) == {keys.NME, keys.FR, keys.AUC}
    assert s[keys.NME] == pytest.approx(12.5)        # percent
    assert s[keys.FR] == pytest.approx(50.0)         # percent
    assert s[keys.AUC] == pytest.approx(0.25)        # fraction: (0.05 + 0) / 2 / 0.1
    assert acc.ced(steps=11)[-1, 1] == pytest.approx(0.5)
    assert summarize(np.array([0.05, 0.2])) == s


def test_bad_inputs_raise():
    with pytest.raises(MetricError, match=r"\[N, K, 2\]"):
        nme(np.zeros((2, 3, 2)), np.zeros((2, 4, 2)), np.ones(2))
    with pytest.raises(MetricError, match="3 normalisers for 2 images"):
        nme(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), np.ones(3))
    with pytest.raises(MetricError, match="image 1 is not positive"):
        nme(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), np.array([1.0, 0.0]))
    with pytest.raises(MetricError, match="non-finite"):
        nme(np.full((1, 3, 2), np.nan), np.zeros((1, 3, 2)), np.ones(1))
    with pytest.raises(MetricError, match="empty"):
        MetricAccumulator().summary()


def test_ced_csv_round_trip_and_bad_files(tmp_path):
    curve = ced(np.array([0.013, 0.05, 0.2, 0.07]), threshold=0.5, steps=501)
    path = metrics.write_ced(tmp_path / keys.ced_artifact("wflw", "full"), curve)
    assert path.read_text().splitlines()[:3] == ["threshold,fraction", "0,0", "0.001,0"]
    np.testing.assert_allclose(metrics.read_ced(path), curve, rtol=1e-6)
    bad = tmp_path / "bad.csv"
    bad.write_text("t,f\n0,0\n")
    with pytest.raises(MetricError, match=r"bad.csv: a CED CSV has the columns threshold,fraction.*'t,f'"):
        metrics.read_ced(bad)
    bad.write_text("threshold,fraction\n0,x\n")
    with pytest.raises(MetricError, match=r"bad.csv: unreadable CED CSV"):
        metrics.read_ced(bad)
