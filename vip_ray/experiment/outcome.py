"""Engine timing + the pool's prediction bank → per-request rows (vectorized, chunk by chunk)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from vip_ray.experiment.deployment import Deployment
from vip_ray.pool.report import top_m
from vip_ray.sim.result import Outcome, SimResult, finish_times

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
        top = np.argsort(-np.nan_to_num(out[ok], nan=-1.0), axis=1, kind="stable")[:, :m]
        idx = np.flatnonzero(ok) + a
        pred[idx] = top[:, 0]
        hit_m[idx] = (top == labels[samples[idx], None]).any(axis=1)
    use &= answered[:, None]
    fb &= answered
    label = labels[samples]
    latency = np.where(answered, finish - res.arrival, np.nan)
    return pd.DataFrame({
        "replication": np.full(r, replication, dtype=np.int32),
        "seed": np.full(r, seed, dtype=np.int64),
        "request_id": res.request_id,
        "arrival_s": res.arrival,
        "finish_s": np.where(answered, finish, np.nan),
        "latency_s": latency,
        "answered": answered,
        "deadline_met": answered & (latency <= deadline + 1e-12),
        "fallback": fb,
        "n_responders": use.sum(axis=1).astype(np.int16),
        "responders": responder_names(use, dep.device_names),
        "sample": samples,
        "label": label,
        "prediction": pred,
        "correct_top1": answered & (pred == label),
        f"correct_top{m}": hit_m,
        "bytes_down": res.bytes_down,
        "bytes_up": res.bytes_up,
        "strategy": strategy,
    })


def responder_names(mask: np.ndarray, names: list[str]) -> pd.Categorical:
    """Comma-joined responder names, built once per distinct responder set."""
    patterns, inverse = np.unique(mask, axis=0, return_inverse=True)
    labels = [",".join(n for n, on in zip(names, row) if on) for row in patterns]  # distinct rows, distinct labels
    return pd.Categorical.from_codes(inverse.ravel(), categories=labels)


def device_table(res: SimResult, dep: Deployment, *, replication: int) -> pd.DataFrame:
    stats = {k: np.asarray(v) for k, v in res.device_stats.items()}
    span = max(res.t_end - res.t_start, 1e-12)
    df = pd.DataFrame({"replication": replication, "device": dep.device_names,
                       "group": [dv.group for dv in dep.scenario.devices],
                       "role": [dv.role for dv in dep.scenario.devices],
                       "variant": [dep.variants[s[0].variant].id if np.isfinite(s[0].service_s) else None
                                   for s in dep.slots],
                       "service_ms": [1e3 * s[0].service_s for s in dep.slots],
                       "macs_per_request": [dep.variants[s[0].variant].macs if np.isfinite(s[0].service_s) else 0
                                            for s in dep.slots], **stats})
    df["available_fraction"] = df["available_s"] / span
    df["utilization"] = df["busy_s"] / span
    return df


class ReplicationStats:
    """Run-level figures of one replication, accumulated chunk by chunk (memory: 4 bytes per
    answered request, for the latency quantiles)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.latencies: list[np.ndarray] = []

    def add(self, chunk: pd.DataFrame) -> None:
        topm = next(c for c in chunk.columns if c.startswith("correct_top") and c != "correct_top1")
        self.topm = topm[len("correct_"):]
        self.n += len(chunk)
        for key, values in (("answered", chunk["answered"]), ("deadline_met", chunk["deadline_met"]),
                            ("accuracy_top1", chunk["correct_top1"]), (f"accuracy_{self.topm}", chunk[topm]),
                            ("responders_mean", chunk["n_responders"]),
                            ("bytes_per_request", chunk["bytes_up"] + chunk["bytes_down"])):
            self.sums[key] = self.sums.get(key, 0.0) + float(values.sum())
        lat = chunk["latency_s"].to_numpy()
        self.latencies.append(lat[~np.isnan(lat)].astype(np.float32))

    def figures(self) -> dict[str, float]:
        lat = np.concatenate(self.latencies) if self.latencies else np.zeros(0, np.float32)
        out = {"requests": float(self.n), **{k: v / max(self.n, 1) for k, v in self.sums.items()}}
        nan = float("nan")
        out.update(latency_p50_s=float(np.quantile(lat, 0.5)) if len(lat) else nan,
                   latency_p99_s=float(np.quantile(lat, 0.99)) if len(lat) else nan,
                   latency_mean_s=float(lat.mean(dtype=np.float64)) if len(lat) else nan)
        return out


def summarize(replications: list[dict[str, float]], deadline_s: float) -> dict[str, Any]:
    """Run-level figures per replication, their mean and a 95 % confidence half-width
    (normal approximation over replications) where there are several."""
    out: dict[str, Any] = {"replications": len(replications), "deadline_s": deadline_s, "metrics": {}}
    for col in replications[0]:
        vals = np.array([r[col] for r in replications], dtype=float)
        ok = vals[~np.isnan(vals)]  # latency is NaN in a replication that answered nothing
        half = float(1.96 * ok.std(ddof=1) / np.sqrt(len(ok))) if len(ok) > 1 else None
        out["metrics"][col] = {"mean": float(ok.mean()) if len(ok) else float("nan"), "ci95": half,
                               "per_replication": [float(v) for v in vals]}
    return out
