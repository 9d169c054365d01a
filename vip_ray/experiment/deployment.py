"""From a scenario and a pool to the simulator's numeric spec (units: s, bit/s, bytes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vip_ray.placement.plan import device_slots, plan_placement
from vip_ray.pool import MemberRecord, Pool
from vip_ray.scenario import Scenario
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


def build_deployment(scenario: Scenario, pool: Pool, *, seed: int) -> Deployment:
    plan = plan_placement(scenario, pool)
    variants, service, rbytes, in_bytes, k = plan.variants, plan.service_s, plan.reply_bytes, plan.input_bytes, plan.k
    deadline = scenario.workload.deadline_ms / 1e3
    slots, devices = [], []
    for i, d in enumerate(scenario.devices):
        own = [S.VariantSlot(*step) for step in device_slots(plan, i)]
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
    return Deployment(scenario, pool, variants, plan.initial, slots, spec, service, k, rbytes)
