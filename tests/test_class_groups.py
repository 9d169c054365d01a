"""Class groups of class parallelism (sensAI): grouping rules and the CP bank rows, in closed form."""
import itertools

import numpy as np
import pytest

from vip_ray.class_groups import (EXACT_LIMIT, affinity, balanced_groups, check_groups, class_weights,
                                  confusability_groups, cp_log_probs, group_log_probs, group_sizes, group_targets,
                                  soft_confusion, validation_indices, within_group_affinity)


def _blocks(blocks, c, strong=0.3, weak=0.01):
    """A confusion matrix whose off-diagonal mass sits inside ``blocks``."""
    m = np.full((c, c), weak)
    for b in blocks:
        for i, j in itertools.permutations(b, 2):
            m[i, j] = strong
    np.fill_diagonal(m, 1.0)
    return m


@pytest.mark.parametrize("c,g,sizes", [(10, 5, [2] * 5), (10, 3, [4, 3, 3]), (10, 4, [3, 3, 2, 2]),
                                       (7, 7, [1] * 7), (100, 8, [13] * 4 + [12] * 4)])
def test_group_sizes_are_near_equal_larger_first(c, g, sizes):
    assert group_sizes(c, g) == sizes and sum(sizes) == c


def test_balanced_groups_are_contiguous_blocks():
    assert balanced_groups(10, 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert balanced_groups(10, 5) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    with pytest.raises(ValueError, match="groups must be in 1..10"):
        balanced_groups(10, 11)


def test_confusable_pairs_go_together():
    # 4 classes: 0 is confused with 2, 1 with 3 -> {0, 2}, {1, 3}
    m = np.array([[90, 1, 9, 0], [0, 95, 0, 5], [8, 0, 92, 0], [1, 6, 0, 93]], dtype=float)
    assert confusability_groups(m, 2) == [[0, 2], [1, 3]]


def test_ten_classes_in_five_permuted_pairs():
    pairs = [(0, 7), (1, 4), (2, 9), (3, 5), (6, 8)]
    assert confusability_groups(_blocks(pairs, 10), 5) == sorted(sorted(p) for p in pairs)


def test_unequal_sizes_put_the_confusable_triple_together():
    # 10 in 3 groups: sizes 4, 3, 3; blocks {1, 5, 8, 9}, {0, 3, 6}, {2, 4, 7}
    blocks = [(1, 5, 8, 9), (0, 3, 6), (2, 4, 7)]
    assert confusability_groups(_blocks(blocks, 10), 3) == [[0, 3, 6], [1, 5, 8, 9], [2, 4, 7]]


def test_asymmetric_confusion_counts_both_directions():
    # 0 -> 1 is confused one way only, 2 <-> 3 a little both ways: A(0,1) = 0.5 > A(2,3) = 0.2
    m = np.array([[0.5, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 0.9, 0.1], [0, 0, 0.1, 0.9]])
    a = affinity(m)
    assert a[0, 1] == a[1, 0] == pytest.approx(0.5) and a[2, 3] == pytest.approx(0.2)
    assert np.all(np.diag(a) == 0)
    assert confusability_groups(m, 2) == [[0, 1], [2, 3]]


def _brute_force_best(a, sizes):
    """Every assignment of classes to group labels with the right sizes (the test's own search)."""
    c, best = len(a), -1.0
    labels = [g for g, s in enumerate(sizes) for _ in range(s)]
    for perm in set(itertools.permutations(labels)):
        groups = [[i for i in range(c) if perm[i] == g] for g in range(len(sizes))]
        best = max(best, within_group_affinity(a, groups))
    return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("c,g", [(6, 2), (6, 3), (7, 3)])
def test_exact_grouping_is_optimal_on_random_matrices(seed, c, g):
    m = np.random.default_rng(seed).random((c, c)) ** 3
    groups = confusability_groups(m, g)
    check_groups(groups, c)
    assert sorted(map(len, groups), reverse=True) == group_sizes(c, g)
    assert within_group_affinity(affinity(m), groups) == pytest.approx(_brute_force_best(affinity(m), group_sizes(c, g)))


def test_many_classes_use_local_search_and_still_find_planted_groups():
    # 40 classes in 8 groups: more balanced partitions than EXACT_LIMIT, so the local search runs
    rng = np.random.default_rng(3)
    perm = rng.permutation(40)
    blocks = [tuple(perm[i:i + 5]) for i in range(0, 40, 5)]
    m = _blocks(blocks, 40, strong=0.2, weak=0.0) + rng.random((40, 40)) * 0.02
    from vip_ray.class_groups import _count_partitions
    assert _count_partitions(group_sizes(40, 8)) > EXACT_LIMIT
    groups = confusability_groups(m, 8)
    assert groups == sorted((sorted(int(x) for x in b) for b in blocks), key=lambda g: g[0])
    assert confusability_groups(m, 8) == groups  # deterministic


def test_groups_partition_every_class_once():
    for c, g in [(10, 2), (10, 3), (10, 4), (10, 5), (13, 4)]:
        groups = confusability_groups(np.random.default_rng(c * g).random((c, c)), g)
        assert sorted(x for grp in groups for x in grp) == list(range(c))
    with pytest.raises(ValueError, match=r"missing \[2\], repeated or out of range \[1\]"):
        check_groups([[0, 1], [1, 3]], 4)


def test_soft_confusion_is_mean_predicted_distribution_per_class():
    probs = np.array([[0.8, 0.2, 0.0], [0.6, 0.4, 0.0], [0.1, 0.1, 0.8]])
    with pytest.raises(ValueError, match=r"classes \[1\] have no validation sample"):
        soft_confusion(probs, np.array([0, 0, 2]), 3)  # class 1 has no sample
    conf = soft_confusion(probs, np.array([0, 1, 2]), 3)
    np.testing.assert_allclose(conf, probs)
    conf = soft_confusion(np.vstack([probs, probs[:1]]), np.array([0, 1, 2, 0]), 3)
    np.testing.assert_allclose(conf[0], [0.8, 0.2, 0.0])
    np.testing.assert_allclose(conf.sum(1), 1.0)


def test_validation_split_is_stratified_seeded_and_disjoint():
    labels = np.repeat(np.arange(5), 40)
    fit, val = validation_indices(labels, 0.1, seed=3)
    assert len(set(fit) & set(val)) == 0 and len(fit) + len(val) == 200
    assert np.bincount(labels[val]).tolist() == [4] * 5
    again = validation_indices(labels, 0.1, seed=3)
    assert np.array_equal(again[1], val) and not np.array_equal(validation_indices(labels, 0.1, seed=4)[1], val)


def test_group_targets_relabel_to_group_positions_and_other():
    y = np.array([0, 3, 5, 9, 7])
    assert group_targets(y, [7, 3], 10).tolist() == [2, 1, 2, 2, 0]
    import torch
    assert group_targets(torch.tensor(y), [7, 3], 10).tolist() == [2, 1, 2, 2, 0]


def test_cp_bank_rows_closed_form_and_inverse():
    z = np.array([[2.0, 0.0, 1.0], [-1.0, 3.0, 0.5]])  # group {4, 1} + other, C = 5
    rows = cp_log_probs(z, [4, 1], 5)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(rows[:, 4], np.log(p[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(rows[:, 1], np.log(p[:, 1]), rtol=1e-6)
    for c in (0, 2, 3):
        np.testing.assert_allclose(rows[:, c], np.log(p[:, 2] / 3), rtol=1e-6)
    np.testing.assert_allclose(np.exp(rows).sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.exp(group_log_probs(rows, [4, 1])), p, rtol=1e-5)
    with pytest.raises(ValueError, match=r"group logits must be \(N, 3\)"):
        cp_log_probs(z[:, :2], [4, 1], 5)


def test_class_weights_balance_other_or_take_a_number():
    t = np.array([0] * 10 + [1] * 10 + [2] * 80)  # two classes + a dominant "other"
    w = class_weights(t, 3, "balanced")
    np.testing.assert_allclose(w, [100 / 30, 100 / 30, 100 / 240])
    np.testing.assert_allclose(w * np.bincount(t), [100 / 3] * 3)  # every output weighs the same in the loss
    np.testing.assert_allclose(class_weights(t, 3, 0.5), [1, 1, 0.5])
