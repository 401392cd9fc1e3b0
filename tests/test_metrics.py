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


# -- the two NME protocols (issue 9) ----------------------------------------------------------------

def test_protocol_metric_names_are_distinct_and_parse_back():
    bench = keys.test_metric("wflw", "full", keys.NME)
    ocn = keys.test_metric("wflw", "full", keys.NME, keys.PROTOCOL_OCN)
    assert bench == "test/wflw/full/nme" and ocn == "test_ocn/wflw/full/nme"
    assert keys.parse_protocol_metric(ocn) == (keys.PROTOCOL_OCN, "wflw", "full", keys.NME)
    assert keys.parse_test_metric(ocn) is None              # benchmark readers never pick it up
    assert keys.parse_test_metric(bench) == ("wflw", "full", keys.NME)
    with pytest.raises(ValueError, match="unknown NME protocol"):
        keys.test_metric("wflw", "full", keys.NME, "pixels")


def _ocn_set(dataset: str, landmarks: np.ndarray, box: np.ndarray):
    """A one-face dataset cropped the public OCN code's way (no image is read by the metric)."""
    from atf.data import LandmarkDataset
    from atf.datasets import get_dataset
    from atf.readers import AnnotationSet
    from atf.schemes import get_scheme
    scheme = get_dataset(dataset).scheme
    n = landmarks.shape[0]
    aset = AnnotationSet(source=f"{dataset}.csv", dataset=dataset, scheme=scheme, images=("x.png",) * n,
                         landmarks=landmarks.astype(np.float32), centers=np.full((n, 2), np.nan),
                         scales=np.full(n, np.nan), boxes=box.astype(np.float32), box_sizes=np.full(n, 100.0))
    return LandmarkDataset(aset, ".", get_scheme(scheme).flip_perm, 112, crop="ocn_test")


def test_ocn_protocol_measures_in_anisotropic_crop_units():
    from atf.evaluate import ocn_protocol_errors
    rng = np.random.default_rng(0)
    gt = np.stack([rng.uniform(100, 300, 19), rng.uniform(50, 450, 19)], axis=1)[None]   # 200 x 400 spread
    box = np.array([[100.0, 50.0, 300.0, 450.0]])
    ds = _ocn_set("aflw", gt, box)
    lo, hi = np.minimum(gt[0].min(0), [100, 50]), np.maximum(gt[0].max(0), [300, 450])
    w, h = (hi - lo) * 1.12
    pred = gt + np.array([w * 0.01, 0.0])      # 1% of the crop's width to the right
    err = ocn_protocol_errors(pred, ds, np.array([0]))
    assert err[0] == pytest.approx(0.01, rel=1e-6)          # AFLW: normaliser = 1 crop unit
    pred_y = gt + np.array([0.0, h * 0.02])    # 2% of its height down: y scales apart from x
    assert ocn_protocol_errors(pred_y, ds, np.array([0]))[0] == pytest.approx(0.02, rel=1e-6)


def test_ocn_protocol_normalises_by_eye_corners_in_crop_units():
    from atf.evaluate import ocn_protocol_errors
    rng = np.random.default_rng(1)
    gt = np.stack([rng.uniform(0, 400, 98), rng.uniform(0, 200, 98)], axis=1)[None]
    gt[0, 60], gt[0, 72] = (100.0, 100.0), (300.0, 100.0)   # WFLW's outer eye corners, horizontal
    box = np.array([[np.nan] * 4])                          # no detector box: the landmarks alone
    ds = _ocn_set("wflw", gt, box)
    w = (gt[0, :, 0].max() - gt[0, :, 0].min()) * 1.12
    pred = gt + np.array([5.0, 0.0])
    # error 5 px and eye distance 200 px are both horizontal: in crop units their ratio is 5/200
    assert ocn_protocol_errors(pred, ds, np.array([0]))[0] == pytest.approx(5.0 / 200.0, rel=1e-6)
    assert 5.0 / w != pytest.approx(5.0 / 200.0)            # (not the crop-width normaliser)
