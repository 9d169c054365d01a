"""A scenario as the engines' world (:mod:`vip_ray.core.world`): the one place where a scenario
device, link and workload become the numbers both the simulator and the Serve engine run on.

A new device attribute touches three files: the scenario schema (``schema.py``), the core world
(``core/world.py``) and this translation.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from vip_ray.core import world as W
from vip_ray.core.netmodel import link_params
from vip_ray.core.streams import availability_params


def availability(av: Any) -> W.Availability:
    return W.Availability(**availability_params(av))


def link(lk: Any) -> W.LinkSpec:
    return W.LinkSpec(**link_params(lk))


def device(d: Any, slots: tuple, reply_bytes: int) -> W.DeviceSpec:
    """A scenario device running ``slots`` (``VariantSlot``s)."""
    return W.DeviceSpec(name=d.name, slots=slots, service_dist=d.service_dist, jitter_cv=d.jitter_cv,
                        straggler_prob=d.straggler.prob, straggler_factor=d.straggler.factor,
                        availability=availability(d.availability),
                        link=None if d.role == "master" else link(d.link), reply_bytes=reply_bytes,
                        role=d.role, group=d.group or d.name, ray_resources=tuple((d.ray_resources or {}).items()))


def workload(scenario: Any, input_bytes: int) -> W.WorkloadSpec:
    w = scenario.workload
    times = tuple(w.trace.times_s) if w.arrival == "trace" else ()
    return W.WorkloadSpec(w.arrival, rate_hz=0.0 if w.arrival == "trace" else w.rate, times=times,
                          n_requests=w.requests, duration_s=w.duration_s, deadline_s=w.deadline_ms / 1e3,
                          input_bytes=input_bytes, fallback=w.fallback)


def slots(plan: Any, i: int) -> tuple[W.VariantSlot, ...]:
    """Device ``i``'s steps of ``plan.timeline`` (consecutive repeats merged); a device taken out
    of the placement (dynamic placement, after a crash) gets an unplaced step, so the master
    stops waiting for it; nothing placed at all: the unplaced slot."""
    own: list[W.VariantSlot] = []
    for t, assignment in plan.timeline:
        v = assignment[i]
        if v >= 0 and (not own or own[-1].variant != v):
            own.append(W.VariantSlot(t, v, float(plan.service_s[i, v])))
        elif v < 0 and own and own[-1].placed:
            own.append(W.VariantSlot(t, -1, float("inf")))
    return tuple(own) or (W.UNPLACED_SLOT,)


def world(scenario: Any, plan: Any, aggregation: Any, *, seed: int) -> W.SimSpec:
    """The world of one replication: the scenario's devices running ``plan``'s timeline (a
    :class:`vip_ray.placement.plan.PlacementPlan`), each replying with ``aggregation``'s reply
    size for its variant."""
    devices = []
    for i, d in enumerate(scenario.devices):
        own = slots(plan, i)
        first = next((s.variant for s in own if s.placed), None)
        rbytes = aggregation.reply_bytes(first) if (first is not None and aggregation.classes) else plan.reply_bytes
        devices.append(device(d, own, int(rbytes)))
    app = workload(scenario, plan.input_bytes)
    return W.SimSpec(devices=tuple(devices), workload=app, shared_medium=bool(scenario.network.shared_medium),
                     seed=seed, masters=masters(scenario, devices, app))


def masters(scenario: Any, devices: list, app: W.WorkloadSpec) -> tuple:
    """A multi-master scenario's users as :class:`~vip_ray.core.world.MasterSpec`s, each reaching
    its devices among ``devices`` (those a strategy kept: a user keeps the ones still there)."""
    if scenario.masters is None:
        return ()
    index = {d.name: i for i, d in enumerate(devices)}
    out = []
    for u in scenario.masters.users:
        own = app if u.rate_hz is None else replace(app, arrival="poisson", rate_hz=u.rate_hz, times=())
        out.append(W.MasterSpec(u.name, own, tuple(sorted(index[r] for r in u.reaches if r in index))))
    return tuple(out)
