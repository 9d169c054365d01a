"""From a scenario and a pool to the simulator's numeric spec (units: s, bit/s, bytes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vip_ray.netmodel import link_params
from vip_ray.placement.plan import device_slots, plan_placement
from vip_ray.pool import MemberRecord, Pool
from vip_ray.scenario import Scenario
from vip_ray.sim import spec as S
from vip_ray.streams import availability_params


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
    return S.Availability(**availability_params(av))


def _link(link: Any) -> S.LinkSpec:
    return S.LinkSpec(**link_params(link))


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
