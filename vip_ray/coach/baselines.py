"""The end–cloud baselines COACH is compared with (COACH §IV-A), as partition planners over
the same cost model.

* **Neurosurgeon** (Kang et al., ASPLOS'17): one split of the layer chain, the one with the lowest
  single-task latency T_e + T_t + T_c; fp32 tensors; no pipeline awareness.
* **DADS** (Hu et al., INFOCOM'19): a minimum s–t cut of the DAG. Light load: edge capacities are
  the end time, the cloud time and the transmission time (one per tensor, however many users),
  so the cut minimises latency. Heavy load (the light-load cut's bottleneck stage exceeds the
  frame interval): the cut among a family of min cuts with stage-weighted capacities whose
  largest stage is smallest. fp32.
* **SPINN** (Laskaridis et al., MobiCom'20): early exits + fixed 8-bit quantization; the split,
  among the boundaries near its exits, that minimises the expected latency given the exit rate;
  re-chosen per task as the bandwidth changes.
* **JPS** (Duan & Wu, TMC'23): pipeline-aware split for the end-computation and transmission
  stages — the cut minimising max(T_e, T_t) (the cloud stage is not modelled); fp32.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from vip_ray.coach.blocks import Chain, Cut
from vip_ray.coach.offline import CostModel, StageTimes
from vip_ray.coach.quant import FP32


def _scan(cost: CostModel, cuts: list[Cut], bits: int, key) -> tuple[Cut, StageTimes]:
    best = None
    for cut in cuts:
        t = cost.times(cost.plan(cut), bits)
        k = key(t)
        if best is None or k < best[0]:
            best = (k, cut, t)
    assert best is not None
    return best[1], best[2]


def neurosurgeon(cost: CostModel) -> tuple[Cut, StageTimes]:
    """The chain split with the lowest latency (fp32)."""
    return _scan(cost, cost.chain.boundary_cuts(), FP32, lambda t: (round(t.latency, 12),))


def jps(cost: CostModel) -> tuple[Cut, StageTimes]:
    """The chain split whose end-compute/transmission pipeline is best balanced: min max(T_e, T_t),
    then the lowest latency (fp32)."""
    return _scan(cost, cost.chain.boundary_cuts(), FP32,
                 lambda t: (round(max(t.t_end, t.t_tx), 12), round(t.latency, 12)))


def _min_cut(chain: Chain, we: np.ndarray, wc: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """End-side mask of the minimum s–t cut: cutting s→v puts v on the cloud (pays ``wc[v]``),
    v→t puts it on the end (pays ``we[v]``); a tensor's transmission ``wt[u]`` is paid once via
    an auxiliary node; infinite reverse edges keep the end side closed under predecessors.
    Solved with scipy's max flow (Dinic) on int32 capacities (times scaled to fit)."""
    prof = chain.profile
    n = chain.n_layers()
    s, t = n, n + 1                        # nodes: layers, s, t, then one auxiliary per tensor
    total = float(np.sum(we) + np.sum(wc) + np.sum(wt))
    scale = min(1e9, (2**31 - 2) / 2 / max(total, 1e-30))
    we, wc, wt = (np.rint(np.asarray(w, dtype=np.float64) * scale).astype(np.int64) for w in (we, wc, wt))
    big = int(we.sum() + wc.sum() + wt.sum()) + 1   # "infinite": more than any finite cut
    rows, cols, caps = [], [], []

    def edge(a: int, b: int, c: int) -> None:
        rows.append(a), cols.append(b), caps.append(c)

    aux = n + 2
    for layer in prof.layers:
        v = layer.index
        edge(s, v, big if v == 0 else int(wc[v]))   # the frame is on the end device
        edge(v, t, int(we[v]))
        if prof.users[v]:
            edge(v, aux, int(wt[v]))
            for u in prof.users[v]:
                edge(aux, u, big)
                edge(u, v, big)                      # u on the end ⇒ its input v on the end
            aux += 1
    size = aux
    cap = sp.csr_matrix((np.array(caps, dtype=np.int64), (rows, cols)), shape=(size, size))
    cap.sum_duplicates()
    cap = cap.astype(np.int32)
    flow = maximum_flow(cap, s, t).flow             # antisymmetric: cap - flow is the residual graph
    residual = (cap.astype(np.int64) - flow.astype(np.int64)).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reach = breadth_first_order(residual, s, directed=True, return_predecessors=False)
    end = np.zeros(n, dtype=bool)
    end[reach[reach < n]] = True
    return end


def dads(cost: CostModel, frame_interval_s: float | None = None) -> tuple[Cut, StageTimes, str]:
    """DADS' min-cut partition; returns (cut, times, mode) with mode ``light`` or ``heavy``."""
    chain, prof = cost.chain, cost.profile
    tx = np.array([8.0 * prof.tensor_bytes(i, FP32) / cost.bandwidth_bps for i in range(chain.n_layers())])
    light = chain.cut_from_end(_min_cut(chain, cost.t_end, cost.t_cloud, tx), "DADS min cut (light load)")
    t_light = cost.times(cost.plan(light), FP32)
    if frame_interval_s is None or t_light.t_max_stage <= frame_interval_s:
        return light, t_light, "light"
    best = (t_light.t_max_stage, light, t_light)
    for a in (0.25, 0.5, 1.0, 2.0, 4.0):          # stage weights: trade end work against the link
        for b in (0.25, 0.5, 1.0, 2.0, 4.0):
            end = _min_cut(chain, a * cost.t_end, cost.t_cloud, b * tx)
            cut = chain.cut_from_end(end, f"DADS min cut (heavy load, w_end={a}, w_tx={b})")
            t = cost.times(cost.plan(cut), FP32)
            if t.t_max_stage < best[0] - 1e-15:
                best = (t.t_max_stage, cut, t)
    return best[1], best[2], "heavy"


def spinn_candidates(chain: Chain, n_exits: int = 8) -> list[Cut]:
    """Chain splits near evenly spaced fractions of the model's work (where SPINN places its
    exits), plus all-cloud and all-local."""
    work = chain.profile.work()
    cum = np.cumsum(work) / work.sum()
    bounds = chain.boundaries
    picks = {bounds[0], chain.n_layers() - 1}
    for f in np.linspace(0, 1, n_exits + 2)[1:-1]:
        picks.add(min(bounds, key=lambda p: abs(cum[p] - f)))
    return [chain.boundary_cut(p) for p in sorted(picks)]
