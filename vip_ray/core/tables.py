"""The result tables both engines write (simulator and Serve emulation; neither imports the other),
so that one pandas analysis (:func:`vip_ray.analysis.load`) covers both.

* ``requests.parquet`` — one row per request: :func:`request_frame` fixes the columns, their
  order and dtypes (``correct_top{m}`` is top-2 below 100 classes, top-5 from 100 on);
  ``engine`` says which engine wrote the row (``sim`` | ``serve``).
* ``devices.parquet`` — one row per device and replication: :func:`device_frame`, with the
  counters of :data:`DEVICE_STAT_KEYS`.
* ``summary.json`` — :class:`ReplicationStats` per replication, :func:`summarize` over them.

Also the per-job outcome codes (:class:`Outcome`) and the stream of test samples the requests
carry (:func:`sample_rng`), which both engines must draw alike.
"""
from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Any, Dict, Sequence

import numpy as np

if TYPE_CHECKING:  # pandas / pyarrow load on first use: the simulator's engines import this module
    import pandas as pd
    import pyarrow as pa


#: Columns every strategy's request table has (strategies may add their own after them).
REQUEST_COLUMNS = ("replication", "seed", "request_id", "arrival_s", "finish_s", "latency_s", "emulated_latency_s",
                   "answered",
                   "deadline_met", "fallback", "n_responders", "responders", "sample", "label", "prediction",
                   "correct_top1", "correct_topM", "bytes_down", "bytes_up", "strategy", "engine")
#: Columns every strategy's device table has.
DEVICE_COLUMNS = ("replication", "device", "group", "role", "variant", "service_ms", "macs_per_request",
                  "jobs", "served", "busy_s", "available_s", "preempted", "dropped", "crashed",
                  "available_fraction", "utilization")


class Outcome(IntEnum):
    """What happened to one (request, device) job. Only ``REPLIED`` has a finite ``reply_at``."""

    REPLIED = 0          # the reply reached the master (possibly after the deadline)
    LOST_DOWN = 1        # the input was lost on the downlink (loss)
    CRASHED = 2          # device down (crash / MTBF failure) on arrival, or failed while queued / serving
    PREEMPT_DROPPED = 3  # owner's work preempted the job in service, drop mode: job lost
    EXPIRED_SKIPPED = 4  # drop_expired: the request's deadline had passed when the job would start
    LOST_UP = 5          # the reply was lost on the uplink (loss)
    UNPLACED = 6         # no variant placed on the device when the job would start (slot variant -1 / inf service)
    NOT_SENT = 7         # multi-master: the request's master does not reach this device


DEVICE_STAT_KEYS = (
    "jobs",        # jobs that reached the device (not lost on the downlink)
    "served",      # jobs whose service completed
    "busy_s",      # time spent computing (incl. partial work of preempted / dropped / crashed jobs)
    "available_s", # time the device was available within [t_start, t_end)
    "preempted",   # preemptions by the owner's work (each pause in resume mode; each drop)
    "dropped",     # jobs lost to preempt-drop
    "crashed",     # jobs lost to a crash / failure (on arrival, queued or in service)
    "skipped",     # jobs skipped by drop_expired
    "unplaced",    # jobs not served because no variant was placed
    "lost_down",   # inputs lost on the downlink
    "lost_up",     # replies lost on the uplink
)
INT_STATS = frozenset({"jobs", "served", "preempted", "dropped", "crashed", "skipped", "unplaced", "lost_down",
                       "lost_up"})


def empty_device_stats(n_devices: int) -> Dict[str, np.ndarray]:
    return {k: np.zeros(n_devices, dtype=np.int64 if k in INT_STATS else np.float64)
            for k in DEVICE_STAT_KEYS}


def top_m(num_classes: int) -> int:
    """The M of the ``correct_topM`` column: VP reports top-2 for C < 100 and top-5 otherwise."""
    return min(2 if num_classes < 100 else 5, num_classes)


def sample_rng(seed: int) -> np.random.Generator:
    """The generator of the test sample each request of a replication carries: request ``i``
    gets ``integers(0, N, size=R)[i]`` (drawn in one call per chunk of requests)."""
    return np.random.default_rng([seed, 1])


def ranked(out: np.ndarray, m: int) -> np.ndarray:
    """(B, m) classes of each aggregated (B, C) vector, best first (ties: lower class first)."""
    return np.argsort(-np.nan_to_num(out, nan=-1.0), axis=1, kind="stable")[:, :m]


def responder_names(mask: np.ndarray, names: Sequence[str]) -> pd.Categorical:
    """Comma-joined responder names, built once per distinct responder set."""
    import pandas as pd

    mask = np.asarray(mask, dtype=bool).reshape(len(mask), len(names))
    d = len(names)
    if 0 < d <= 62:  # rows as integers (column 0 the highest bit): the same lexicographic order, sorted fast
        keys = mask.astype(np.int64) @ (np.int64(1) << np.arange(d - 1, -1, -1, dtype=np.int64))
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        patterns = mask[first]
    else:
        patterns, inverse = np.unique(mask, axis=0, return_inverse=True)
    labels = [",".join(n for n, on in zip(names, row) if on) for row in patterns]  # distinct rows, distinct labels
    return pd.Categorical.from_codes(inverse.ravel(), categories=labels)


def request_frame(*, replication: int, seed: int, request_id, arrival_s, finish_s, latency_s, answered,
                  deadline_met, fallback, responders: np.ndarray, device_names: Sequence[str], sample, label,
                  prediction, correct_top1, correct_topm, m: int, bytes_down, bytes_up, strategy: str,
                  engine: str, emulated_latency_s=None, master: Any = None) -> pd.DataFrame:
    """The per-request table (``responders`` is the (R, D) mask of the devices whose replies were
    used; ``master``: a multi-master world's categorical of each request's master, a last column).
    ``device_names``: the D names, or for rows of several stacked cells ``[(rows, names), ...]``.

    ``latency_s`` is what the master measured; ``emulated_latency_s`` the latency on the emulated
    timeline alone (the live engine's harness left out). In the simulator they are one and the
    same (the default)."""
    import pandas as pd

    r = len(request_id)
    if device_names and isinstance(device_names[0], tuple):   # stacked cells: [(rows, names), ...]
        from pandas.api.types import union_categoricals

        responders = np.asarray(responders, dtype=bool).reshape(r, len(device_names[0][1]))
        at, labels = 0, []
        for rows, names in device_names:
            labels.append(responder_names(responders[at:at + rows], names))
            at += rows
        responder_labels = union_categoricals(labels)
    else:
        responders = np.asarray(responders, dtype=bool).reshape(r, len(device_names))
        responder_labels = responder_names(responders, device_names)
    frame = pd.DataFrame({
        "replication": np.full(r, replication, dtype=np.int32),
        "seed": np.full(r, seed, dtype=np.int64),
        "request_id": np.asarray(request_id, dtype=np.int64),
        "arrival_s": np.asarray(arrival_s, dtype=np.float64),
        "finish_s": np.asarray(finish_s, dtype=np.float64),
        "latency_s": np.asarray(latency_s, dtype=np.float64),
        "emulated_latency_s": np.asarray(latency_s if emulated_latency_s is None else emulated_latency_s,
                                         dtype=np.float64),
        "answered": np.asarray(answered, dtype=bool),
        "deadline_met": np.asarray(deadline_met, dtype=bool),
        "fallback": np.asarray(fallback, dtype=bool),
        "n_responders": responders.sum(axis=1).astype(np.int16),
        "responders": responder_labels,
        "sample": np.asarray(sample, dtype=np.int64),
        "label": np.asarray(label, dtype=np.int64),
        "prediction": np.asarray(prediction, dtype=np.int64),
        "correct_top1": np.asarray(correct_top1, dtype=bool),
        f"correct_top{m}": np.asarray(correct_topm, dtype=bool),
        "bytes_down": np.asarray(bytes_down, dtype=np.int64),
        "bytes_up": np.asarray(bytes_up, dtype=np.int64),
        "strategy": strategy,
        "engine": engine,
    })
    if master is not None:
        frame["master"] = master
    return frame


def requests_arrow(rows: pd.DataFrame) -> pa.Table:
    """The rows as Arrow, with ``responders`` as dictionary<int32, string> so every chunk
    and replication shares one schema whatever the number of distinct responder sets."""
    import pyarrow as pa

    table = pa.Table.from_pandas(rows, preserve_index=False)
    for name in ("responders", "master", "decisive_device"):
        if name not in rows:
            continue
        cat = rows[name]
        codes = cat.cat.codes.to_numpy()   # -1: missing (a request nobody's reply decided)
        col = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32(), mask=codes < 0),
                                             pa.array([str(c) for c in cat.cat.categories], pa.string()))
        table = table.set_column(table.schema.get_field_index(name), name, col)
    return table


def device_frame(*, replication: int, names: Sequence[str], groups: Sequence[str], roles: Sequence[str],
                 variants: Sequence[str | None], service_ms: Sequence[float], macs_per_request: Sequence[int],
                 stats: Dict[str, Any], span_s: float) -> pd.DataFrame:
    """The per-device table of one replication (``stats``: :data:`DEVICE_STAT_KEYS` → per-device
    values; ``macs_per_request``: what the device's model computes per input, 0 where none is placed)."""
    import pandas as pd

    stats = {k: np.asarray(stats[k], dtype=np.int64 if k in INT_STATS else np.float64) for k in DEVICE_STAT_KEYS}
    span = np.maximum(np.asarray(span_s, dtype=np.float64), 1e-12)
    df = pd.DataFrame({"replication": replication, "device": list(names), "group": list(groups),
                       "role": list(roles), "variant": list(variants),
                       "service_ms": np.asarray(service_ms, dtype=np.float64),
                       "macs_per_request": np.asarray(macs_per_request, dtype=np.int64), **stats})
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
