"""The master of a fan-out: which replies it waits for, when it answers, what it answers.

Engine-neutral: the simulator and the Serve engine hand it the same per-job timing arrays
(``reply_at``, ``outcome``, ``variant`` of shape (R, D)); it returns the request table rows
(:mod:`vip_ray.core.tables`). Each request carries a test sample drawn from the pool's bank
(:func:`vip_ray.core.tables.sample_rng`); its prediction is the deployment's aggregation of the
stored predictions of the variants whose replies arrived in time.
"""
from __future__ import annotations

import math
from typing import Any, Tuple

import numpy as np

from vip_ray.core.breakdown import append_breakdown, has_stages
from vip_ray.core.deployment import FanOut
from vip_ray.core.energy import request_energy
from vip_ray.core.tables import Outcome, device_frame, ranked, request_frame
from vip_ray.core.world import SimSpec, merged_requests

_ROW_BUDGET = 4_000_000  # floats of (rows, devices, classes) aggregated at once


class Knowledge:
    """What the master knows of its devices' failures: a heartbeat every ``heartbeat_s``. A device
    that fails (crash / MTBF failure — not an owner's preemption, which a device survives) at τ
    misses the next heartbeat: the master knows it is down from τ + ``heartbeat_s`` until one
    period after its repair. ``heartbeat_s`` None: the master never learns (it waits for a crashed
    device until the deadline). The simulator's schedule itself is *not* knowledge a real master
    has; a missed heartbeat is. Failure times come from the replication's availability streams,
    the same the devices run (:func:`vip_ray.core.streams.availability_durations`)."""

    def __init__(self, devices, seed: int, heartbeat_s: float | None):
        from vip_ray.core.streams import availability_durations

        self.h = heartbeat_s
        self._gen = {}
        self._down: dict[int, list[tuple[float, float]]] = {}
        self._seen: dict[int, float] = {}
        if heartbeat_s is None:
            return
        for d, dev in enumerate(devices):
            if dev.availability.failure:
                self._gen[d] = availability_durations(dev.availability, d, seed)
                self._down[d], self._seen[d] = [], 0.0
        self._t = {d: 0.0 for d in self._gen}
        self._up = {d: True for d in self._gen}

    def _extend(self, d: int, until: float) -> None:
        """Failure intervals of device ``d`` up to emulated time ``until`` (sequential float adds, as
        the simulator's windows)."""
        gen, down = self._gen[d], self._down[d]
        while self._seen[d] <= until:
            dur = next(gen, math.inf)
            t = self._t[d]
            if dur == math.inf:
                if not self._up[d]:
                    down[-1] = (down[-1][0], math.inf)
                self._seen[d] = math.inf
                return
            end = t + dur
            if self._up[d]:
                down.append((end, math.inf))     # fails at ``end``; the repair fills the upper bound
            else:
                down[-1] = (down[-1][0], end)
            self._t[d], self._up[d], self._seen[d] = end, not self._up[d], end

    def known_down(self, d: int, t: float) -> bool:
        """Whether the master knows device ``d`` is down at ``t``."""
        if d not in self._gen:
            return False
        self._extend(d, t)
        h = self.h
        return any(a + h <= t < b + h for a, b in self._down[d])

    def mask(self, n_devices: int, arrival: np.ndarray) -> np.ndarray:
        """(R, D) bool: known down at each arrival."""
        out = np.zeros((len(arrival), n_devices), dtype=bool)
        if len(arrival):
            for d in self._gen:
                self._extend(d, float(arrival[-1]))
                for a, b in self._down[d]:
                    out[:, d] |= (arrival >= a + self.h) & (arrival < b + self.h)
        return out


def expected(devices, arrival: np.ndarray, knowledge: Knowledge | None = None) -> np.ndarray:
    """(R, D) bool: the devices the master waits for — those its own placement has running a
    variant when the request leaves it (a real master knows that: it placed them), less those
    ``knowledge`` says are down (a missed heartbeat)."""
    out = np.zeros((len(arrival), len(devices)), dtype=bool)
    for d, dev in enumerate(devices):
        starts = np.array([s.start_s for s in dev.slots])
        placed = np.array([s.placed for s in dev.slots] + [False])   # index -1: before the first slot
        out[:, d] = placed[np.searchsorted(starts, arrival, side="right") - 1]
    if knowledge is not None:
        out &= ~knowledge.mask(len(devices), np.asarray(arrival, dtype=np.float64))
    return out


def finish_times(timing: Any, deadline_s: float, waits_for: np.ndarray | None = None) -> Tuple[np.ndarray, np.ndarray]:
    """``responded = reply_at <= arrival + deadline_s``; ``finish = arrival + deadline_s`` unless
    every device the master waits for (``waits_for`` (R, D), default: all) replied in time, then
    the last of their replies (the arrival itself when it waits for nobody)."""
    due = timing.arrival + deadline_s
    responded = timing.reply_at <= due[:, None]
    wait = np.ones_like(responded) if waits_for is None else waits_for
    all_in = (responded | ~wait).all(axis=1)
    last = np.where(wait, timing.reply_at, -np.inf).max(axis=1, initial=-np.inf) if timing.reply_at.size \
        else np.full(len(due), -np.inf)
    last = np.maximum(last, timing.arrival)
    finish = np.where(all_in, last, due)
    return finish, responded


def request_table(timing: Any, dep: FanOut, *, replication: int, sample_rng: np.random.Generator,
                  engine: str = "sim", world: SimSpec | None = None, request_offset: int = 0):
    """One row per request of ``timing`` (a :class:`vip_ray.sim.SimResult`-shaped object).

    Fallback when no reply arrived by the deadline: ``local`` waits for the master's own variant,
    ``best_effort`` takes the first reply that arrives at all, ``none`` leaves it unanswered.

    ``world``: the (cell of the) world ``timing`` ran (default ``dep.world``). In a multi-master
    world each request's master waits only for the devices it reaches, and a ``master`` column
    names it; ``request_offset`` is added to the request ids (cells numbered one after another).
    """
    world = dep.world if world is None else world
    return request_table_cells([(timing, world, request_offset)], dep, replication=replication,
                               sample_rng=sample_rng, engine=engine)


def request_table_cells(parts: list, dep: FanOut, *, replication: int, sample_rng: np.random.Generator,
                        engine: str = "sim"):
    """:func:`request_table` of several cells at once: ``parts`` are ``(timing, world,
    request_offset)`` with the same number of devices, their rows stacked in order (one pass
    over many small cells of a city instead of one per cell; the test samples are drawn once for
    all the rows)."""
    from types import SimpleNamespace

    import pandas as pd

    if len(parts) == 1:
        timing, world, offset = parts[0]
    else:
        def cat(field):
            return np.concatenate([getattr(t, field) for t, _, _ in parts])

        timing = SimpleNamespace(arrival=cat("arrival"), reply_at=cat("reply_at"), variant=cat("variant"),
                                 outcome=cat("outcome"), bytes_down=cat("bytes_down"), bytes_up=cat("bytes_up"),
                                 request_id=np.concatenate([t.request_id + o for t, _, o in parts]))
        if all(has_stages(t) for t, _, _ in parts):   # each job's stage times, for the latency breakdown
            for name in ("ready_at", "start_at", "end_at", "paused_s"):
                setattr(timing, name, cat(name))
        world, offset = parts[0][1], 0
    waits, owners, names = [], [], []
    master_names: list[str] = []
    heartbeat = dep.workload.heartbeat_s
    for t, wd, _ in parts:
        # the cell's own seed drives its devices' availability: the master's knowledge follows it
        wf = expected(wd.devices, t.arrival, Knowledge(wd.devices, wd.seed, heartbeat))
        if wd.masters:
            _, owner, reach = merged_requests(wd)
            owner = owner[t.request_id]
            wf &= reach[owner]
            owners.append(owner + len(master_names))
            master_names += [m.name for m in wd.masters]
        waits.append(wf)
        names.append((len(t.arrival), [dv.name for dv in wd.devices]))
    waits_for = waits[0] if len(waits) == 1 else np.concatenate(waits)
    master_col = pd.Categorical.from_codes(np.concatenate(owners), categories=master_names) if owners else None
    w = dep.workload
    deadline = w.deadline_s
    labels = dep.labels
    probs = dep.probs
    r, d = timing.reply_at.shape
    c = probs.shape[-1]
    samples = sample_rng.integers(0, len(labels), size=r)
    control = dep.control    # an online controller (vip_ray.control): None is today's master, bit for bit
    if control is not None:
        waits_for = control.waits(timing, deadline, waits_for)
    finish, responded = finish_times(timing, deadline, waits_for)
    if control is not None:
        finish, responded = control.answer(timing, deadline, finish, responded, waits_for, probs, samples)
    answered_in_time = responded.any(axis=1)
    use = responded.copy()
    fb = np.zeros(r, dtype=bool)
    if w.fallback != "none":
        replied = timing.outcome == Outcome.REPLIED
        late = ~answered_in_time & replied.any(axis=1)
        if w.fallback == "local":
            master = None if world.masters else dep.master   # the users of a city run no variant
            if master is None:  # the strategy left the master out: nothing to fall back on
                late[:] = False
                cols = np.zeros(r, dtype=np.int64)
            else:
                late &= replied[:, master]
                cols = np.full(r, master)
        else:
            cols = np.argmin(np.where(replied, timing.reply_at, np.inf), axis=1)
        rows = np.flatnonzero(late)
        use[rows, cols[rows]] = True
        finish[rows] = timing.reply_at[rows, cols[rows]]
        fb[rows] = True
    answered = use.any(axis=1)

    variant = np.where(use, timing.variant, 0)
    pred = np.full(r, -1, dtype=np.int64)
    hit_m = np.zeros(r, dtype=bool)
    m = dep.top_m
    step = max(1, _ROW_BUDGET // max(1, d * c))
    for a in range(0, r, step):
        b = min(r, a + step)
        out = dep.aggregation(probs[variant[a:b], samples[a:b, None]], variant[a:b], use[a:b])  # (rows, C)
        answered[a:b] &= ~np.isnan(out).all(axis=1)
        ok = answered[a:b]
        top = ranked(out[ok], m)
        idx = np.flatnonzero(ok) + a
        pred[idx] = top[:, 0]
        hit_m[idx] = (top == labels[samples[idx], None]).any(axis=1)
    use &= answered[:, None]
    fb &= answered
    label = labels[samples]
    latency = np.where(answered, finish - timing.arrival, np.nan)
    frame = request_frame(
        replication=replication, seed=dep.seed, request_id=timing.request_id + offset,
        arrival_s=timing.arrival,
        finish_s=np.where(answered, finish, np.nan), latency_s=latency, answered=answered,
        deadline_met=answered & (latency <= deadline + 1e-12), fallback=fb, responders=use,
        device_names=names[0][1] if len(names) == 1 else names, sample=samples, label=label, prediction=pred,
        correct_top1=answered & (pred == label), correct_topm=hit_m, m=m, bytes_down=timing.bytes_down,
        bytes_up=timing.bytes_up, strategy=dep.strategy, engine=engine, master=master_col)
    # the energy of the work done for each request (core/energy.py), from its jobs' own times
    frame["energy_j"] = request_energy([(wd.devices, wd.workload.input_bytes, len(t.arrival)) for t, wd, _ in parts],
                                       timing, use, [wd.shared_medium for _, wd, _ in parts])
    # where the latency went (core/breakdown.py)
    return append_breakdown(frame, timing, finish, use, names[0][1] if len(names) == 1 else names)


class PerMaster:
    """Figures per master of a multi-master replication, summed chunk by chunk from the request
    rows (their ``master`` column): requests, answered, deadline met, top-1 accuracy and mean
    latency of each master, for ``summary.json``."""

    KEYS = ("requests", "answered", "deadline_met", "correct_top1", "latency_sum_s")

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.sums = {k: np.zeros(len(self.names)) for k in self.KEYS}

    def add(self, rows) -> None:
        col = rows["master"]
        g = np.array([self.index[n] for n in col.cat.categories], dtype=np.int64)[col.cat.codes.to_numpy()]
        m = len(self.names)
        lat = rows["latency_s"].to_numpy()
        for key, v in (("requests", np.ones(len(g))), ("answered", rows["answered"].to_numpy()),
                       ("deadline_met", rows["deadline_met"].to_numpy()),
                       ("correct_top1", rows["correct_top1"].to_numpy()),
                       ("latency_sum_s", np.where(np.isnan(lat), 0.0, lat))):
            self.sums[key] += np.bincount(g, weights=v.astype(np.float64), minlength=m)

    def figures(self) -> dict[str, dict[str, float]]:
        s = self.sums
        n = np.maximum(s["requests"], 1)
        ans = np.maximum(s["answered"], 1)
        return {name: {"requests": float(s["requests"][i]), "answered": float(s["answered"][i] / n[i]),
                       "deadline_met": float(s["deadline_met"][i] / n[i]),
                       "accuracy_top1": float(s["correct_top1"][i] / n[i]),
                       "latency_mean_s": float(s["latency_sum_s"][i] / ans[i]) if s["answered"][i] else float("nan")}
                for i, name in enumerate(self.names)}


def device_table(dep: FanOut, stats: dict, span_s, *, replication: int):
    """One row per device: what it ran at t = 0 and its counters over ``span_s`` (one span, or
    one per device: the cells of a multi-master world each have their own)."""
    slots = [d.first_slot for d in dep.devices]
    return device_frame(
        replication=replication, names=dep.device_names, groups=[d.group for d in dep.devices],
        roles=[d.role for d in dep.devices],
        variants=[dep.variants[s.variant].id if s else None for s in slots],
        service_ms=[1e3 * s.service_s if s else float("inf") for s in slots],
        macs_per_request=[int(dep.variants[s.variant].macs) if s else 0 for s in slots],
        stats=stats, span_s=span_s)
