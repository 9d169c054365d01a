import math

import numpy as np
import pytest

from vip_ray.core.aggregation import (cp_aggregate, cp_reply_bytes, get_aggregator, majority_aggregate, reply_bytes,
                                 softmax, topk_compress, topk_decompress, vip_aggregate, vp_aggregate, vp_scale)


def test_vp_fig4_toy_example_compress_decompress_softmax():
    # VP Fig. 4: C = 6, k = 2; the variant's top-2 are 0.51 (class 1) and 0.4 (class 3).
    psi = np.array([[0.02, 0.51, 0.03, 0.40, 0.01, 0.03]])
    values, idx = topk_compress(psi, 2)
    assert idx.tolist() == [[1, 3]] and values.tolist() == [[0.51, 0.40]]
    dense = topk_decompress(values, idx, 6, 2)
    assert dense.tolist() == [[0, 0.51, 0, 0.40, 0, 0]]
    z = math.exp(0.51) + math.exp(0.40) + 4
    expected = [1 / z, math.exp(0.51) / z, 1 / z, math.exp(0.40) / z, 1 / z, 1 / z]
    np.testing.assert_allclose(softmax(dense)[0], expected, rtol=1e-12)


def test_vp_aggregate_equals_hand_computation_with_scaling():
    # two variants, ρ = (96, 160), d = (4, 6), α = 0.5: weights (0.6·1, 1·1.5^0.5)
    p = np.array([[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]])
    w = vp_scale([96, 160], [4, 6], 0.5)
    np.testing.assert_allclose(w, [0.6, 1.5 ** 0.5])
    out = vp_aggregate(p, k=None, rho=[96, 160], depth=[4, 6], alpha=0.5)
    expected = softmax(w[0] * softmax(p[0, 0]) + w[1] * softmax(p[0, 1]))
    np.testing.assert_allclose(out[0], expected, rtol=1e-12)


def test_vp_k1_is_one_hot_vote_and_mask_drops_nonresponders():
    p = np.array([[[0.6, 0.4, 0.0], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]]])
    full = vp_aggregate(p, k=1, rho=[1, 1, 1], depth=[1, 1, 1], alpha=0)
    # each variant contributes softmax(one-hot): classes 0, 2, 1 each once -> uniform
    np.testing.assert_allclose(full[0], [1 / 3] * 3)
    only_last = vp_aggregate(p, k=1, rho=[1, 1, 1], depth=[1, 1, 1], alpha=0,
                             responded=np.array([[False, False, True]]))
    assert only_last[0].argmax() == 1
    nobody = vp_aggregate(p, k=2, rho=[1, 1, 1], depth=[1, 1, 1], responded=np.zeros((1, 3), bool))
    assert np.isnan(nobody).all()


def test_vip_average_and_majority():
    p = np.array([[[0.9, 0.1], [0.4, 0.6], [0.45, 0.55]]])
    np.testing.assert_allclose(vip_aggregate(p)[0], [1.75 / 3, 1.25 / 3])
    np.testing.assert_allclose(vip_aggregate(p, responded=np.array([[False, True, True]]))[0], [0.425, 0.575])
    assert majority_aggregate(p)[0].argmax() == 1       # two votes for class 1 beat one confident vote
    assert vip_aggregate(p)[0].argmax() == 0             # while averaging follows the confident one
    assert np.isnan(vip_aggregate(p, responded=np.zeros((1, 3), bool))).all()


@pytest.mark.parametrize("k,c,expected", [(1, 10, 1), (2, 10, 10), (5, 10, 25), (8, 10, 40), (9, 10, 40),
                                           (None, 10, 40), (2, 100, 10), (5, 100, 25), (50, 100, 250),
                                           (2, 1000, 12)])
def test_reply_bytes_is_vp_eq3(k, c, expected):
    # h(k) = min(k·(4+1), 4·C) for k>1, 1 for k=1; beyond 256 classes an index takes 2 bytes
    assert reply_bytes(k, c) == expected


def test_aggregator_registry_names_allowed_values():
    assert get_aggregator("vp") is vp_aggregate
    assert get_aggregator("cp") is cp_aggregate
    with pytest.raises(KeyError, match="allowed: cp, first, majority, vip, vp"):
        get_aggregator("mean")


# class parallelism: C = 5, group 0 owns {0, 3}, group 1 owns {1, 2, 4}
CP_CLASSES = np.array([[1, 0, 0, 1, 0], [0, 1, 1, 0, 1]], dtype=bool)


def test_cp_aggregate_scores_each_class_by_its_owner():
    # group 0's row: p(0)=0.1, p(3)=0.6, other 0.3 spread over {1, 2, 4}; group 1's row: p(1)=0.2,
    # p(2)=0.1, p(4)=0.5, other 0.2 spread over {0, 3}
    g0 = [0.1, 0.1, 0.1, 0.6, 0.1]
    g1 = [0.1, 0.2, 0.1, 0.1, 0.5]
    out = cp_aggregate(np.array([[g0, g1]]), classes=CP_CLASSES)
    np.testing.assert_allclose(out[0], [0.1, 0.2, 0.1, 0.6, 0.5])
    assert out[0].argmax() == 3  # group 0's confident 3 beats group 1's 4
    # the spread "other" mass of a group never scores a class it does not own
    out = cp_aggregate(np.array([[[0.0, 0.3, 0.3, 0.1, 0.3], [0.45, 0.05, 0.0, 0.45, 0.05]]]), classes=CP_CLASSES)
    np.testing.assert_allclose(out[0], [0.0, 0.05, 0.0, 0.1, 0.05])


def test_cp_aggregate_needs_every_group():
    p = np.tile(np.full(5, 0.2), (3, 2, 1))
    responded = np.array([[True, True], [True, False], [False, False]])
    out = cp_aggregate(p, responded=responded, classes=CP_CLASSES)
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all() and np.isnan(out[2]).all()
    # a class that no group owns can never be answered
    assert np.isnan(cp_aggregate(p, classes=np.array([[1, 0, 0, 1, 0], [0, 1, 1, 0, 0]], bool))).all()


def test_cp_aggregate_refuses_bad_class_masks():
    p = np.full((1, 2, 5), 0.2)
    with pytest.raises(ValueError, match="needs classes="):
        cp_aggregate(p)
    with pytest.raises(ValueError, match=r"classes must be \(G, C\) = \(2, 5\)"):
        cp_aggregate(p, classes=CP_CLASSES[:, :4])
    with pytest.raises(ValueError, match=r"classes \[0\] are owned by more than one group"):
        cp_aggregate(p, classes=np.array([[1, 0, 0, 1, 0], [1, 1, 1, 0, 1]], bool))


def test_cp_reply_carries_the_groups_scores():
    assert [cp_reply_bytes(n) for n in (1, 2, 4)] == [4, 8, 16]
    assert cp_reply_bytes(3, fp_bytes=2) == 6


def _member(rho, width, j):
    from types import SimpleNamespace

    return SimpleNamespace(input_size=rho, width=width, last_conv_factor=j)


def test_vp_eq1_on_fig4s_toy_example():
    """VP Fig. 4: C = 6, k = 2; a reply keeps 0.51 (class 1) and 0.4 (class 3); the master
    scatters them, softmaxes, scales by eq. 1 and sums. Worked by hand for two variants."""
    from vip_ray.core.aggregation import AggregationSpec

    a = np.array([0.02, 0.51, 0.03, 0.40, 0.01, 0.03])   # variant 1's prediction vector
    b = np.array([0.05, 0.10, 0.05, 0.70, 0.05, 0.05])   # variant 2's
    members = [_member(96, 0.35, 4), _member(160, 0.5, 9)]
    spec = AggregationSpec.build("vp", 2, 1.0, members, [0, 1], num_classes=6)
    out = spec(np.stack([a, b])[None], np.array([[0, 1]]), np.ones((1, 2), bool))[0]
    # by hand: keep top-2, scatter, softmax each; weights (ρ/160)·(d/0.35)^1 = 0.6 and 1·(0.5/0.35)
    da = np.exp([0, 0.51, 0, 0.40, 0, 0]); da /= da.sum()
    db = np.exp([0, 0.10, 0, 0.70, 0, 0]); db /= db.sum()
    s = 0.6 * da + (0.5 / 0.35) * db
    want = np.exp(s) / np.exp(s).sum()
    np.testing.assert_allclose(out, want, rtol=1e-12)
    assert spec.width == (0.35, 0.5) and spec.width_min == 0.35 and spec.rho_max == 160


def test_vp_eq1_alpha_only_matters_where_depth_multipliers_differ():
    """On VP's V1–V5 every d_i is 0.35, so α cannot change an answer; on a pool mixing V
    (d = 0.35) and V_im (d = 0.5) variants it weighs the wider ones up (VP §IV-E)."""
    from vip_ray.core.aggregation import AggregationSpec

    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(10), size=(200, 3))
    variant, use = np.tile([0, 1, 2], (200, 1)), np.ones((200, 3), bool)
    same_width = [_member(96 + 32 * i, 0.35, 3 + i) for i in range(1, 4)]
    outs = [AggregationSpec.build("vp", 2, a, same_width, [0, 1, 2])(probs, variant, use) for a in (0.0, 1.0, 3.0)]
    np.testing.assert_allclose(outs[0], outs[1])
    np.testing.assert_allclose(outs[0], outs[2])
    mixed = [_member(96, 0.35, 4), _member(128, 0.35, 5), _member(96, 0.5, 9)]
    w = lambda a: np.array([96 / 128 * 1.0, 1.0, 96 / 128 * (0.5 / 0.35) ** a])  # noqa: E731  (eq. 1 by hand)
    for a in (0.0, 3.0):
        spec = AggregationSpec.build("vp", None, a, mixed, [0, 1, 2])
        dense = np.exp(probs) / np.exp(probs).sum(-1, keepdims=True)   # k = None: every class kept
        s = (dense * w(a)[None, :, None]).sum(1)
        np.testing.assert_allclose(spec(probs, variant, use), np.exp(s) / np.exp(s).sum(-1, keepdims=True))
    a0 = AggregationSpec.build("vp", None, 0.0, mixed, [0, 1, 2])(probs, variant, use).argmax(1)
    a3 = AggregationSpec.build("vp", None, 3.0, mixed, [0, 1, 2])(probs, variant, use).argmax(1)
    assert (a0 != a3).any()
