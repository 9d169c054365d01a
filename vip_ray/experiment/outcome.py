"""Engine timing + the pool's prediction bank → per-request rows (vectorized, chunk by chunk)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from vip_ray.experiment.deployment import Deployment
from vip_ray.pool.report import top_m
from vip_ray.sim.result import Outcome, SimResult, finish_times
from vip_ray.tables import device_frame, ranked, request_frame

_ROW_BUDGET = 4_000_000  # floats of (rows, devices, classes) aggregated at once


#: ``combine(probs (rows, D, C), use (rows, D) bool, variant (rows, D) int) -> scores (rows, C)``;
#: an all-NaN row means the replies that arrived cannot answer the request (e.g. CP missing a group).
Combine = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def request_table(res: SimResult, dep: Deployment, probs: np.ndarray, combine: Combine, *, replication: int,
                  seed: int, sample_rng: np.random.Generator, strategy: str) -> pd.DataFrame:
    """One row per request: timing, responders, the combined prediction and its correctness.

    Each request carries a test sample drawn uniformly from the bank; its prediction combines the
    stored predictions of the variants whose replies arrived in time. Fallback when none did:
    ``local`` waits for the master's own variant, ``best_effort`` takes the first reply that
    arrives at all, ``none`` leaves the request unanswered.
    """
    sc = dep.scenario
    deadline = sc.workload.deadline_ms / 1e3
    labels = dep.pool.labels
    r, d = res.reply_at.shape
    c = probs.shape[-1]
    samples = sample_rng.integers(0, len(labels), size=r)
    finish, responded = finish_times(res, deadline)
    answered_in_time = responded.any(axis=1)
    fallback = sc.workload.fallback
    use = responded.copy()
    fb = np.zeros(r, dtype=bool)
    if fallback != "none":
        late = ~answered_in_time & (res.outcome == Outcome.REPLIED).any(axis=1)
        if fallback == "local":
            masters = [i for i, dv in enumerate(sc.devices) if dv.role == "master"]
            master = masters[0] if masters else 0  # a strategy may leave the master out (then: no fallback)
            late &= (res.outcome[:, master] == Outcome.REPLIED) & bool(masters)
            cols = np.full(r, master)
        else:
            cols = np.argmin(np.where(res.outcome == Outcome.REPLIED, res.reply_at, np.inf), axis=1)
        rows = np.flatnonzero(late)
        use[rows, cols[rows]] = True
        finish[rows] = res.reply_at[rows, cols[rows]]
        fb[rows] = True
    answered = use.any(axis=1)

    variant = np.where(use, res.variant, 0)
    pred = np.full(r, -1, dtype=np.int64)
    hit_m = np.zeros(r, dtype=bool)
    m = min(top_m(c), c)
    step = max(1, _ROW_BUDGET // max(1, d * c))
    for a in range(0, r, step):
        b = min(r, a + step)
        out = combine(probs[variant[a:b], samples[a:b, None]], use[a:b], variant[a:b])  # (rows, C)
        answered[a:b] &= ~np.isnan(out).all(axis=1)
        ok = answered[a:b]
        top = ranked(out[ok], m)
        idx = np.flatnonzero(ok) + a
        pred[idx] = top[:, 0]
        hit_m[idx] = (top == labels[samples[idx], None]).any(axis=1)
    use &= answered[:, None]
    fb &= answered
    label = labels[samples]
    latency = np.where(answered, finish - res.arrival, np.nan)
    return request_frame(
        replication=replication, seed=seed, request_id=res.request_id, arrival_s=res.arrival,
        finish_s=np.where(answered, finish, np.nan), latency_s=latency, answered=answered,
        deadline_met=answered & (latency <= deadline + 1e-12), fallback=fb, responders=use,
        device_names=dep.device_names, sample=samples, label=label, prediction=pred,
        correct_top1=answered & (pred == label), correct_topm=hit_m, m=m, bytes_down=res.bytes_down,
        bytes_up=res.bytes_up, strategy=strategy, engine="sim")


def device_table(res: SimResult, dep: Deployment, *, replication: int) -> pd.DataFrame:
    placed = [np.isfinite(s[0].service_s) for s in dep.slots]
    return device_frame(
        replication=replication, names=dep.device_names, groups=[dv.group for dv in dep.scenario.devices],
        roles=[dv.role for dv in dep.scenario.devices],
        variants=[dep.variants[s[0].variant].id if on else None for s, on in zip(dep.slots, placed)],
        service_ms=[1e3 * s[0].service_s for s in dep.slots],
        macs_per_request=[dep.variants[s[0].variant].macs if on else 0 for s, on in zip(dep.slots, placed)],
        stats=res.device_stats, span_s=res.t_end - res.t_start)
