"""Scenario + pool → which variant runs on which device, and when (shared by the simulator's
deployment and the Serve emulation; imports neither)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from vip_ray.core.aggregation import reply_bytes
from vip_ray.placement.base import DeviceInfo, VariantInfo, place
from vip_ray.pool import MemberRecord, Pool
from vip_ray.scenario import Scenario
from vip_ray.scenario.load import input_bytes, selected_variants


@dataclass
class PlacementPlan:
    """``timeline``: ``(t, assignment)`` steps, assignment = variant index per device (-1: none);
    ``service_s[d, v]``: mean compute time of variant ``v`` on device ``d`` (inf: cannot run it)."""

    variants: list[MemberRecord]
    service_s: np.ndarray
    timeline: list[tuple[float, list[int]]]
    k: int | None             # top-k of the replies (None = full vector)
    reply_bytes: int
    input_bytes: int
    warnings: list[str] = field(default_factory=list)   # what the placement could not honour

    @property
    def initial(self) -> list[int]:
        return self.timeline[0][1]


def reply_top_k(scenario: Scenario) -> int | None:
    """Reply compression: VP top-k; VIP averages full probability vectors; majority sends one index."""
    agg = scenario.strategy.aggregator
    if agg == "majority":
        return 1
    if agg == "vip":
        return None
    return scenario.strategy.top_k


def down_at(av: Any, t: float) -> bool:
    """Known (non-random) unavailability at time t: crashed, or inside a trace interval."""
    if av.kind == "crash":
        return t >= av.at_s
    if av.kind == "trace":
        return any(a <= t < b for a, b in av.intervals)
    return False


def change_times(scenario: Scenario) -> list[float]:
    times = set()
    for d in scenario.devices:
        if d.availability.kind == "crash":
            times.add(float(d.availability.at_s))
        elif d.availability.kind == "trace":
            for a, b in d.availability.intervals:
                times.update((float(a), float(b)))
    return sorted(times | {0.0})


def service_matrix(scenario: Scenario, variants: Sequence[MemberRecord]) -> np.ndarray:
    """(D, V) mean compute seconds of every variant on every device; inf where it cannot run."""
    return np.array([[d.service_ms(macs=v.macs, model=v.model, member_id=v.id, family=v.family) / 1e3
                      if d.can_run(model=v.model, member_id=v.id, family=v.family) else np.inf
                      for v in variants] for d in scenario.devices], dtype=np.float64).reshape(
        len(scenario.devices), len(variants))


def mbps_at_start(device: Any) -> float:
    """The bandwidth of the device's link at t = 0 (its trace's first step, if that starts at 0)."""
    steps = device.link.bandwidth_trace.points if device.link.bandwidth_trace else []
    return steps[0][1] if steps and steps[0][0] == 0 else device.link.bandwidth_mbps


def network_s(device: Any, nbytes: int) -> float:
    """Expected time to move ``nbytes`` to and from ``device`` at t = 0 (RTT + transfer); 0 on the master."""
    if device.role == "master":
        return 0.0
    return device.link.rtt_ms / 1e3 + 8 * nbytes / (mbps_at_start(device) * 1e6)


def plan_placement(scenario: Scenario, pool: Pool, *, variants: Sequence[MemberRecord] | None = None,
                   k: int | None | str = "auto", policy: str | None = None,
                   params: dict[str, Any] | None = None) -> PlacementPlan:
    """Place ``variants`` (default: the scenario's selection of the pool) with the scenario's
    policy; with ``placement.dynamic``, re-place at every scheduled availability change."""
    variants = list(selected_variants(scenario, pool) if variants is None else variants)
    k = reply_top_k(scenario) if k == "auto" else k
    rbytes = reply_bytes(k, pool.num_classes)
    in_bytes = input_bytes(scenario, pool)
    service = service_matrix(scenario, variants)
    infos = []
    for i, d in enumerate(scenario.devices):
        infos.append(DeviceInfo(d.name, macs_per_s=d.speed() or 1.0, memory_mb=d.memory_mb or float("inf"),
                                network_s=network_s(d, in_bytes + rbytes), is_master=d.role == "master",
                                latency_s={v.id: float(service[i, j]) for j, v in enumerate(variants)}))
    vinfos = [VariantInfo(j, v.id, v.model, v.macs, v.bytes, v.accuracy, v.segment) for j, v in enumerate(variants)]
    deadline = scenario.workload.deadline_ms / 1e3
    pol = policy or scenario.placement.policy
    params = dict(scenario.placement.params or {}) if params is None else dict(params)
    timeline = [(0.0, place(pol, infos, vinfos, deadline_s=deadline, params=params))]
    if scenario.placement.dynamic or scenario.control.policy == "oracle":   # oracle: vip_ray.control.oracle
        # VIP's dynamic variant management: at every scheduled availability change (crash, trace
        # interval edges, t=0 included) re-place among the devices that are up. Random on/off and
        # MTBF periods are drawn inside the engine and are not known here.
        timeline = []
        for t in change_times(scenario):
            alive = [i for i, d in enumerate(scenario.devices) if not down_at(d.availability, t)]
            sub = place(pol, [infos[i] for i in alive], vinfos, deadline_s=deadline, params=params) if alive else []
            now = [-1] * len(scenario.devices)
            for i, v in zip(alive, sub):
                now[i] = v
            if not timeline or now != timeline[-1][1]:
                timeline.append((t, now))
    late = sorted({scenario.devices[i].name for _, a in timeline for i, v in enumerate(a)
                   if v >= 0 and infos[i].compute_s(vinfos[v]) + infos[i].network_s > deadline})
    notes = [f"placement: nothing answers within the {deadline * 1e3:g} ms deadline on {', '.join(late)}; "
             f"each runs the fastest variant on it that the others do not run (it answers only when "
             f"idle enough)"] if late else []
    return PlacementPlan(variants, service, timeline, k, rbytes, in_bytes, notes)


def device_slots(plan: PlacementPlan, device: int) -> list[tuple[float, int, float]]:
    """``(start_s, variant, service_s)`` steps of one device (consecutive repeats merged)."""
    own: list[tuple[float, int, float]] = []
    for t, assignment in plan.timeline:
        v = assignment[device]
        if v >= 0 and (not own or own[-1][1] != v):
            own.append((t, v, float(plan.service_s[device, v])))
    return own


def placed_devices(plan: PlacementPlan) -> list[int]:
    """The devices that run some variant at some time (in device order)."""
    n = len(plan.timeline[0][1]) if plan.timeline else 0
    return [i for i in range(n) if any(a[i] >= 0 for _, a in plan.timeline)]
