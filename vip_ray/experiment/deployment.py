"""From a scenario and a pool to the simulator's numeric spec (units: s, bit/s, bytes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vip_ray.aggregation import reply_bytes
from vip_ray.placement import DeviceInfo, VariantInfo, place
from vip_ray.pool import MemberRecord, Pool
from vip_ray.scenario import Scenario
from vip_ray.scenario.load import input_bytes, selected_variants
from vip_ray.sim import spec as S


@dataclass
class Deployment:
    """Everything one replication of a scenario needs besides the engine."""

    scenario: Scenario
    pool: Pool
    variants: list[MemberRecord]        # spec variant index -> pool member
    placement: list[int]                # initial variant index per device (scenario device order)
    slots: list[tuple[S.VariantSlot, ...]]
    spec: S.SimSpec
    service_s: np.ndarray               # (D, V) mean compute time of every variant on every device
    k: int | None                       # top-k of the replies (None = full vector)
    reply_bytes: int

    @property
    def device_names(self) -> list[str]:
        return [d.name for d in self.scenario.devices]


def _k(scenario: Scenario) -> int | None:
    """Reply compression: VP top-k; VIP averages full probability vectors; majority sends one index."""
    agg = scenario.strategy.aggregator
    if agg == "majority":
        return 1
    if agg == "vip":
        return None
    return scenario.strategy.top_k


def _availability(av: Any) -> S.Availability:
    kind = av.kind
    if kind == "onoff":
        return S.Availability("onoff", busy_mean_s=av.busy_mean_s, free_mean_s=av.free_mean_s,
                              distribution=av.distribution, weibull_shape=av.weibull_shape or 1.0, mode=av.mode)
    if kind == "trace":
        return S.Availability("trace", intervals=tuple(tuple(iv) for iv in av.intervals), mode=av.mode)
    if kind == "crash":
        return S.Availability("crash", crash_at_s=av.at_s)
    if kind == "mtbf":
        return S.Availability("mtbf", mtbf_s=av.mtbf_s, mttr_s=av.mttr_s)
    return S.Availability("always")


def _link(link: Any) -> S.LinkSpec:
    trace = tuple((t, mbps * 1e6) for t, mbps in (link.bandwidth_trace.points if link.bandwidth_trace else ()))
    return S.LinkSpec(rtt_s=link.rtt_ms / 1e3, bandwidth_bps=link.bandwidth_mbps * 1e6, loss=link.loss or 0.0,
                      bandwidth_trace=trace)


def _down_at(av: Any, t: float) -> bool:
    """Known (non-random) unavailability at time t: crashed, or inside a trace interval."""
    if av.kind == "crash":
        return t >= av.at_s
    if av.kind == "trace":
        return any(a <= t < b for a, b in av.intervals)
    return False


def _change_times(scenario: Scenario) -> list[float]:
    times = set()
    for d in scenario.devices:
        if d.availability.kind == "crash":
            times.add(float(d.availability.at_s))
        elif d.availability.kind == "trace":
            for a, b in d.availability.intervals:
                times.update((float(a), float(b)))
    return sorted(times | {0.0})


def build_deployment(scenario: Scenario, pool: Pool, *, seed: int) -> Deployment:
    variants = selected_variants(scenario, pool)
    names = [d.name for d in scenario.devices]
    n_classes = pool.num_classes
    k = _k(scenario)
    rbytes = reply_bytes(k, n_classes)
    in_bytes = input_bytes(scenario, pool)
    service = np.array([[d.service_ms(macs=v.macs, model=v.model, member_id=v.id, family=v.family) / 1e3
                         if d.can_run(model=v.model, member_id=v.id, family=v.family) else np.inf
                         for v in variants] for d in scenario.devices])
    infos = []
    for i, d in enumerate(scenario.devices):
        net = 0.0
        if d.role != "master":
            steps = d.link.bandwidth_trace.points if d.link.bandwidth_trace else []
            mbps = steps[0][1] if steps and steps[0][0] == 0 else d.link.bandwidth_mbps  # bandwidth at t=0
            net = d.link.rtt_ms / 1e3 + 8 * (in_bytes + rbytes) / (mbps * 1e6)
        infos.append(DeviceInfo(d.name, macs_per_s=d.speed() or 1.0, memory_mb=d.memory_mb or float("inf"),
                                network_s=net, is_master=d.role == "master",
                                latency_s={v.id: float(service[i, j]) for j, v in enumerate(variants)}))
    vinfos = [VariantInfo(j, v.id, v.model, v.macs, v.bytes, v.accuracy, v.segment) for j, v in enumerate(variants)]
    deadline = scenario.workload.deadline_ms / 1e3
    pol, params = scenario.placement.policy, dict(scenario.placement.params or {})
    initial = place(pol, infos, vinfos, deadline_s=deadline, params=params)
    timeline = [(0.0, initial)]
    if scenario.placement.dynamic:
        # VIP's dynamic variant management: at every scheduled availability change (crash, trace
        # interval edges, t=0 included) re-place among the devices that are up. Random on/off and
        # MTBF periods are drawn inside the engine and are not known here.
        timeline = []
        for t in _change_times(scenario):
            alive = [i for i, d in enumerate(scenario.devices) if not _down_at(d.availability, t)]
            sub = place(pol, [infos[i] for i in alive], vinfos, deadline_s=deadline, params=params) if alive else []
            now = [-1] * len(scenario.devices)
            for i, v in zip(alive, sub):
                now[i] = v
            if not timeline or now != timeline[-1][1]:
                timeline.append((t, now))
        initial = timeline[0][1]
    slots, devices = [], []
    for i, d in enumerate(scenario.devices):
        own = []
        for t, assignment in timeline:
            v = assignment[i]
            if v >= 0 and (not own or own[-1].variant != v):
                own.append(S.VariantSlot(t, v, float(service[i, v])))
        if not own:  # nothing fits: the device idles (its column never answers)
            own = [S.VariantSlot(0.0, 0, float("inf"))]
        slots.append(tuple(own))
        devices.append(S.DeviceSpec(
            name=d.name, slots=tuple(own), service_dist=d.service_dist, jitter_cv=d.jitter_cv,
            straggler_prob=d.straggler.prob, straggler_factor=d.straggler.factor,
            availability=_availability(d.availability), link=None if d.role == "master" else _link(d.link),
            reply_bytes=rbytes))
    w = scenario.workload
    if w.arrival == "trace":
        wl = S.WorkloadSpec("trace", times=tuple(w.trace.times_s), n_requests=w.requests, duration_s=w.duration_s,
                            deadline_s=deadline, input_bytes=in_bytes)
    else:
        wl = S.WorkloadSpec(w.arrival, rate_hz=w.rate, n_requests=w.requests, duration_s=w.duration_s,
                            deadline_s=deadline, input_bytes=in_bytes)
    spec = S.SimSpec(devices=tuple(devices), workload=wl, shared_medium=bool(scenario.network.shared_medium),
                     seed=seed)
    return Deployment(scenario, pool, variants, initial, slots, spec, service, k, rbytes)
