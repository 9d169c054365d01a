"""Property-based tests (hypothesis): aggregation rules and the link / availability helpers,
each checked against a property that must hold for every input or against a brute-force
computation written here, independent of the code under test.

Example counts are modest and there is no deadline, so a loaded machine cannot fail them.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vip_ray.core import netmodel
from vip_ray.core.aggregation import (
    cp_aggregate,
    majority_aggregate,
    vip_aggregate,
    vp_aggregate,
)
from vip_ray.core.world import Availability
from vip_ray.serve.engine import available_time as log_available_time
from vip_ray.sim.random_streams import Windows

PROPS = settings(max_examples=60, deadline=None)


# ----------------------------------------------------------------------------- aggregation inputs

@st.composite
def replies(draw, max_b=4, max_v=5, max_c=7, min_v=1):
    """(probs (B, V, C) rows summing to 1, responded (B, V), weights (V,) > 0)."""
    b = draw(st.integers(1, max_b))
    v = draw(st.integers(min_v, max_v))
    c = draw(st.integers(2, max_c))
    raw = draw(hnp.arrays(np.float64, (b, v, c), elements=st.floats(0.0, 1.0, allow_nan=False)))
    raw = raw + 1e-3                                           # no all-zero prediction vector
    probs = raw / raw.sum(axis=-1, keepdims=True)
    responded = draw(hnp.arrays(np.bool_, (b, v)))
    weights = draw(hnp.arrays(np.float64, (v,), elements=st.floats(0.05, 4.0, allow_nan=False)))
    return probs, responded, weights


def _vp(probs, responded, weights, k):
    return vp_aggregate(probs, k=k, weights=weights, responded=responded)


def _assert_same(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, equal_nan=True)


@PROPS
@given(replies(), st.sampled_from([None, 1, 2, 3]), st.randoms(use_true_random=False))
def test_vp_is_invariant_to_the_order_of_the_variants(rep, k, rnd):
    probs, responded, weights = rep
    perm = list(range(probs.shape[1]))
    rnd.shuffle(perm)
    _assert_same(_vp(probs, responded, weights, k), _vp(probs[:, perm], responded[:, perm], weights[perm], k))


@PROPS
@given(replies(), st.randoms(use_true_random=False))
def test_vip_and_majority_are_invariant_to_the_order_of_the_variants(rep, rnd):
    probs, responded, _ = rep
    perm = list(range(probs.shape[1]))
    rnd.shuffle(perm)
    for agg in (vip_aggregate, majority_aggregate):
        _assert_same(agg(probs, responded=responded), agg(probs[:, perm], responded=responded[:, perm]))


@PROPS
@given(replies(), st.integers(0, 3))
def test_vp_top_k_at_or_past_the_class_count_is_no_compression(rep, extra):
    probs, responded, weights = rep
    c = probs.shape[-1]
    _assert_same(_vp(probs, responded, weights, c + extra), _vp(probs, responded, weights, None))


@PROPS
@given(replies(), st.sampled_from([None, 1, 2]))
def test_vp_without_compression_is_eq1_by_numpy(rep, k):
    """VP §III-C/D written out in numpy: keep each variant's top-k (k = 1: the index only, a one-hot),
    softmax each reply, weigh, sum over the responders, softmax."""
    probs, responded, weights = rep
    b, v, c = probs.shape
    dense = np.zeros_like(probs)
    for i in range(b):
        for j in range(v):
            keep = np.argsort(-probs[i, j], kind="stable")[: (c if k is None else k)]
            dense[i, j, keep] = 1.0 if k == 1 else probs[i, j, keep]
    soft = np.exp(dense) / np.exp(dense).sum(-1, keepdims=True)
    summed = (soft * weights[None, :, None] * responded[..., None]).sum(1)
    want = np.exp(summed) / np.exp(summed).sum(-1, keepdims=True)
    want[~responded.any(1)] = np.nan
    _assert_same(_vp(probs, responded, weights, k), want)


@PROPS
@given(replies(min_v=2), st.data())
def test_a_masked_variant_is_a_dropped_variant(rep, data):
    probs, responded, weights = rep
    j = data.draw(st.integers(0, probs.shape[1] - 1))
    masked = responded.copy()
    masked[:, j] = False
    keep = [i for i in range(probs.shape[1]) if i != j]
    for k in (None, 2):
        _assert_same(_vp(probs, masked, weights, k), _vp(probs[:, keep], responded[:, keep], weights[keep], k))
    for agg in (vip_aggregate, majority_aggregate):
        _assert_same(agg(probs, responded=masked), agg(probs[:, keep], responded=responded[:, keep]))


@PROPS
@given(replies())
def test_nan_exactly_where_nobody_answered(rep):
    probs, responded, weights = rep
    nobody = ~responded.any(axis=1)
    for out in (_vp(probs, responded, weights, 2), vip_aggregate(probs, responded=responded),
                majority_aggregate(probs, responded=responded)):
        assert np.isnan(out[nobody]).all()
        assert not np.isnan(out[~nobody]).any()
        np.testing.assert_allclose(out[~nobody].sum(axis=1), 1.0)   # a distribution over the classes


@st.composite
def class_parallel(draw):
    """A partition of C classes into G groups (every class owned once), probs and a mask."""
    c = draw(st.integers(2, 8))
    g = draw(st.integers(1, c))
    owner_of = np.array(draw(st.permutations(list(range(g)) + draw(st.lists(st.integers(0, g - 1),
                                                                             min_size=c - g, max_size=c - g)))))
    classes = np.zeros((g, c), bool)
    classes[owner_of, np.arange(c)] = True
    b = draw(st.integers(1, 4))
    probs = draw(hnp.arrays(np.float64, (b, g, c), elements=st.floats(0.0, 1.0, allow_nan=False)))
    responded = draw(hnp.arrays(np.bool_, (b, g)))
    return probs, responded, classes, owner_of


@PROPS
@given(class_parallel(), st.randoms(use_true_random=False))
def test_cp_scores_by_owner_is_order_free_and_nan_unless_every_owner_answered(cp, rnd):
    probs, responded, classes, owner_of = cp
    out = cp_aggregate(probs, responded=responded, classes=classes)
    _b, g, c = probs.shape
    complete = responded.all(axis=1)                 # every group owns at least one class
    want = probs[:, owner_of, np.arange(c)]          # score of class c: its owner's probability of it
    np.testing.assert_array_equal(out[complete], want[complete])
    assert np.isnan(out[~complete]).all()
    perm = list(range(g))
    rnd.shuffle(perm)
    _assert_same(out, cp_aggregate(probs[:, perm], responded=responded[:, perm], classes=classes[perm]))


# ----------------------------------------------------------------------------- link helpers

@st.composite
def steps(draw, max_steps=5):
    """A bandwidth step function (times, rates) with times[0] = 0, strictly increasing times."""
    n = draw(st.integers(1, max_steps))
    gaps = draw(st.lists(st.floats(0.01, 5.0), min_size=n - 1, max_size=n - 1))
    times = [0.0] + list(np.cumsum(gaps))
    rates = draw(st.lists(st.sampled_from([1e3, 2e3, 5e3, 8e3, 1e4]), min_size=n, max_size=n))
    return times, rates


def _rate_at(times, rates, t):
    return rates[max(i for i, s in enumerate(times) if s <= t)]


@PROPS
@given(steps(), st.floats(0.0, 20.0), st.floats(1.0, 1e5))
def test_transfer_end_sends_exactly_the_bits_brute_force(st_, start, bits):
    """The end of a transfer is where the capacity integral from ``start`` reaches ``bits``:
    integrate the step function segment by segment (numpy), then invert on the last segment."""
    times, rates = st_
    end = netmodel.transfer_end(start, bits, times, rates, netmodel.step_at(times, start))
    edges = np.array(sorted({start, *[t for t in times if t > start]}) + [math.inf])
    r = np.array([_rate_at(times, rates, t) for t in edges[:-1]])
    seg_bits = r * np.diff(edges)                       # the last segment is infinite
    cum = np.concatenate([[0.0], np.cumsum(seg_bits)])
    i = int(np.searchsorted(cum, bits, side="left")) - 1
    want = edges[i] + (bits - cum[i]) / r[i]
    assert end == pytest.approx(want, rel=1e-9)
    assert end >= start + bits / max(rates) * (1 - 1e-12)
    assert end <= start + bits / min(rates) * (1 + 1e-12)


@PROPS
@given(st.lists(steps(), min_size=1, max_size=4), st.lists(st.floats(0.0, 30.0), min_size=1, max_size=20))
def test_min_steps_is_the_pointwise_minimum(fns, probes):
    times, rates = netmodel.min_steps(fns)
    assert times[0] == 0.0 and all(a < b for a, b in itertools.pairwise(times))
    assert all(a != b for a, b in itertools.pairwise(rates))        # squashed: every step changes the rate
    for t in probes + [s for ts, _ in fns for s in ts]:
        assert _rate_at(times, rates, t) == min(_rate_at(ts, rs, t) for ts, rs in fns)


@PROPS
@given(st.floats(1e3, 1e6), st.lists(st.tuples(st.floats(0.0, 10.0), st.sampled_from([1e3, 5e3, 1e4])),
                                     max_size=5, unique_by=lambda p: p[0]), st.floats(0.0, 12.0))
def test_bandwidth_steps_follow_the_trace(base, trace, t):
    trace = sorted(trace)
    times, rates = netmodel.bandwidth_steps(base, trace)
    before = [b for s, b in trace if s <= t]
    assert _rate_at(times, rates, t) == (before[-1] if before else base)


# ----------------------------------------------------------------------------- availability helpers

@st.composite
def down_intervals(draw, max_n=5):
    """Sorted, non-overlapping ``[start, end)`` outages (touching allowed), as a trace availability takes."""
    n = draw(st.integers(0, max_n))
    pts = sorted(draw(st.lists(st.floats(0.0, 20.0), min_size=2 * n, max_size=2 * n, unique=True)))
    return tuple((pts[2 * i], pts[2 * i + 1]) for i in range(n))


def _down_overlap(ivs, t0, t1):
    return sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in ivs)


@PROPS
@given(down_intervals(), st.floats(0.0, 25.0), st.floats(0.0, 25.0))
def test_windows_available_time_is_the_window_minus_the_outages(ivs, t0, t1):
    w = Windows(Availability("trace", intervals=ivs), 0, 0)
    want = max(0.0, t1 - t0) - (_down_overlap(ivs, t0, t1) if t1 > t0 else 0.0)
    assert w.available_time(t0, t1) == pytest.approx(want, abs=1e-9)


@PROPS
@given(down_intervals(), st.floats(0.01, 25.0))
def test_serve_log_available_time_is_the_run_minus_the_outages(ivs, end):
    """The Serve engine's change log (t, available) from a trace; same brute force."""
    log = [(0.0, True)]
    for a, b in ivs:
        log += [(a, False), (b, True)]
    assert log_available_time(log, end) == pytest.approx(end - _down_overlap(ivs, 0.0, end), abs=1e-9)


@PROPS
@given(st.integers(0, 2**16), st.floats(0.0, 30.0), st.floats(0.0, 30.0))
def test_onoff_available_time_matches_a_fine_grid(seed, t0, t1):
    """Random on/off windows: the integral agrees with counting available instants on a fine grid
    (midpoint rule, error ≤ one grid cell per window boundary)."""
    av = Availability("onoff", busy_mean_s=1.0, free_mean_s=2.0)
    got = Windows(av, 0, seed).available_time(t0, t1)
    ref = Windows(av, 0, seed)
    while ref.U[-1] < max(t0, t1) and not ref.done:
        ref.extend()
    U, V = np.array(ref.U), np.array(ref.V)
    if not t1 > t0:
        assert got == 0.0
        return
    n = 20_000
    h = (t1 - t0) / n
    mid = t0 + h * (np.arange(n) + 0.5)
    inside = ((mid[:, None] >= U[None]) & (mid[:, None] < V[None])).any(axis=1)
    boundaries = int(((U > t0) & (U < t1)).sum() + ((V > t0) & (V < t1)).sum())
    assert abs(got - inside.sum() * h) <= (boundaries + 1) * h
