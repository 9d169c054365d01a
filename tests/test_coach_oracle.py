"""COACH's offline search held against an oracle that shares none of its code.

A six-layer DAG written by hand (input → a → two parallel branches b, c → add → fc: one virtual
block of two branches, COACH Fig. 4 in miniature), made-up per-layer times, tensor sizes and a
bandwidth. The expected optimum of eq. 6 subject to eq. 1, 3 and 4 (COACH §III-B) is found here
by brute force: every downward-closed set of end layers, every bit width, the stage times and the
intra-task schedule worked in a few lines of numpy below — not by ``CostModel``, ``wire_bytes``
or ``Chain``. The reading of the paper that the oracle writes out (and the search must share):

* a tensor quantized to b bits costs ``ceil(numel · b / 8) + 8`` bytes (payload + an 8-byte
  scale/zero-point header); fp32 costs ``4 · numel``; the input frame always travels raw;
* the end device runs its layers in index order and sends each crossing tensor as soon as it is
  produced, one at a time on the link; a cloud layer starts when every message it depends on has
  arrived, the cloud running its layers in index order;
* T_t^p: transmission while the end device still computes; T_c^p: cloud compute while the link
  still transmits (between the first message's start and the last one's end);
* bits: the fewest that eq. 1 accepts and more (more bits never cost accuracy), and among them
  the one with the lowest eq. 6; fp32 only where no width up to 16 bits is accepted;
* nothing feasible (eq. 3 or eq. 4 broken everywhere): the lowest latency.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from vip_ray.coach.blocks import Chain
from vip_ray.coach.offline import CostModel, coach_search, exhaustive_search
from vip_ray.coach.profile import DagProfile, Layer

# layer: (name, inputs, numel of its output)
LAYERS = [("input", (), None), ("a", (0,), 4000), ("b", (1,), 1000), ("c", (1,), 500),
          ("add", (2, 3), 1000), ("fc", (4,), 10)]
FRAME_BYTES = 3 * 10 * 100            # the raw uint8 frame (input shape (3, 10, 100))
MS = 1e-3


def _profile() -> DagProfile:
    layers = [Layer(0, "input", "x", "input", (), (3, 10, 100), 0, 0)]
    for i, (name, inputs, numel) in enumerate(LAYERS[1:], start=1):
        layers.append(Layer(i, name, name, "other", inputs, (numel,), 0, 0))
    return DagProfile("hand", (3, 10, 100), layers, graph_module=None)


# --------------------------------------------------------------------------------------------
# The oracle: written from the paper's equations, without the project's cost code
# --------------------------------------------------------------------------------------------

def _end_sets() -> list[frozenset[int]]:
    """Every set of layers the end device can run: holds the input and each member's inputs."""
    out = []
    for flags in itertools.product((False, True), repeat=len(LAYERS) - 1):
        end = {0} | {i + 1 for i, f in enumerate(flags) if f}
        if all(set(LAYERS[i][1]) <= end for i in end):
            out.append(frozenset(end))
    return out


def _oracle_times(end: frozenset[int], bits: int, te, tc, bw):
    """(objective, latency, feasible-by-eq.4) of one partition at ``bits``, from first principles."""
    users = {j: [i for i, (_, ins, _) in enumerate(LAYERS) if j in ins] for j in range(len(LAYERS))}
    sent = sorted(j for j in end if any(u not in end for u in users[j]))
    t_e = sum(te[i] for i in end)
    t_c = sum(tc[i] for i in range(len(LAYERS)) if i not in end)
    if not sent:                                     # all local: nothing crosses
        return abs(t_e - 0) + abs(0 - t_e) + t_e, t_e, True

    def nbytes(j):
        if j == 0:
            return FRAME_BYTES
        return 4 * LAYERS[j][2] if bits == 32 else math.ceil(LAYERS[j][2] * bits / 8) + 8

    tx, free = [], 0.0
    for j in sent:                                   # produced once the end has run layers ≤ j
        start = max(sum(te[i] for i in end if i <= j), free)
        free = start + 8 * nbytes(j) / bw
        tx.append((start, free))
    arrived = dict(zip(sent, (b for _, b in tx)))
    ready = {}                                       # when a layer's output exists in the cloud
    cloud, busy = [], 0.0
    for i in range(len(LAYERS)):
        if i in end:
            ready[i] = arrived.get(i, 0.0)
            continue
        start = max([busy] + [ready[j] for j in LAYERS[i][1]])
        busy = ready[i] = start + tc[i]
        cloud.append((start, busy))
    t_t = sum(b - a for a, b in tx)
    t_t_par = sum(max(0.0, min(b, t_e) - a) for a, b in tx)
    lo, hi = tx[0][0], tx[-1][1]
    t_c_par = sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in cloud)
    biggest = max(t_e, t_t, t_c)
    objective = abs(t_e - t_c) + abs(t_t - max(t_e, t_t - t_t_par, t_c - t_c_par)) + biggest
    return objective, t_e + t_t + t_c, t_t_par + t_c_par <= biggest + 1e-12


def _oracle_best(te, tc, bw, need: dict, t_max: float):
    """Brute force: (end set, bits, objective, latency, feasible) of the best partition."""
    rows = []
    for end in _end_sets():
        quantizable = any(j != 0 for j in end if any(j in ins for i, (_, ins, _) in enumerate(LAYERS)
                                                      if i not in end))
        widths = [32] if not quantizable else ([b for b in range(2, 17) if b >= need[end]] or [32])
        for bits in widths:
            obj, lat, par_ok = _oracle_times(end, bits, te, tc, bw)
            rows.append((end, bits, obj, lat, lat <= t_max + 1e-12 and par_ok))
    feasible = [r for r in rows if r[4]]
    return min(feasible, key=lambda r: r[2]) if feasible else min(rows, key=lambda r: r[3])


# --------------------------------------------------------------------------------------------

def _search(te, tc, bw, need, t_max, method):
    chain = Chain(_profile())
    cost = CostModel(chain, np.asarray(te), np.asarray(tc), bw)

    def accept(cut, bits):                           # eq. 1 as a per-partition minimum width
        return bits >= need[frozenset(int(i) for i in np.flatnonzero(cut.end))]
    return method(cost, accept, t_max=t_max)


def test_the_oracle_sees_the_seven_partitions_of_fig_4_in_miniature():
    """Input-only, after a, after add, all local, and b / c / both inside the block."""
    ends = _end_sets()
    assert sorted(sorted(e) for e in ends) == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4],
                                               [0, 1, 2, 3, 4, 5], [0, 1, 3]]
    assert Chain(_profile()).exhaustive_size() == len(ends)


def test_hand_worked_optimum_sends_both_branches_of_the_block():
    """Worked by hand (ms; the link: 1 Mbit/s = 8 µs a byte).

    End device: a 4, b 3, c 3, add 1, fc 1. Cloud: a 0.4, b 0.3, c 0.3, add 0.1, fc 0.1.
    Every partition accepts 4 bits and more (eq. 1), no deadline.

    * input only: the frame, 3,000 B = 24 ms on the link; T_c = 1.2 → 1.2 + 0 + 24 = 25.2.
    * all local: T_e = 12 → 3 × 12 = 36.
    * after a: T_e = 4, T_c = 0.8; a's 4,000 values at 4 bits = 2,008 B = 16.064 ms →
      3.2 + 0 + 16.064 = 19.264 (more bits only lengthen the link, the largest stage).
    * after add: T_e = 11, T_c = 0.1; 1,000 values at b bits: at 10 bits 1,258 B = 10.064 ms,
      at 11 bits 11.064 ms. Below T_e the bubble B_t = 11 - T_t shrinks as bits grow:
      10.9 + 0.936 + 11 = 22.836 at 10 bits; at 11 bits the link is the largest stage, B_t = 0:
      10.9 + 0 + 11.064 = 21.964.
    * b and c on the end (the block's two tensors, b's 1,000 and c's 500 values): T_e = 10,
      T_c = 0.2. At 4 bits: b's 508 B = 4.064 ms from t = 7, c's 258 B = 2.064 ms from
      t = 11.064 (link busy until then) → T_t = 6.128, T_t^p = 3 (b's transfer while c computes),
      T_c^p = 0. B_c = 9.8, B_t = |6.128 - max(10, 3.128, 0.2)| = 3.872, max stage 10 → 23.672.
      Each extra bit adds 1,500 bits = 1.5 ms of link; at 6 bits: b 758 B = 6.064 from 7 to
      13.064, c 383 B = 3.064 → T_t = 9.128, T_t^p = 3: B_t = 0.872, → 9.8 + 0.872 + 10 = 20.672;
      at 7 bits: b 883 B = 7.064, c 446 B = 3.568, T_t = 10.632 > T_e: B_t = |10.632 - 10| =
      0.632, max stage 10.632 → 9.8 + 0.632 + 10.632 = 21.064. Best here 20.672 at 6 bits.
    * c on the end, b in the cloud: sends a (4,000 values) and c: T_e = 7, T_c = 0.5, at 4 bits
      16.064 + 2.064 ms of link: objective ≥ 6.5 + 18.128 > 24.
    * b on the end, c in the cloud: sends a and b: T_e = 7 — likewise > 20.

    So the optimum is "after a" at 4 bits, 19.264 ms — the big tensor quantized hard beats
    sending the block's two smaller tensors, whose compute leaves a long end stage.
    """
    te = [0, 4 * MS, 3 * MS, 3 * MS, 1 * MS, 1 * MS]
    tc = [0, 0.4 * MS, 0.3 * MS, 0.3 * MS, 0.1 * MS, 0.1 * MS]
    need = {e: 4 for e in _end_sets()}
    end, bits, obj, _, feasible = _oracle_best(te, tc, 1e6, need, math.inf)
    assert (sorted(end), bits, feasible) == ([0, 1], 4, True)
    assert obj == pytest.approx(19.264 * MS)
    # the block's own optimum, as worked above (the oracle agrees with the hand)
    assert _oracle_times(frozenset({0, 1, 2, 3}), 6, te, tc, 1e6)[0] == pytest.approx(20.672 * MS)
    assert _oracle_times(frozenset({0, 1, 2, 3}), 7, te, tc, 1e6)[0] == pytest.approx(21.064 * MS)
    assert _oracle_times(frozenset({0, 1, 2, 3, 4}), 11, te, tc, 1e6)[0] == pytest.approx(21.964 * MS)
    for method in (exhaustive_search, coach_search):
        best = _search(te, tc, 1e6, need, math.inf, method).best
        assert sorted(np.flatnonzero(best.cut.end)) == [0, 1] and best.bits == 4
        assert best.objective == pytest.approx(19.264 * MS)


def test_hand_worked_optimum_moves_into_the_block_when_a_needs_many_bits():
    """As above, but a's tensor keeps the accuracy only at 12 bits or more (eq. 1): after a now
    costs 6,008 B = 48.064 ms on the link → 3.2 + 48.064 = 51.264; the input frame 25.2;
    b and c on the end at 6 bits: 20.672 (worked above) — now the optimum, inside the block."""
    te = [0, 4 * MS, 3 * MS, 3 * MS, 1 * MS, 1 * MS]
    tc = [0, 0.4 * MS, 0.3 * MS, 0.3 * MS, 0.1 * MS, 0.1 * MS]
    need = {e: 12 if 1 in e and not {2, 3} <= e else 4 for e in _end_sets()}   # the cuts that send a
    end, bits, obj, _, _ = _oracle_best(te, tc, 1e6, need, math.inf)
    assert (sorted(end), bits) == ([0, 1, 2, 3], 6) and obj == pytest.approx(20.672 * MS)
    for method in (exhaustive_search, coach_search):
        best = _search(te, tc, 1e6, need, math.inf, method).best
        assert sorted(np.flatnonzero(best.cut.end)) == [0, 1, 2, 3] and best.bits == 6
        assert best.objective == pytest.approx(20.672 * MS)


@pytest.mark.parametrize("seed", range(40))
def test_searches_meet_the_brute_force_optimum_on_random_costs(seed):
    """Random times, bandwidths, eq. 1 thresholds and deadlines: both searches reach the brute
    force's optimum value (the partition may differ only on an exact tie)."""
    rng = np.random.default_rng(seed)
    te = np.r_[0.0, rng.uniform(0.5, 8.0, len(LAYERS) - 1)] * MS
    tc = te / rng.uniform(2.0, 20.0)
    bw = float(rng.choice([2e5, 1e6, 5e6, 2e7]))
    need = {e: int(rng.integers(2, 18)) for e in _end_sets()}   # 17: no width up to 16 bits
    t_max = float(rng.choice([math.inf, 15 * MS, 30 * MS]))
    end, bits, obj, lat, feasible = _oracle_best(te, tc, bw, need, t_max)
    for method in (exhaustive_search, coach_search):
        best = _search(te, tc, bw, need, t_max, method).best
        assert best.feasible == feasible
        if feasible:
            assert best.objective == pytest.approx(obj, rel=1e-9, abs=1e-12)
        else:
            assert best.times.latency == pytest.approx(lat, rel=1e-9, abs=1e-12)
