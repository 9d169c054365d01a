"""``reactive``: health plus latency EWMA, from what the master sees of each device.

For every request it sent a device and expected a reply from, the master sees either a reply (a
reply time, hence a latency, in time or late) or a timeout at the deadline. Per device:

* health — after ``misses`` timeouts in a row (no reply in between) the master stops waiting for
  the device; it keeps sending it every request (each is also a ping) and waits for it again as
  soon as any reply of it arrives, late or not;
* latency — the EWMA (weight ``ewma_alpha``) of its reply latencies, in the order the replies
  arrive; while it exceeds ``slow_fraction`` × the deadline the master does not wait for it.

A request's decision uses only what arrived by the time it leaves the master. Replies that arrive
in time from a device the master does not wait for are used if they come before it answers.
The state runs on across the chunks of a replication.

``redeploy: true`` also moves variants (:func:`plan_redeployments`): a device out of the wait set
for ``redeploy_after_s`` has its variant copied to the healthy worker running the least accurate
one, at the cost of the weights' transfer plus ``load_s`` on that worker's timeline.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vip_ray.control.base import Policy, with_variant


class Reactive(Policy):
    name = "reactive"
    summary = "health + latency EWMA: stop waiting for a device after missed timeouts, wait again once it answers"

    def __init__(self, options: Any, aggregation: Any = None):
        super().__init__(options, aggregation)
        self._carry: dict[int, tuple] = {}   # device -> (streak, ewma, later events) at the end of the last chunk

    def plan_world(self, dep: Any, run: Any) -> Any:
        if not self.options.redeploy:
            return dep
        return plan_redeployments(self, dep, run)

    def waits(self, timing: Any, deadline_s: float, waits_for: np.ndarray) -> np.ndarray:
        arrival = np.asarray(timing.arrival, dtype=np.float64)
        if not len(arrival):
            return waits_for
        out = waits_for.copy()
        due = arrival + deadline_s
        cut = float(arrival[-1])
        for d in range(waits_for.shape[1]):
            stop, self._carry[d] = device_state(arrival, due, timing.reply_at[:, d], waits_for[:, d],
                                                self._carry.get(d), misses=self.options.misses,
                                                alpha=self.options.ewma_alpha,
                                                slow_s=self.options.slow_fraction * deadline_s, cut=cut)
            out[:, d] &= ~stop
        return out

    # the live master: the same event walk (device_state), one request at a time; the events it
    # has observed since the last request left wait in each device's carry
    def live_reset(self) -> None:
        self._live: dict[int, tuple] = {}

    def live_waits(self, t: float, deadline_s: float, waits_for: np.ndarray) -> np.ndarray:
        live = self.__dict__.setdefault("_live", {})
        out = waits_for.copy()
        arrival = np.array([t])
        for d in range(len(waits_for)):
            stop, live[d] = device_state(arrival, arrival + deadline_s, np.array([np.inf]), np.zeros(1, dtype=bool),
                                         live.get(d), misses=self.options.misses, alpha=self.options.ewma_alpha,
                                         slow_s=self.options.slow_fraction * deadline_s, cut=t)
            out[d] &= ~stop[0]
        return out

    def live_observe(self, device: int, at_s: float, latency_s: float | None) -> None:
        live = self.__dict__.setdefault("_live", {})
        streak, ewma, (t, miss, reply, lat) = live.get(device) or (0, np.nan, (np.zeros(0),) * 4)
        live[device] = (streak, ewma, (np.append(t, at_s), np.append(miss, latency_s is None),
                                       np.append(reply, latency_s is not None), np.append(lat, latency_s or 0.0)))


def device_state(arrival, due, reply_at, expected, carry, *, misses: int, alpha: float, slow_s: float, cut: float,
                 compiled: bool = True):
    """(R,) bool: the master does not wait for the device when each request leaves; and the carry
    for the next chunk. Events: a timeout at ``due`` (no reply by then), a reply at ``reply_at``.
    ``compiled``: the event walk in numba (:mod:`vip_ray.control.reactive_jit`) where it is
    installed, else vectorised numpy (the same decisions)."""
    streak0, ewma0, (t_old, miss_old, reply_old, lat_old) = carry or (0, np.nan, (np.zeros(0),) * 4)
    replied = np.isfinite(reply_at) & expected
    timeout = expected & ~(reply_at <= due)
    t = np.concatenate([t_old, due[timeout], reply_at[replied]])
    is_miss = np.concatenate([miss_old, np.ones(timeout.sum()), np.zeros(replied.sum())]).astype(bool)
    is_reply = np.concatenate([reply_old, np.zeros(timeout.sum()), np.ones(replied.sum())]).astype(bool)
    lat = np.concatenate([lat_old, np.zeros(timeout.sum()), (reply_at - arrival)[replied]])
    order = np.argsort(t, kind="stable")
    t, is_miss, is_reply, lat = t[order], is_miss[order], is_reply[order], lat[order]
    if compiled:
        try:
            from vip_ray.control.reactive_jit import scan
        except ImportError:   # pragma: no cover - numba missing: the numpy walk below
            scan = None
        if scan is not None:
            stop = np.empty(len(arrival), dtype=np.bool_)
            streak0, ewma0, k = scan(t, is_miss, is_reply, lat, np.asarray(arrival, dtype=np.float64), int(streak0),
                                     float(ewma0), int(misses), float(alpha), float(slow_s), float(cut), stop)
            return stop, (int(streak0), float(ewma0), (t[k:], is_miss[k:], is_reply[k:], lat[k:]))
    from scipy.signal import lfilter

    # timeouts in a row: misses counted on from the carry, minus the count at the last reply
    m_cum = streak0 + np.cumsum(is_miss)
    streak = m_cum - np.maximum.accumulate(np.where(is_reply, m_cum, 0))
    ewma = np.full(len(t), ewma0)
    x = lat[is_reply]
    if len(x):
        start = x[0] if np.isnan(ewma0) else ewma0
        y = lfilter([alpha], [1.0, -(1.0 - alpha)], x, zi=[(1.0 - alpha) * start])[0]
        ewma[is_reply] = y
        seen = np.maximum.accumulate(np.where(is_reply, np.arange(len(t)), -1))
        ewma = np.where(seen >= 0, ewma[np.maximum(seen, 0)], ewma0)
    stop_after = (streak >= misses) | (ewma > slow_s)            # after each event (NaN EWMA: not slow)
    k = np.searchsorted(t, arrival, side="right") - 1             # the last event a request's master saw
    stop0 = streak0 >= misses or (not np.isnan(ewma0) and ewma0 > slow_s)
    stop = np.where(k >= 0, stop_after[np.maximum(k, 0)], stop0)
    done = t <= cut
    last = np.flatnonzero(done)
    if len(last):
        streak0, ewma0 = int(streak[last[-1]]), float(ewma[last[-1]])
    later = ~done
    return stop, (streak0, ewma0, (t[later], is_miss[later], is_reply[later], lat[later]))


#: at most this many re-deployments per replication (each one re-runs the kernel from t = 0)
MAX_REDEPLOYMENTS = 64


def plan_redeployments(policy: Reactive, dep: Any, run: Any) -> Any:
    """``redeploy: true``: when a device has been out of the master's wait set (health: missed
    timeouts) for ``redeploy_after_s``, copy its variant to the healthy worker that runs the least
    accurate one (if that one is less accurate). The copy costs the target its variant for the
    weights' transfer over its link (variant bytes · 8 / the link's bandwidth then, plus the RTT)
    plus ``load_s``: an unplaced slot on its timeline, then the new variant.

    Epochs by re-simulation: the kernel's timelines are causal (a slot appended at ``t`` changes
    nothing before ``t``), so the run is re-simulated from the start after each decision and the
    next decision is looked for after it, on master-visible facts only."""
    from dataclasses import replace

    from vip_ray.core.master import expected

    o = policy.options
    world = dep.world
    deadline = world.workload.deadline_s
    service = np.asarray(policy.service_s)
    acc = np.array([float(getattr(v, "accuracy", 0.0) or 0.0) for v in dep.variants])
    moves: list[dict] = []
    t_from = 0.0
    handled: set = set()
    for _ in range(MAX_REDEPLOYMENTS):
        res = run(world)
        arrival = np.asarray(res.arrival, dtype=np.float64)
        if not len(arrival):
            break
        exp = expected(world.devices, arrival)
        due = arrival + deadline
        n_dev = len(world.devices)
        stop = np.zeros((len(arrival), n_dev), dtype=bool)
        for d in range(n_dev):
            stop[:, d] = device_state(arrival, due, res.reply_at[:, d], exp[:, d], None, misses=o.misses,
                                      alpha=o.ewma_alpha, slow_s=np.inf, cut=float(arrival[-1]))[0]
        idx = np.arange(len(arrival))
        rise = stop & ~np.vstack([np.zeros((1, n_dev), dtype=bool), stop[:-1]])
        start = np.maximum.accumulate(np.where(rise, idx[:, None], -1), axis=0)   # where each out-run began
        since = np.where(stop & (start >= 0), arrival[:, None] - arrival[np.maximum(start, 0)], -np.inf)
        ripe = (since >= o.redeploy_after_s) & (arrival[:, None] > t_from)
        move = None
        for r, s in zip(*np.nonzero(ripe)):
            if (s, start[r, s]) in handled:
                continue
            handled.add((s, start[r, s]))
            t = float(arrival[r])
            src = world.devices[s].slot_at(t)
            if src is None:
                continue
            v = src[0]
            targets = []
            for d, dev in enumerate(world.devices):
                cur = dev.slot_at(t)
                if d == s or stop[r, d] or dev.role != "worker" or cur is None or cur[0] == v:
                    continue
                if acc[cur[0]] < acc[v] and np.isfinite(service[d, v]):
                    targets.append((acc[cur[0]], d))
            if targets:
                move = (t, int(s), int(min(targets)[1]), int(v))
                break
        if move is None:
            break
        t, s, d, v = move
        world, cost = with_variant(world, d, t, v, float(service[d, v]), 8 * int(dep.variants[v].bytes), o.load_s)
        dev = world.devices[d]
        moves.append({"at_s": t, "from": world.devices[s].name, "to": dev.name, "variant": dep.variants[v].id,
                      "cost_s": cost})
        t_from = t
    policy.moves = moves
    meta = {**dep.meta, **policy.meta(world)}
    if moves:
        meta["redeployment_log"] = moves
    return replace(dep, world=world, meta=meta)
