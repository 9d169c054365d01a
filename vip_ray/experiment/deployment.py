"""From a scenario and a pool to the simulator's numeric spec (units: s, bit/s, bytes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vip_ray.netmodel import link_params
from vip_ray.placement.plan import PlacementPlan, device_slots, plan_placement
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


def sim_availability(av: Any) -> S.Availability:
    return S.Availability(**availability_params(av))


def sim_link(link: Any) -> S.LinkSpec:
    return S.LinkSpec(**link_params(link))


def sim_device(d: Any, slots: tuple, reply_bytes: int) -> S.DeviceSpec:
    """A scenario device as the engines see it, running ``slots``."""
    return S.DeviceSpec(name=d.name, slots=slots, service_dist=d.service_dist, jitter_cv=d.jitter_cv,
                        straggler_prob=d.straggler.prob, straggler_factor=d.straggler.factor,
                        availability=sim_availability(d.availability),
                        link=None if d.role == "master" else sim_link(d.link), reply_bytes=reply_bytes)


def sim_workload(scenario: Scenario, input_bytes: int) -> S.WorkloadSpec:
    w = scenario.workload
    deadline = w.deadline_ms / 1e3
    if w.arrival == "trace":
        return S.WorkloadSpec("trace", times=tuple(w.trace.times_s), n_requests=w.requests, duration_s=w.duration_s,
                              deadline_s=deadline, input_bytes=input_bytes)
    return S.WorkloadSpec(w.arrival, rate_hz=w.rate, n_requests=w.requests, duration_s=w.duration_s,
                          deadline_s=deadline, input_bytes=input_bytes)


def build_deployment(scenario: Scenario, pool: Pool, *, seed: int, plan: PlacementPlan | None = None,
                     reply_bytes: list[int] | None = None) -> Deployment:
    """The simulator's spec for one replication: ``plan`` (default: the scenario's placement of
    its pool's variants) says what runs where; ``reply_bytes`` per device (default: the plan's)."""
    plan = plan or plan_placement(scenario, pool)
    variants, service, rbytes, in_bytes, k = plan.variants, plan.service_s, plan.reply_bytes, plan.input_bytes, plan.k
    slots, devices = [], []
    for i, d in enumerate(scenario.devices):
        own = [S.VariantSlot(*step) for step in device_slots(plan, i)]
        if not own:  # nothing fits: the device idles (its column never answers)
            own = [S.VariantSlot(0.0, 0, float("inf"))]
        slots.append(tuple(own))
        devices.append(sim_device(d, tuple(own), rbytes if reply_bytes is None else int(reply_bytes[i])))
    spec = S.SimSpec(devices=tuple(devices), workload=sim_workload(scenario, in_bytes),
                     shared_medium=bool(scenario.network.shared_medium),
                     seed=seed)
    return Deployment(scenario, pool, variants, plan.initial, slots, spec, service, k, rbytes)
