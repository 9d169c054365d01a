"""A scenario as the engines' world (:mod:`vip_ray.core.world`): the one place where a scenario
device, link and workload become the numbers both the simulator and the Serve engine run on.

A new device attribute touches two files: the scenario schema (``schema/profiles.py``,
``DeviceAttributes``; or ``schema/devices.py`` for one a device profile cannot set) and the core
world (``core/world.py``, ``DeviceSpec``, under the same name): :func:`device` copies every core
field that the scenario device has under its own name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

from vip_ray.core import energy as E
from vip_ray.core import world as W
from vip_ray.core.netmodel import link_params
from vip_ray.core.streams import availability_params


def availability(av: Any) -> W.Availability:
    return W.Availability(**availability_params(av))


def link(lk: Any) -> W.LinkSpec:
    return W.LinkSpec(**link_params(lk), radio=radio(getattr(lk, "radio", None)))


def radio(r: Any) -> E.RadioSpec | None:
    """A scenario link's radio in SI units (nJ/bit → J/bit)."""
    if r is None:
        return None
    nj = {}
    for side in ("tx", "rx"):
        per_bit = getattr(r, f"{side}_nj_per_bit")
        nj[f"{side}_j_per_bit"] = None if per_bit is None else per_bit * 1e-9
    return E.RadioSpec(tx_w=r.tx_w, rx_w=r.rx_w, tail_w=r.tail_w, tail_s=r.tail_s, **nj)


#: the core device fields built here from something else; every other one is the scenario
#: device's field of the same name, as it is (service_dist, jitter_cv, and any new attribute)
_TRANSLATED = frozenset({"slots", "reply_bytes", "straggler_prob", "straggler_factor", "availability", "link",
                         "group", "ray_resources", "power"})
_COPIED = tuple(f.name for f in dataclasses.fields(W.DeviceSpec) if f.name not in _TRANSLATED)


def device(d: Any, slots: tuple, reply_bytes: int) -> W.DeviceSpec:
    """A scenario device running ``slots`` (``VariantSlot``s)."""
    same = {f: getattr(d, f) for f in _COPIED if f in type(d).model_fields}
    return W.DeviceSpec(**same, slots=slots, reply_bytes=reply_bytes,
                        straggler_prob=d.straggler.prob, straggler_factor=d.straggler.factor,
                        availability=availability(d.availability),
                        link=None if d.role == "master" else link(d.link),
                        group=d.group or d.name, ray_resources=tuple((d.ray_resources or {}).items()),
                        power=power(getattr(d, "power", None)))


def power(p: Any) -> E.PowerSpec | None:
    return None if p is None else E.PowerSpec(p.idle_w, p.busy_w)


def workload(scenario: Any, input_bytes: int) -> W.WorkloadSpec:
    w = scenario.workload
    times = tuple(w.trace.times_s) if w.arrival == "trace" else ()
    return W.WorkloadSpec(w.arrival, rate_hz=0.0 if w.arrival == "trace" else w.rate, times=times,
                          n_requests=w.requests, duration_s=w.duration_s, deadline_s=w.deadline_ms / 1e3,
                          input_bytes=input_bytes, fallback=w.fallback,
                          heartbeat_s=None if w.heartbeat_ms is None else w.heartbeat_ms / 1e3)


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
    size for its variant (its own k where the aggregation has one per device)."""
    devices = []
    for i, d in enumerate(scenario.devices):
        own = slots(plan, i)
        first = next((s.variant for s in own if s.placed), None)
        rbytes = aggregation.reply_bytes(first) if (first is not None and aggregation.classes) else plan.reply_bytes
        if getattr(aggregation, "k_device", None) is not None:   # each device's own top-k (vip_ray.control.topk)
            rbytes = aggregation.device_reply_bytes(i)
        devices.append(device(d, own, int(rbytes)))
    app = workload(scenario, plan.input_bytes)
    return E.with_batteries(W.SimSpec(devices=tuple(devices), workload=app,
                                      shared_medium=bool(scenario.network.shared_medium),
                                      seed=seed, masters=masters(scenario, devices, app)))


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
