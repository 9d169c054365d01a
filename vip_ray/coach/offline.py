"""COACH's offline component (COACH §III-B, eq. 1–6, Algorithm 1 lines 1–16).

* :class:`CostModel` turns a cut into a per-task *stage plan* (end-device segments, the tensors
  sent, cloud segments) and evaluates eq. 2–5 on it: stage times T_e, T_t, T_c, the parallel
  times T_t^p (transmission overlapping end compute) and T_c^p (cloud compute overlapping
  transmission) of layer-parallel execution, and the bubbles B_c, B_t.
* :func:`min_bits` is the dichotomous search for the fewest bits that keep the accuracy loss
  within ε (eq. 1), measured by an accuracy oracle (``vip_ray.coach.calibrate`` quantizes the
  real boundary activations and finishes the real forward pass).
* :func:`coach_search` is the recursive divide-and-conquer partition search: the chain of blocks
  first, then — only where a bound says a better partition may hide — each virtual block's
  branches as chain flows, one at a time (O(c·n) cuts for n branches of c layers, against the
  O(c^n) branch combinations of :func:`exhaustive_search`).
* Objective (eq. 6): ``B_c + B_t + max(T_e, T_t, T_c)`` subject to eq. 1 (accuracy), eq. 3
  (``T_e + T_t + T_c <= T_max``) and eq. 4 (``T_t^p + T_c^p <= max stage``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from vip_ray.coach.blocks import Block, Chain, Cut
from vip_ray.coach.quant import FP32, MAX_BITS, MIN_BITS, wire_bytes

#: bits recorded for a plan that quantizes nothing (all local; raw uint8 frame sent)
RAW_BITS = 8
NO_BITS = 0


@dataclass(frozen=True)
class StagePlan:
    """One task of a partition, as the pipeline runs it.

    The end device runs ``end_s[k]`` then emits message k (layer ``msg_layers[k]``), for every k;
    ``end_s[-1]`` (one more entry) is end work after the last message (normally 0). Message k
    carries ``msg_numel[k]`` values (the raw frame when ``msg_layers[k] == 0``). The cloud runs
    ``cloud_s[k]`` once message k (and everything before it) has arrived.
    A local plan has no messages and one end segment.
    """

    cut: Cut
    end_s: tuple[float, ...]
    msg_layers: tuple[int, ...]
    msg_numel: tuple[int, ...]
    cloud_s: tuple[float, ...]
    input_bytes: int

    @property
    def local(self) -> bool:
        return not self.msg_layers

    @property
    def t_end(self) -> float:
        return float(sum(self.end_s))

    @property
    def t_cloud(self) -> float:
        return float(sum(self.cloud_s))

    @property
    def quantizable(self) -> bool:
        """Whether any message is an intermediate tensor (the raw frame is sent as it is)."""
        return any(layer != 0 for layer in self.msg_layers)

    def msg_bytes(self, bits: int) -> tuple[int, ...]:
        return tuple(self.input_bytes if layer == 0 else wire_bytes(n, bits)
                     for layer, n in zip(self.msg_layers, self.msg_numel))

    def bits_label(self, bits: int) -> int:
        """Bits as tables record them: 0 nothing sent, 8 the raw frame only, else ``bits``."""
        if self.local:
            return NO_BITS
        return bits if self.quantizable else RAW_BITS


@dataclass(frozen=True)
class StageTimes:
    """Eq. 2–5 for one task of a plan at given bits and bandwidth (seconds)."""

    t_end: float
    t_tx: float
    t_cloud: float
    t_tx_par: float     # T_t^p
    t_cloud_par: float  # T_c^p
    tx_bytes: int

    @property
    def t_max_stage(self) -> float:
        return max(self.t_end, self.t_tx, self.t_cloud)

    @property
    def bubble_compute(self) -> float:           # B_c, eq. 5
        return abs(self.t_end - self.t_cloud)

    @property
    def bubble_tx(self) -> float:                # B_t, eq. 5
        return abs(self.t_tx - max(self.t_end, self.t_tx - self.t_tx_par, self.t_cloud - self.t_cloud_par))

    @property
    def objective(self) -> float:                # eq. 6
        return self.bubble_compute + self.bubble_tx + self.t_max_stage

    @property
    def latency(self) -> float:                  # eq. 3, left-hand side
        return self.t_end + self.t_tx + self.t_cloud

    @property
    def parallel_ok(self) -> bool:               # eq. 4
        return self.t_tx_par + self.t_cloud_par <= self.t_max_stage + 1e-12


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


class CostModel:
    """Per-layer end/cloud times + a bandwidth → stage plans and eq. 2–6."""

    def __init__(self, chain: Chain, t_end: np.ndarray, t_cloud: np.ndarray, bandwidth_bps: float):
        n = chain.n_layers()
        if len(t_end) != n or len(t_cloud) != n:
            raise ValueError(f"need one end and one cloud time per layer ({n}), got {len(t_end)} and {len(t_cloud)}")
        if not bandwidth_bps > 0:
            raise ValueError(f"bandwidth must be > 0 bit/s, got {bandwidth_bps}")
        self.chain = chain
        self.profile = chain.profile
        self.t_end = np.asarray(t_end, dtype=np.float64)
        self.t_cloud = np.asarray(t_cloud, dtype=np.float64)
        self.bandwidth_bps = float(bandwidth_bps)
        self._plans: dict[bytes, StagePlan] = {}

    def plan(self, cut: Cut) -> StagePlan:
        got = self._plans.get(cut.key)
        if got is not None:
            return got
        end = cut.end
        layers = self.profile.layers
        msgs = cut.tensors
        msg_of = {layer: k for k, layer in enumerate(msgs)}
        end_s, acc = [], 0.0
        for i in np.flatnonzero(end):          # layer 0 (the frame) is free; a message when sent
            acc += self.t_end[i] if i else 0.0
            if i in msg_of:
                end_s.append(acc)
                acc = 0.0
        end_s.append(acc)
        if not msgs:                       # all local: one segment
            end_s = [float(sum(end_s))]
        req = np.full(len(layers), -1, dtype=np.int64)
        cloud_s = [0.0] * len(msgs)
        for i in np.flatnonzero(~end):
            r = -1
            for j in layers[i].inputs:
                r = max(r, msg_of[j] if end[j] else int(req[j]))
            req[i] = r
            cloud_s[r] += self.t_cloud[i]
        plan = StagePlan(cut, tuple(float(x) for x in end_s), tuple(msgs),
                         tuple(layers[m].numel for m in msgs), tuple(float(x) for x in cloud_s),
                         self.profile.input_bytes)
        self._plans[cut.key] = plan
        return plan

    def times(self, plan: StagePlan, bits: int, bandwidth_bps: float | None = None) -> StageTimes:
        """Eq. 2–5: one task alone in the pipeline (the intra-task schedule gives T_t^p, T_c^p)."""
        bw = self.bandwidth_bps if bandwidth_bps is None else bandwidth_bps
        nbytes = plan.msg_bytes(bits)
        t_end = plan.t_end
        if plan.local:
            return StageTimes(t_end, 0.0, 0.0, 0.0, 0.0, 0)
        produced = np.cumsum(plan.end_s[:-1])
        tx_free = cloud_free = 0.0
        tx_iv, cloud_iv = [], []
        for k, b in enumerate(nbytes):
            start = max(produced[k], tx_free)
            tx_free = start + 8.0 * b / bw
            tx_iv.append((start, tx_free))
            c0 = max(cloud_free, tx_free)
            cloud_free = c0 + plan.cloud_s[k]
            cloud_iv.append((c0, cloud_free))
        first, last = tx_iv[0][0], tx_iv[-1][1]
        t_tx = sum(b - a for a, b in tx_iv)
        tx_par = sum(_overlap(a, b, 0.0, t_end) for a, b in tx_iv)
        cloud_par = sum(_overlap(a, b, first, last) for a, b in cloud_iv)
        return StageTimes(t_end, t_tx, plan.t_cloud, tx_par, cloud_par, int(sum(nbytes)))


# ---------------------------------------------------------------------------------------------
# Eq. 1: the dichotomous search for bits
# ---------------------------------------------------------------------------------------------


class AccuracyOracle(Protocol):
    """Accuracy of the model with a cut's crossing tensors quantized to ``bits`` (32: none)."""

    def __call__(self, cut: Cut, bits: int) -> float: ...

    @property
    def reference(self) -> float: ...


#: eq. 1 as a predicate: does ``cut`` at ``bits`` keep the accuracy loss within ε?
Accept = Callable[[Cut, int], bool]


def accept_within(oracle: AccuracyOracle, eps: float) -> Accept:
    """Eq. 1 over an oracle: ``|Acc - Acc(Q)| <= eps``."""
    def accept(cut: Cut, bits: int) -> bool:
        return oracle.reference - oracle(cut, bits) <= eps + 1e-12
    return accept


def min_bits(accept: Accept, cut: Cut, lo: int = MIN_BITS, hi: int = MAX_BITS,
             give_up: Callable[[int], bool] | None = None) -> int | None:
    """The dichotomous search: the fewest bits in [lo, hi] that ``accept`` (accuracy grows with
    precision, COACH §III-B), FP32 when none does — bisection over [lo, hi] plus FP32 as the
    always-acceptable top, so at most ⌈log2(hi - lo + 2)⌉ probes. ``give_up(lo)`` is asked
    before each probe with the current lower end; when it says yes the search stops and returns
    None (a partition that cannot win at ≥ lo bits need not have its bits pinned down)."""
    top = hi + 1                                  # stands for FP32
    while lo < top:
        if give_up is not None and give_up(lo):
            return None
        mid = (lo + top) // 2
        if accept(cut, mid):
            top = mid
        else:
            lo = mid + 1
    return FP32 if top == hi + 1 else top


# ---------------------------------------------------------------------------------------------
# Eq. 6: the search
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A partition with its bits, stage times and objective."""

    cut: Cut
    plan: StagePlan
    bits: int
    min_bits: int
    times: StageTimes
    feasible: bool      # eq. 3 and eq. 4 hold

    @property
    def objective(self) -> float:
        return self.times.objective

    def summary(self) -> dict:
        t = self.times
        return {"partition": self.cut.where, "tensors": [self.cut_layer_name(i) for i in self.cut.tensors],
                "end_layers": self.cut.n_end, "bits": self.plan.bits_label(self.bits), "min_bits": self.min_bits,
                "t_end_ms": 1e3 * t.t_end, "t_tx_ms": 1e3 * t.t_tx, "t_cloud_ms": 1e3 * t.t_cloud,
                "t_tx_par_ms": 1e3 * t.t_tx_par, "t_cloud_par_ms": 1e3 * t.t_cloud_par,
                "bubble_compute_ms": 1e3 * t.bubble_compute, "bubble_tx_ms": 1e3 * t.bubble_tx,
                "max_stage_ms": 1e3 * t.t_max_stage, "objective_ms": 1e3 * t.objective,
                "latency_ms": 1e3 * t.latency, "tx_bytes": t.tx_bytes, "feasible": self.feasible}

    def cut_layer_name(self, i: int) -> str:
        return self.plan.cut.where if i < 0 else str(i)


@dataclass
class SearchReport:
    """What a search did: the best candidate, how many partitions it evaluated (objective
    computed), how many it bounded away, how many accuracy probes (forward passes) it needed,
    and how long it took."""

    best: Candidate
    method: str
    evaluated: int = 0
    pruned: int = 0
    probes: int = 0
    seconds: float = 0.0
    space: int = 0                       # partitions in the exhaustive space
    trace: list[tuple[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"method": self.method, "evaluated": self.evaluated, "pruned": self.pruned, "probes": self.probes,
                "seconds": self.seconds, "space": self.space, "best": self.best.summary()}




def _rank(c: Candidate) -> tuple[bool, float]:
    """Feasible first, by objective; when nothing meets eq. 3/4, the lowest latency is the least bad."""
    return (not c.feasible, round(c.objective if c.feasible else c.times.latency, 12))


class _Search:
    """Shared bookkeeping of the COACH and exhaustive searches."""

    def __init__(self, cost: CostModel, accept: Accept, t_max: float, bit_grid: tuple[int, ...]):
        self.cost = cost
        self._accept = accept
        self._verdicts: dict[tuple[bytes, int], bool] = {}
        self.t_max = t_max
        self.bit_grid = bit_grid
        self.best: Candidate | None = None
        self.evaluated = 0
        self.pruned = 0
        self._minbits: dict[bytes, int] = {}
        self._seen: dict[bytes, Candidate | None] = {}

    def accept(self, cut: Cut, bits: int) -> bool:
        """Eq. 1, each (partition, bits) asked of the oracle once; ``probes`` counts the asks."""
        key = (cut.key, bits)
        if key not in self._verdicts:
            self._verdicts[key] = bool(self._accept(cut, bits))
        return self._verdicts[key]

    @property
    def probes(self) -> int:
        return len(self._verdicts)

    def _better(self, c: Candidate) -> bool:
        return self.best is None or _rank(c) < _rank(self.best)

    def candidate(self, cut: Cut, bits: int, qmin: int) -> Candidate:
        plan = self.cost.plan(cut)
        t = self.cost.times(plan, bits)
        return Candidate(cut, plan, bits, qmin, t, t.latency <= self.t_max + 1e-12 and t.parallel_ok)

    def best_bits(self, cut: Cut, qmin: int) -> Candidate:
        """Eq. 6 over the bit widths the accuracy allows (≥ qmin): more bits never cost accuracy,
        so the objective alone picks among them."""
        plan = self.cost.plan(cut)
        if not plan.quantizable:
            return self.candidate(cut, FP32, FP32)
        options = [b for b in self.bit_grid if b >= qmin] or [FP32]
        return min((self.candidate(cut, b, qmin) for b in options), key=_rank)

    def bound(self, cut: Cut, lo: int = MIN_BITS) -> float:
        """Lower bound of the objective of ``cut`` over the bit widths ≥ ``lo`` (no accuracy probe)."""
        plan = self.cost.plan(cut)
        if not plan.quantizable:
            return self.cost.times(plan, FP32).objective
        return min(self.cost.times(plan, b).objective for b in (*self.bit_grid, FP32) if b >= lo)

    def _beaten(self, cut: Cut, lo: int = MIN_BITS) -> bool:
        return self.best is not None and self.best.feasible and self.bound(cut, lo) >= self.best.objective - 1e-15

    def consider(self, cut: Cut) -> Candidate | None:
        """Evaluate a partition (once), unless a bound shows it cannot beat the incumbent."""
        key = cut.key
        if key in self._seen:
            return self._seen[key]
        plan = self.cost.plan(cut)
        qmin = FP32
        if self._beaten(cut):
            qmin = None
        elif plan.quantizable:
            # the bisection stops as soon as the bits it has ruled out leave no chance to win
            qmin = min_bits(self.accept, cut, min(self.bit_grid), max(self.bit_grid),
                            give_up=lambda lo: self._beaten(cut, lo))
        if qmin is None:
            self.pruned += 1
            self._seen[key] = None
            return None
        c = self.best_bits(cut, qmin)
        self.evaluated += 1
        self._seen[key] = c
        if self._better(c):
            self.best = c
        return c


DEFAULT_GRID = tuple(range(MIN_BITS, MAX_BITS + 1))


def coach_search(cost: CostModel, accept: Accept, *, t_max: float = math.inf,
                 bit_grid: tuple[int, ...] = DEFAULT_GRID, max_sweeps: int = 3) -> SearchReport:
    """Algorithm 1, offline: chain flow first, then the suitable virtual blocks' branches.

    ``accept(cut, bits)`` is eq. 1 (e.g. :func:`accept_within` over an oracle); bits are found
    by :func:`min_bits` for each partition that a bound does not rule out.
    """
    t0 = time.perf_counter()
    chain = cost.chain
    s = _Search(cost, accept, t_max, bit_grid)
    # the chain flow B_g (lines 4–12), most promising boundary first so the bound prunes early
    for cut in sorted(chain.boundary_cuts(), key=s.bound):
        s.consider(cut)
    queue = [b for b in chain.blocks if b.virtual]
    # lines 13–14: a virtual block is recursed into only if its bound can beat the incumbent
    queue.sort(key=lambda b: _block_bound(cost, b, bit_grid))
    for block in queue:
        if s.best is not None and s.best.feasible and _block_bound(cost, block, bit_grid) >= s.best.objective - 1e-15:
            s.pruned += 1
            continue
        _branch_descent(chain, block, s, max_sweeps)
    assert s.best is not None
    return SearchReport(s.best, "coach", s.evaluated, s.pruned, s.probes, time.perf_counter() - t0,
                        chain.exhaustive_size())


def _branch_descent(chain: Chain, block: Block, s: _Search, max_sweeps: int) -> None:
    """Each branch of the block is a chain flow: scan its cut positions with the other branches
    held, keep the best, move to the next branch; repeat while a sweep improves. Two starts —
    every branch at its entry, every branch complete — since moving one branch alone away from
    either end sends one more tensor, a valley the other start does not have to cross."""
    for start in ([0] * len(block.branches), [len(b) for b in block.branches]):
        _descend(chain, block, s, max_sweeps, list(start))


def _descend(chain: Chain, block: Block, s: _Search, max_sweeps: int, prefix: list[int]) -> None:
    best_here = math.inf
    if any(prefix):
        c = s.consider(chain.inside_cut(block, tuple(prefix)))
        best_here = c.objective if c is not None and c.feasible else math.inf
    for _ in range(max_sweeps):
        improved = False
        for k, branch in enumerate(block.branches):
            for j in range(len(branch) + 1):
                if j == prefix[k]:
                    continue
                trial = list(prefix)
                trial[k] = j
                if not any(trial):
                    continue                   # the boundary before the block, already seen
                c = s.consider(chain.inside_cut(block, tuple(trial)))
                if c is not None and c.feasible and c.objective < best_here - 1e-15:
                    best_here, prefix, improved = c.objective, trial, True
        if not improved:
            break


def _block_bound(cost: CostModel, block: Block, grid: tuple[int, ...]) -> float:
    """Lower bound of eq. 6 over every cut inside ``block``: T_e and T_c lie between their
    values at the block's two ends, and at least one of the block's tensors (the smallest, at
    the fewest bits) crosses the link."""
    te, tc = cost.t_end, cost.t_cloud
    te_a = float(te[: block.start + 1].sum())
    te_b = float(te[: block.stop].sum())
    tc_a = float(tc[block.start + 1:].sum())
    tc_b = float(tc[block.stop:].sum())
    layers = cost.profile.layers
    smallest = min(wire_bytes(layers[i].numel, min(grid)) if i else cost.profile.input_bytes
                   for i in range(block.start, block.stop))
    tt = 8.0 * smallest / cost.bandwidth_bps
    bc = max(0.0, te_a - tc_a, tc_b - te_b)
    return bc + max(te_a, tc_b, tt)


def exhaustive_search(cost: CostModel, accept: Accept, *, t_max: float = math.inf,
                      bit_grid: tuple[int, ...] = DEFAULT_GRID, scan_bits: bool = False) -> SearchReport:
    """Every partition of the DAG (all branch combinations inside every virtual block), each at
    its best bits: the reference the tests and the benchmark hold COACH's search against.
    ``scan_bits``: probe every bit width instead of bisecting (the fully exhaustive joint search)."""
    t0 = time.perf_counter()
    s = _Search(cost, accept, t_max, bit_grid)
    cuts = cost.chain.all_cuts()
    lo, hi = min(bit_grid), max(bit_grid)
    for cut in cuts:
        plan = cost.plan(cut)
        if not plan.quantizable:
            qmin = FP32
        elif scan_bits:
            ok = [b for b in range(lo, hi + 1) if s.accept(cut, b)]
            qmin = ok[0] if ok else FP32
        else:
            qmin = min_bits(s.accept, cut, lo, hi)
        c = s.best_bits(cut, qmin)
        s.evaluated += 1
        if s._better(c):
            s.best = c
    assert s.best is not None
    return SearchReport(s.best, "exhaustive", s.evaluated, 0, s.probes, time.perf_counter() - t0, len(cuts))
