"""Losses of eq. 3-5 against values worked out by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from atf.losses import (
    PART_OWN,
    PART_PS,
    PART_TOTAL,
    WING_EPSILON,
    WING_REFERENCE,
    WING_W,
    landmark_loss,
    mixed_branch_loss,
    similar_loss,
)


def coords(*points: tuple[float, float]) -> torch.Tensor:
    return torch.tensor([points], dtype=torch.float32)      # [1, K, 2]


def test_l1_is_the_per_point_l1_norm_averaged_over_images_and_points() -> None:
    pred = torch.zeros(2, 2, 2)
    target = torch.tensor([[[0.1, 0.2], [0.0, 0.0]], [[0.3, -0.1], [0.0, 0.4]]])
    # per point |dx|+|dy|: 0.3, 0, 0.4, 0.4 -> mean 0.275
    assert landmark_loss("l1", pred, target).item() == pytest.approx(0.275)


def test_l2_is_the_squared_distance_averaged() -> None:
    pred = coords((0.0, 0.0), (1.0, 1.0))
    target = coords((0.3, 0.4), (1.0, 1.0))
    assert landmark_loss("l2", pred, target).item() == pytest.approx(0.25 / 2)


def test_wing_follows_feng_in_reference_pixels() -> None:
    small = 1.0 / WING_REFERENCE            # 1 px: log region
    big = 20.0 / WING_REFERENCE             # 20 px: linear region
    pred = coords((small, 0.0), (big, 0.0))
    target = torch.zeros_like(pred)
    c = WING_W - WING_W * math.log(1 + WING_W / WING_EPSILON)
    expected = (WING_W * math.log(1 + 1.0 / WING_EPSILON) + (20.0 - c)) / 2 / WING_REFERENCE
    assert landmark_loss("wing", pred, target).item() == pytest.approx(expected, rel=1e-5)
    # continuous at |x| = w
    at_w = coords((WING_W / WING_REFERENCE, 0.0))
    just_over = coords(((WING_W + 1e-3) / WING_REFERENCE, 0.0))
    z = torch.zeros_like(at_w)
    assert landmark_loss("wing", at_w, z).item() == pytest.approx(landmark_loss("wing", just_over, z).item(),
                                                                   abs=1e-4)


def test_heatmap_mse_sums_pixels_and_averages_images_and_landmarks() -> None:
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.zeros(2, 3, 4, 4)
    target[0, 0] = 0.5            # 16 px x 0.25 = 4 for one of the 6 maps
    target[1, 2, 1, 1] = 2.0      # 4 for another
    assert landmark_loss("heatmap_mse", pred, target).item() == pytest.approx(8.0 / 6)


def test_bad_shapes_and_kinds_raise_one_line_errors() -> None:
    with pytest.raises(ValueError, match="unknown loss kind 'l3'"):
        landmark_loss("l3", torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"prediction shape \(1, 2, 2\) != target \(1, 3, 2\)"):
        landmark_loss("l1", torch.zeros(1, 2, 2), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match=r"expected \[B, K, H, W\]"):
        landmark_loss("heatmap_mse", torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))


def test_similar_loss_compares_only_the_paired_points() -> None:
    a = coords((0.0, 0.0), (0.5, 0.5), (0.9, 0.9))
    b = coords((0.6, 0.5), (9.0, 9.0))
    # one pair a[1] <-> b[0] (|dx| = 0.1); the far-off b[1] and the unpaired a[0], a[2] do not count
    loss = similar_loss(a, b, torch.tensor([1]), torch.tensor([0]), "l1")
    assert loss.item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="equal length"):
        similar_loss(a, b, torch.tensor([1, 2]), torch.tensor([0]), "l1")


def test_similar_loss_on_heatmaps_uses_the_paired_maps() -> None:
    a = torch.zeros(1, 3, 2, 2)
    b = torch.zeros(1, 2, 2, 2)
    a[0, 2] = 1.0
    loss = similar_loss(a, b, torch.tensor([2, 0]), torch.tensor([1, 0]), "heatmap_mse")
    assert loss.item() == pytest.approx(4.0 / 2)


def _setup() -> tuple[dict[str, torch.Tensor], dict, torch.Tensor]:
    """Three heads: target t (3 pts), aux a (2 pts), aux c (2 pts), one image."""
    out = {"t": coords((0.0, 0.0), (0.5, 0.5), (1.0, 1.0)).requires_grad_(),
           "a": coords((0.1, 0.0), (0.5, 0.7)).requires_grad_(),
           "c": coords((1.0, 0.6), (0.0, 0.0)).requires_grad_()}
    idx = torch.tensor
    pairs = {("t", "a"): (idx([0, 1]), idx([0, 1])), ("a", "t"): (idx([0, 1]), idx([0, 1])),
             ("t", "c"): (idx([2]), idx([0])), ("c", "t"): (idx([0]), idx([2])),
             ("a", "c"): (idx([1]), idx([1])), ("c", "a"): (idx([1]), idx([1]))}
    return out, pairs, idx


def test_target_batch_is_own_plus_alpha_times_mean_similar_term() -> None:
    out, pairs, _ = _setup()
    gt = coords((0.0, 0.1), (0.5, 0.5), (1.0, 1.0))
    own = 0.1 / 3
    ps_a = (0.1 + 0.2) / 2          # t[0]-a[0]: 0.1; t[1]-a[1]: 0.2
    ps_c = 0.4                      # t[2]-c[0]: (0, 0.4)
    loss, parts = mixed_branch_loss(out, "t", "t", gt, pairs, "l1", True, alpha=0.2, beta=0.8, gamma=0.1)
    ps = (ps_a + ps_c) / 2
    assert parts[PART_OWN] == pytest.approx(own)
    assert parts[PART_PS] == pytest.approx(ps)
    assert loss.item() == pytest.approx(own + 0.2 * ps) == pytest.approx(parts[PART_TOTAL])


def test_aux_batch_is_beta_own_plus_gamma_similar_term() -> None:
    out, pairs, _ = _setup()
    gt = coords((0.1, 0.0), (0.5, 0.5))
    own = 0.2 / 2
    ps = ((0.1 + 0.2) / 2 + 0.5 + 0.7) / 2     # vs t; vs c: a[1]-c[1] = 0.5 + 0.7
    loss, parts = mixed_branch_loss(out, "a", "t", gt, pairs, "l1", True, alpha=0.2, beta=0.8, gamma=0.1)
    assert loss.item() == pytest.approx(0.8 * own + 0.1 * ps)
    assert parts[PART_PS] == pytest.approx(ps)


def test_l_at_is_the_own_term_only_and_leaves_other_heads_without_gradient() -> None:
    out, pairs, _ = _setup()
    gt = coords((0.1, 0.0), (0.5, 0.5))
    loss, parts = mixed_branch_loss(out, "a", "t", gt, pairs, "l1", False, alpha=0.2, beta=0.8, gamma=0.1)
    assert loss.item() == pytest.approx(landmark_loss("l1", out["a"], gt).item())
    assert parts[PART_PS] == 0.0
    loss.backward()
    assert out["a"].grad is not None and out["t"].grad is None and out["c"].grad is None


def test_l_mb_sends_gradient_into_both_heads_of_a_pair() -> None:
    out = {"t": coords((0.0, 0.0), (0.5, 0.5)).requires_grad_(), "a": coords((0.3, 0.3)).requires_grad_()}
    pairs = {("t", "a"): (torch.tensor([1]), torch.tensor([0]))}
    gt = out["t"].detach().clone()             # own term is zero: any gradient comes from L_ps
    loss, _ = mixed_branch_loss(out, "t", "t", gt, pairs, "l1", True, alpha=1.0, beta=1.0, gamma=1.0)
    loss.backward()
    assert out["a"].grad.abs().sum() > 0
    assert out["t"].grad[0, 1].abs().sum() > 0 and out["t"].grad[0, 0].abs().sum() == 0


def test_missing_pairs_and_missing_head_are_named() -> None:
    out, pairs, _ = _setup()
    del pairs[("t", "c")]
    gt = coords((0.0, 0.1), (0.5, 0.5), (1.0, 1.0))
    with pytest.raises(KeyError, match=r"\('t', 'c'\)"):
        mixed_branch_loss(out, "t", "t", gt, pairs, "l1", True, 1.0, 1.0, 1.0)
    with pytest.raises(KeyError, match="'x'"):
        mixed_branch_loss(out, "x", "t", gt, pairs, "l1", True, 1.0, 1.0, 1.0)


# -- loss.weighting (issue 9) -----------------------------------------------------------------------

def test_fixed_weights_are_the_configured_ones() -> None:
    from atf.losses import LossWeights
    w = LossWeights("fixed", 0.2, 0.8, 0.1)
    assert w.step(True, 5.0, 1.0) == (0.2, 0.8, 0.1)
    assert w.step(False, 3.0, 2.0) == (0.2, 0.8, 0.1)


def test_running_weights_follow_the_public_hrnet_atf_rule() -> None:
    """alpha = a*mean(L_main)/mean(L_ps), beta = b*mean(L_main)/mean(L_aux), gamma = g*mean(L_main)/mean(L_ps)."""
    from atf.losses import LossWeights
    w = LossWeights("running", 0.2, 0.5, 0.1)
    a, b, g = w.step(True, 4.0, 1.0)           # means: main 4, ps 1, aux empty (ratio 1)
    assert (a, b, g) == pytest.approx((0.2 * 4.0, 0.5, 0.1 * 4.0))
    a, b, g = w.step(False, 2.0, 3.0)          # means: main 4, aux 2, ps (1 + 3) / 2 = 2
    assert (a, b, g) == pytest.approx((0.2 * 2.0, 0.5 * 2.0, 0.1 * 2.0))
    state = w.state_dict()
    again = LossWeights("running", 0.2, 0.5, 0.1)
    again.load_state_dict(state)               # a resumed run continues with the same means
    assert again.step(True, 4.0, 2.0) == pytest.approx(w.step(True, 4.0, 2.0))
    w.reset()                                  # a new epoch starts fresh means
    assert w.step(False, 1.0, 1.0) == pytest.approx((0.2, 0.5, 0.1))  # no L_main yet: ratios 1
    with pytest.raises(ValueError, match="weighting 'fixed'"):
        LossWeights("running", 1, 1, 1).load_state_dict(LossWeights("fixed", 1, 1, 1).state_dict())
