"""``adaptive_k``: the master picks each device's top-k (VP §III-C reply compression) from the
up-link bandwidth it measures, so that a slow up-link carries a smaller reply.

A reply of top-k carries h(k) = min(k·(size(fp)+1), size(fp)·C) bytes (k > 1; 1 byte for k = 1,
VP eq. 3); on a device's up-link of bandwidth ``b`` its serialisation takes 8·h(k)/b seconds.
Per device the master keeps the largest ``k`` in [``k_min``, ``k_max``] whose serialisation fits
``k_budget`` × the deadline (``k_min`` when none does); the master's own variant (no link) keeps
``k_max``. ``k_max`` defaults to ``strategy.k`` (the rule only shrinks it); a larger one lets a
fast link carry more of each reply.

What the master measures: each device's up-link bandwidth when it deploys (a probe transfer at
t = 0; a real master measures the same). The decision is made once per replication, before any
engine computes a timeline (a reply's size sets its up-link time): the deployment's world carries
each device's reply size and its aggregation each device's k
(:attr:`vip_ray.core.aggregation.AggregationSpec.k_device`), so the simulator's kernels and the
Serve engine both honour it, and a request pays nothing for it at the master. A bandwidth that
changes during the run (a trace) is not followed: k stays as measured at t = 0.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from vip_ray.core.aggregation import reply_bytes


def up_bandwidth_bps(world: Any) -> np.ndarray:
    """(D,) each device's up-link bandwidth at t = 0 (bit/s; inf: no link, the master's own)."""
    out = np.full(len(world.devices), np.inf)
    for d, dev in enumerate(world.devices):
        if dev.link is not None:
            times, rates = dev.link.steps()
            out[d] = rates[int(np.searchsorted(times, 0.0, side="right")) - 1]
    return out


def choose_k(bandwidth_bps: np.ndarray, *, deadline_s: float, budget: float, k_min: int, k_max: int,
             num_classes: int) -> np.ndarray:
    """(D,) the largest k in [k_min, k_max] whose reply serialises within ``budget`` × the deadline
    on each bandwidth (k_min where none does)."""
    ks = np.arange(k_min, k_max + 1)
    bits = 8.0 * np.array([reply_bytes(int(k), num_classes) for k in ks])
    fits = bits[None, :] / np.asarray(bandwidth_bps, dtype=np.float64)[:, None] <= budget * deadline_s   # (D, K)
    best = np.where(fits, ks[None, :], k_min).max(axis=1)
    return best.astype(np.int64)


def device_k(options: Any, world: Any, agg: Any) -> tuple[int, ...]:
    """Each device's k for ``options`` (``k_budget``, ``k_min``, ``k_max``) on ``world``."""
    c = int(agg.num_classes)
    k_max = options.k_max if options.k_max is not None else (agg.k if agg.k is not None else c)
    k_max = min(int(k_max), c)
    k_min = min(int(options.k_min), k_max)
    ks = choose_k(up_bandwidth_bps(world), deadline_s=world.workload.deadline_s, budget=options.k_budget,
                  k_min=k_min, k_max=k_max, num_classes=c)
    return tuple(int(k) for k in ks)


def with_device_k(options: Any, world: Any, agg: Any) -> Any:
    """``agg`` with each device's k picked on ``world`` (the world is then built again with the
    reply sizes these give: :func:`vip_ray.scenario.world.world`)."""
    return replace(agg, k_device=device_k(options, world, agg))
