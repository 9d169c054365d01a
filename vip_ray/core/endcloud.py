"""The end–cloud pipeline's tables, shared by the simulator (:mod:`vip_ray.sim.pipeline`) and the
live Serve engine (:mod:`vip_ray.serve.pipeline`): from per-task records (arrays in task order)
and the planner's answers, the request table (the common columns plus ``early_exit``, ``bits``,
``partition``, stage times and waits) and one device-table row per stage (end device, uplink,
cloud) with COACH's bubbles.

``records`` holds ``arrival_s``, ``end_start_s``, ``finish_s``, ``t_end_s``, ``t_tx_s``,
``t_cloud_s``, ``wait_tx_s``, ``wait_cloud_s``, ``bytes_up``, ``bytes_down``, ``bits``,
``early_exit``; ``busy`` the busy seconds of ``end``, ``link`` and ``cloud``.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def span(records: dict) -> tuple[float, float]:
    """First arrival to last answer."""
    return float(records["arrival_s"].min()), float(np.nanmax(records["finish_s"]))


def request_table(st: Any, records: dict, pred: np.ndarray, topm_hit: np.ndarray, partition: list,
                  samples: np.ndarray, *, strategy: str, seed: int, replication: int, topm: int, engine: str):
    """``st``: the run's :class:`vip_ray.coach.runner.Setup`; per task: the answer, whether the
    label is in its top M, the partition it ran at."""
    import pandas as pd

    r = records
    n = len(r["arrival_s"])
    label = st.pool.labels[samples]
    latency = r["finish_s"] - r["arrival_s"]
    cloud_used = ~r["early_exit"] & (r["bytes_up"] > 0)
    responders = pd.Categorical(np.where(cloud_used, f"{st.end_name},{st.cloud_name}", st.end_name),
                                categories=[st.end_name, f"{st.end_name},{st.cloud_name}"])
    return pd.DataFrame({
        "replication": np.full(n, replication, dtype=np.int32),
        "seed": np.full(n, seed, dtype=np.int64),
        "request_id": np.arange(n, dtype=np.int64),
        "arrival_s": r["arrival_s"],
        "finish_s": r["finish_s"],
        "latency_s": latency,
        "emulated_latency_s": r.get("emulated_finish_s", r["finish_s"]) - r["arrival_s"],
        "answered": np.ones(n, dtype=bool),
        "deadline_met": latency <= st.deadline_s + 1e-12,
        "fallback": np.zeros(n, dtype=bool),
        "n_responders": (1 + cloud_used).astype(np.int16),
        "responders": responders,
        "sample": samples,
        "label": label,
        "prediction": pred,
        "correct_top1": pred == label,
        f"correct_top{topm}": topm_hit,
        "bytes_down": r["bytes_down"],
        "bytes_up": r["bytes_up"],
        "strategy": strategy,
        "engine": engine,
        "early_exit": r["early_exit"],
        "bits": r["bits"].astype(np.int16),
        "partition": pd.Categorical(partition),
        "t_end_s": r["t_end_s"],
        "t_tx_s": r["t_tx_s"],
        "t_cloud_s": r["t_cloud_s"],
        "wait_end_s": r["end_start_s"] - r["arrival_s"],
        "wait_tx_s": r["wait_tx_s"],
        "wait_cloud_s": r["wait_cloud_s"],
        **breakdown(r, st.end_name, st.cloud_name),
    })


def breakdown(r: dict, end_name: str, cloud_name: str) -> dict:
    """The latency breakdown (:mod:`vip_ray.core.breakdown`) of each task, summing to its latency:
    queue at the end device, its compute; when the cloud answers, the uplink after the end device is
    done (tensors sent earlier overlap with its compute), the cloud's compute (what fits after the
    last tensor arrived; the rest of that span is queueing at the cloud), the answer's downlink.
    The device that decides is the cloud when it answered, else the end device."""
    import pandas as pd

    arrival, finish = r["arrival_s"], r["finish_s"]
    end_done = r["end_start_s"] + r["t_end_s"]
    cloud = ~r["early_exit"] & (r["bytes_down"] > 0)
    zero = np.zeros(len(arrival))
    tx_done = np.where(cloud, np.maximum(r.get("tx_done_s", np.nan), end_done), end_done)
    cloud_done = np.where(cloud, r.get("cloud_done_s", np.nan), end_done)
    cloud_compute = np.where(cloud, np.minimum(r["t_cloud_s"], cloud_done - tx_done), zero)
    return {"t_down_s": finish - cloud_done,
            "t_queue_s": (r["end_start_s"] - arrival) + (cloud_done - tx_done - cloud_compute),
            "t_compute_s": (end_done - r["end_start_s"]) + cloud_compute,
            "t_paused_s": zero, "t_up_s": tx_done - end_done, "t_wait_s": zero, "t_aggregate_s": zero,
            "decisive_device": pd.Categorical(np.where(cloud, cloud_name, end_name), categories=[end_name, cloud_name])}


def device_table(st: Any, planned: Any, records: dict, busy: dict, replication: int):
    """One row per stage: the end device, the uplink, the cloud. ``bubble_s`` is the stage's idle
    time between the first arrival and the last answer (COACH's bubbles, per stage)."""
    import pandas as pd

    t0, t1 = span(records)
    width = max(t1 - t0, 1e-12)
    r = records
    n = len(r["arrival_s"])
    sent = int((r["bytes_up"] > 0).sum())
    cloud_jobs = int((~r["early_exit"] & (r["bytes_up"] > 0)).sum())
    plan = planned.plan
    end_macs = int(sum(layer.macs for layer in st.model.profile.layers if plan.cut.end[layer.index]))
    cloud_macs = int(st.model.profile.macs - end_macs)
    member = st.model.member.id
    rows = []
    for name, role, b, jobs, macs, service in (
            (st.end_name, "end", busy["end"], n, end_macs, np.nanmean(r["t_end_s"])),
            (f"{st.end_name}->{st.cloud_name}", "link", busy["link"], sent, 0,
             np.nanmean(r["t_tx_s"][r["bytes_up"] > 0]) if sent else 0.0),
            (st.cloud_name, "cloud", busy["cloud"], cloud_jobs, cloud_macs,
             np.nanmean(r["t_cloud_s"][r["t_cloud_s"] > 0]) if cloud_jobs else 0.0)):
        rows.append({"replication": replication, "device": name, "group": name, "role": role,
                     "variant": f"{member}[{role}]", "service_ms": 1e3 * float(service),
                     "macs_per_request": macs, "jobs": jobs, "served": jobs, "busy_s": b, "available_s": width,
                     "preempted": 0, "dropped": 0, "crashed": 0, "available_fraction": 1.0,
                     "utilization": b / width, "bubble_s": width - b})
    return pd.DataFrame(rows)


def placement(st: Any) -> dict:
    member = st.model.member.id
    return {st.end_name: [f"{member}[end]", 0.0], st.cloud_name: [f"{member}[cloud]", 0.0]}
