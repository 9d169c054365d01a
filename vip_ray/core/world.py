"""Numeric simulation spec: the contract between the scenario layer and the SimPy engines.

Everything here is plain numbers (seconds, bits per second, bytes, probabilities). No torch, no
pool, no YAML. All classes are frozen dataclasses validated in ``__post_init__``; a bad value
raises ``ValueError`` naming the field and the allowed values. Lists passed for tuple fields are
converted to tuples (so specs stay hashable and immutable).
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from vip_ray.core import netmodel
from vip_ray.core.power import PowerSpec, RadioSpec
from vip_ray.core.streams import AvailabilityParams

AVAILABILITY_KINDS = ("always", "onoff", "trace", "crash", "mtbf")
DISTRIBUTIONS = ("exponential", "weibull")
PREEMPT_MODES = ("resume", "drop")
TIMINGS = ("emulated", "measured")
SERVICE_DISTS = ("deterministic", "exponential", "lognormal")
ARRIVALS = ("poisson", "periodic", "trace")
FALLBACKS = ("none", "local", "best_effort")


def _err(cls: str, fld: str, msg: str) -> ValueError:
    return ValueError(f"{cls}.{fld}: {msg}")


def _finite_nonneg(cls: str, fld: str, v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise _err(cls, fld, f"must be a number, got {v!r}") from None
    if not (math.isfinite(v) and v >= 0.0):
        raise _err(cls, fld, f"must be a finite number >= 0, got {v!r}")
    return v


def _choice(cls: str, fld: str, v, allowed) -> str:
    if v not in allowed:
        raise _err(cls, fld, f"got {v!r}; allowed values: {', '.join(map(repr, allowed))}")
    return v


def _set(obj, name, value):
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class Availability(AvailabilityParams):
    """When a device may serve.

    * ``always``  — always available.
    * ``onoff``   — cycle stealing: alternating free / busy (owner's work) periods, starting free
      at t=0; period lengths drawn i.i.d. from ``distribution`` with means ``free_mean_s`` /
      ``busy_mean_s`` (Weibull with shape ``weibull_shape``, scaled to the mean).
    * ``trace``   — unavailable during the given ``[start, end)`` intervals.
    * ``crash``   — down from ``crash_at_s`` on: queue and job in service lost, nothing more served.
    * ``mtbf``    — exponential up (mean ``mtbf_s``) / down (mean ``mttr_s``) cycles starting up; a
      failure loses the queue and the job in service (the device comes back empty).

    ``mode`` (onoff / trace): ``resume`` pauses the job in service and resumes it when the device
    is free again; ``drop`` loses it (preempt-drop). Queued jobs wait in both modes.

    The fields are :class:`vip_ray.core.streams.AvailabilityParams`' (shared with the Serve
    emulation); this class validates them.
    """

    def __post_init__(self):
        c = "Availability"
        _choice(c, "kind", self.kind, AVAILABILITY_KINDS)
        _choice(c, "distribution", self.distribution, DISTRIBUTIONS)
        _choice(c, "mode", self.mode, PREEMPT_MODES)
        _set(self, "busy_mean_s", _finite_nonneg(c, "busy_mean_s", self.busy_mean_s))
        _set(self, "free_mean_s", _finite_nonneg(c, "free_mean_s", self.free_mean_s))
        _set(self, "mtbf_s", _finite_nonneg(c, "mtbf_s", self.mtbf_s))
        _set(self, "mttr_s", _finite_nonneg(c, "mttr_s", self.mttr_s))
        ws = _finite_nonneg(c, "weibull_shape", self.weibull_shape)
        if ws <= 0:
            raise _err(c, "weibull_shape", f"must be > 0, got {ws!r}")
        _set(self, "weibull_shape", ws)
        ivs = []
        for i, iv in enumerate(self.intervals):
            try:
                a, b = iv
            except (TypeError, ValueError):
                raise _err(c, f"intervals[{i}]", f"must be a (start, end) pair, got {iv!r}") from None
            a = _finite_nonneg(c, f"intervals[{i}].start", a)
            b = float(b)
            if not math.isfinite(b):
                raise _err(c, f"intervals[{i}].end", "must be finite (a device that never comes back: kind 'crash')")
            if not b > a:
                raise _err(c, f"intervals[{i}]", f"end must be > start, got {iv!r}")
            if ivs and a < ivs[-1][1]:
                raise _err(c, f"intervals[{i}]",
                           f"intervals must be sorted and non-overlapping, got {iv!r} after {ivs[-1]!r}")
            ivs.append((a, b))
        _set(self, "intervals", tuple(ivs))
        if self.crash_at_s is not None:
            _set(self, "crash_at_s", _finite_nonneg(c, "crash_at_s", self.crash_at_s))
        if self.kind == "onoff":
            if self.busy_mean_s <= 0 or self.free_mean_s <= 0:
                raise _err(c, "busy_mean_s/free_mean_s",
                           "kind 'onoff' needs busy_mean_s > 0 and free_mean_s > 0")
        elif self.kind == "crash":
            if self.crash_at_s is None:
                raise _err(c, "crash_at_s", "kind 'crash' needs crash_at_s (a time >= 0)")
        elif self.kind == "mtbf":
            if self.mtbf_s <= 0 or self.mttr_s <= 0:
                raise _err(c, "mtbf_s/mttr_s", "kind 'mtbf' needs mtbf_s > 0 and mttr_s > 0")

    @property
    def stationary(self) -> float:
        """Long-run fraction of time available (1 for always/trace/crash — those are not stationary)."""
        if self.kind == "onoff":
            return self.free_mean_s / (self.free_mean_s + self.busy_mean_s)
        if self.kind == "mtbf":
            return self.mtbf_s / (self.mtbf_s + self.mttr_s)
        return 1.0


@dataclass(frozen=True)
class LinkSpec:
    """A master↔device link (star topology): round-trip propagation ``rtt_s`` (each direction
    ``rtt_s/2``), bandwidth in bit/s, per-transmission loss probability, optional bandwidth steps
    ``((t, bps), ...)`` that override ``bandwidth_bps`` from time ``t`` on (both directions)."""

    rtt_s: float
    bandwidth_bps: float
    loss: float = 0.0
    bandwidth_trace: tuple = ()
    radio: Optional[RadioSpec] = None     # energy only (vip_ray.core.energy): no effect on timing

    def __post_init__(self):
        c = "LinkSpec"
        _set(self, "rtt_s", _finite_nonneg(c, "rtt_s", self.rtt_s))
        bw = float(self.bandwidth_bps)
        if not bw > 0:
            raise _err(c, "bandwidth_bps", f"must be > 0 (may be inf), got {self.bandwidth_bps!r}")
        _set(self, "bandwidth_bps", bw)
        loss = _finite_nonneg(c, "loss", self.loss)
        if loss >= 1.0:
            raise _err(c, "loss", f"must be in [0, 1), got {loss!r}")
        _set(self, "loss", loss)
        steps = []
        for i, st in enumerate(self.bandwidth_trace):
            try:
                t, b = st
            except (TypeError, ValueError):
                raise _err(c, f"bandwidth_trace[{i}]", f"must be a (time, bps) pair, got {st!r}") from None
            t = _finite_nonneg(c, f"bandwidth_trace[{i}].time", t)
            b = float(b)
            if not b > 0:
                raise _err(c, f"bandwidth_trace[{i}].bps", f"must be > 0, got {st!r}")
            if steps and t <= steps[-1][0]:
                raise _err(c, f"bandwidth_trace[{i}]", "times must be strictly increasing")
            steps.append((t, b))
        _set(self, "bandwidth_trace", tuple(steps))
        if self.radio is not None and not isinstance(self.radio, RadioSpec):
            raise _err(c, "radio", f"must be a RadioSpec or None, got {type(self.radio).__name__}")

    def steps(self) -> tuple[list[float], list[float]]:
        """The bandwidth as a step function ``(times, rates)`` from t = 0 (bit/s)."""
        return netmodel.bandwidth_steps(self.bandwidth_bps, self.bandwidth_trace)

    def direction(self) -> netmodel.Direction:
        """One direction of this link as a FIFO (serialise at the bandwidth in force, then rtt/2)."""
        return netmodel.Direction(*self.steps(), self.rtt_s / 2.0)


@dataclass(frozen=True)
class VariantSlot:
    """From ``start_s`` on, the device runs pool variant ``variant`` with mean compute time
    ``service_s`` seconds per input. The slot active when a job *starts* service decides both.

    ``variant = -1`` or ``service_s = inf`` means *no variant placed*: the device idles, and a job
    that would start service in such a slot is not served (outcome ``UNPLACED``)."""

    start_s: float
    variant: int
    service_s: float

    def __post_init__(self):
        c = "VariantSlot"
        _set(self, "start_s", _finite_nonneg(c, "start_s", self.start_s))
        if isinstance(self.variant, bool) or int(self.variant) != self.variant or self.variant < -1:
            raise _err(c, "variant", f"must be an int >= 0 (pool variant index) or -1 (none placed), got {self.variant!r}")
        _set(self, "variant", int(self.variant))
        try:
            sv = float(self.service_s)
        except (TypeError, ValueError):
            raise _err(c, "service_s", f"must be a number, got {self.service_s!r}") from None
        if not sv >= 0.0:
            raise _err(c, "service_s", f"must be >= 0 (inf: no variant placed), got {self.service_s!r}")
        _set(self, "service_s", sv)

    @property
    def placed(self) -> bool:
        return self.variant >= 0 and math.isfinite(self.service_s)

    def __iter__(self):  # ``start, variant, service = slot``
        return iter((self.start_s, self.variant, self.service_s))


UNPLACED_SLOT = VariantSlot(0.0, -1, math.inf)


@dataclass(frozen=True)
class DeviceSpec:
    """One device. ``link=None`` means the master's own local variant (no network, replies at its
    finish time). ``slots`` have strictly increasing start times; before the first one (if it
    starts after 0) no variant is placed. The master multicasts every input to every device,
    placed or not (inputs to an idle device still cross its link)."""

    name: str
    slots: tuple
    service_dist: str = "deterministic"
    jitter_cv: float = 0.0
    straggler_prob: float = 0.0
    straggler_factor: float = 1.0
    availability: Availability = field(default_factory=Availability)
    link: Optional[LinkSpec] = None
    reply_bytes: int = 10
    drop_expired: bool = False
    role: str = "worker"                  # master | worker (the master multicasts and aggregates)
    group: str = ""                       # the scenario's device group ("" = its own name)
    ray_resources: tuple = ()             # ((resource, amount), ...) a live replica asks Ray for
    timing: str = "emulated"              # live: emulated (the profile's times) | measured (the node's real passes)
    # energy (vip_ray.core.energy): no effect on timing; a battery becomes a crash at its depletion
    # time (vip_ray.core.energy.with_batteries) before an engine runs the world
    power: Optional[PowerSpec] = None
    battery_wh: Optional[float] = None

    def __post_init__(self):
        c = f"DeviceSpec({self.name!r})"
        if not isinstance(self.name, str) or not self.name:
            raise _err("DeviceSpec", "name", f"must be a non-empty string, got {self.name!r}")
        slots = tuple(self.slots)
        if not slots:
            raise _err(c, "slots", "needs at least one VariantSlot (static placement: one slot at 0.0)")
        for i, s in enumerate(slots):
            if not isinstance(s, VariantSlot):
                raise _err(c, f"slots[{i}]", f"must be a VariantSlot, got {type(s).__name__}")
        for i in range(1, len(slots)):
            if not slots[i].start_s > slots[i - 1].start_s:
                raise _err(c, f"slots[{i}].start_s", "slot start times must be strictly increasing")
        _set(self, "slots", slots)
        _choice(c, "service_dist", self.service_dist, SERVICE_DISTS)
        cv = _finite_nonneg(c, "jitter_cv", self.jitter_cv)
        if self.service_dist == "deterministic" and cv != 0.0:
            raise _err(c, "jitter_cv", f"service_dist 'deterministic' has no jitter (use jitter_cv 0, or "
                                       f"service_dist 'lognormal' for jitter), got {cv!r}")
        if self.service_dist == "exponential" and cv not in (0.0, 1.0):
            raise _err(c, "jitter_cv", f"service_dist 'exponential' has cv 1 (use 0 or 1), got {cv!r}")
        _set(self, "jitter_cv", cv)
        p = _finite_nonneg(c, "straggler_prob", self.straggler_prob)
        if p > 1:
            raise _err(c, "straggler_prob", f"must be in [0, 1], got {p!r}")
        _set(self, "straggler_prob", p)
        f = _finite_nonneg(c, "straggler_factor", self.straggler_factor)
        if f < 1:
            raise _err(c, "straggler_factor", f"must be >= 1, got {f!r}")
        _set(self, "straggler_factor", f)
        if not isinstance(self.availability, Availability):
            raise _err(c, "availability", f"must be an Availability, got {type(self.availability).__name__}")
        if self.link is not None and not isinstance(self.link, LinkSpec):
            raise _err(c, "link", f"must be a LinkSpec or None (local variant), got {type(self.link).__name__}")
        if isinstance(self.reply_bytes, bool) or int(self.reply_bytes) != self.reply_bytes or self.reply_bytes < 0:
            raise _err(c, "reply_bytes", f"must be an int >= 0, got {self.reply_bytes!r}")
        _set(self, "reply_bytes", int(self.reply_bytes))
        _set(self, "drop_expired", bool(self.drop_expired))
        _choice(c, "role", self.role, ("master", "worker"))
        _set(self, "group", str(self.group or self.name))
        _set(self, "ray_resources", tuple((str(k), float(v)) for k, v in dict(self.ray_resources).items()))
        _choice(c, "timing", self.timing, TIMINGS)
        if self.timing == "measured" and self.availability.kind in ("onoff", "trace"):
            raise _err(c, "timing", f"'measured' needs availability always, crash or mtbf: a real forward pass "
                                    f"is not paused by the owner's work (got {self.availability.kind!r})")
        if self.power is not None and not isinstance(self.power, PowerSpec):
            raise _err(c, "power", f"must be a PowerSpec or None, got {type(self.power).__name__}")
        if self.battery_wh is not None:
            b = _finite_nonneg(c, "battery_wh", self.battery_wh)
            if b <= 0:
                raise _err(c, "battery_wh", f"must be > 0 (None: mains powered), got {b!r}")
            _set(self, "battery_wh", b)

    def slot_at(self, t: float) -> tuple[int, float] | None:
        """``(variant, mean service s)`` in force at ``t``; ``None`` when nothing is placed then."""
        cur = None
        for s in self.slots:
            if s.start_s > t:
                break
            cur = (s.variant, s.service_s) if s.placed else None
        return cur

    def placed_variants(self) -> list[int]:
        """The variants this device runs at some time, in order of first use."""
        return list(dict.fromkeys(s.variant for s in self.slots if s.placed))

    @property
    def first_slot(self) -> VariantSlot | None:
        """The slot in force at t = 0 when something is placed then, else ``None``."""
        s = self.timeline()[0]
        return s if s.placed else None

    def timeline(self) -> tuple:
        """The slots from t = 0 (an unplaced slot is prepended when the first starts later)."""
        if self.slots[0].start_s > 0.0:
            return (UNPLACED_SLOT,) + self.slots
        return self.slots


@dataclass(frozen=True)
class WorkloadSpec:
    """Arrivals. ``poisson`` (rate ``rate_hz``), ``periodic`` (every ``1/rate_hz`` s, first at 0),
    or ``trace`` (``times``, sorted). Stops after ``n_requests`` and/or at ``duration_s``
    (arrivals at t < duration_s), whichever comes first; poisson/periodic need at least one."""

    arrival: str
    rate_hz: float = 0.0
    times: tuple = ()
    n_requests: Optional[int] = None
    duration_s: Optional[float] = None
    deadline_s: float = 0.1
    input_bytes: int = 3072
    fallback: str = "none"     # when nobody answers by the deadline: none | local | best_effort
    # the master's heartbeat: a device that fails is known down one period later (until one period
    # after its repair), and the master stops waiting for it; None: it never learns (waits to the deadline)
    heartbeat_s: Optional[float] = None

    def __post_init__(self):
        c = "WorkloadSpec"
        _choice(c, "arrival", self.arrival, ARRIVALS)
        _set(self, "rate_hz", _finite_nonneg(c, "rate_hz", self.rate_hz))
        try:
            arr = np.asarray(self.times, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            arr = None
        if arr is None or not (np.isfinite(arr).all() and (arr >= 0).all()):   # name the first bad one
            for i, t in enumerate(self.times):
                _finite_nonneg(c, f"times[{i}]", t)
        bad = np.flatnonzero(arr[1:] < arr[:-1])
        if len(bad):
            raise _err(c, f"times[{bad[0] + 1}]", "trace times must be sorted (non-decreasing)")
        _set(self, "times", tuple(arr.tolist()))
        if self.n_requests is not None:
            if isinstance(self.n_requests, bool) or int(self.n_requests) != self.n_requests or self.n_requests < 0:
                raise _err(c, "n_requests", f"must be an int >= 0 or None, got {self.n_requests!r}")
            _set(self, "n_requests", int(self.n_requests))
        if self.duration_s is not None:
            _set(self, "duration_s", _finite_nonneg(c, "duration_s", self.duration_s))
        if self.arrival in ("poisson", "periodic"):
            if self.rate_hz <= 0:
                raise _err(c, "rate_hz", f"arrival {self.arrival!r} needs rate_hz > 0")
            if self.n_requests is None and self.duration_s is None:
                raise _err(c, "n_requests/duration_s", f"arrival {self.arrival!r} needs n_requests or duration_s")
        d = _finite_nonneg(c, "deadline_s", self.deadline_s)
        if d <= 0:
            raise _err(c, "deadline_s", f"must be > 0, got {self.deadline_s!r}")
        _set(self, "deadline_s", d)
        if isinstance(self.input_bytes, bool) or int(self.input_bytes) != self.input_bytes or self.input_bytes < 0:
            raise _err(c, "input_bytes", f"must be an int >= 0, got {self.input_bytes!r}")
        _set(self, "input_bytes", int(self.input_bytes))
        _choice(c, "fallback", self.fallback, FALLBACKS)
        if self.heartbeat_s is not None:
            _set(self, "heartbeat_s", _finite_nonneg(c, "heartbeat_s", self.heartbeat_s))


@dataclass(frozen=True)
class MasterSpec:
    """One master of a multi-master world (a user): its own arrivals (``workload``'s arrival
    process, rate and length), each request multicast to the devices it ``reaches`` (indices into
    ``SimSpec.devices``, increasing). Its jobs share those devices' links, queues and the medium
    with every other master's (FIFO by arrival)."""

    name: str
    workload: WorkloadSpec
    reaches: tuple

    def __post_init__(self):
        c = f"MasterSpec({self.name!r})"
        if not isinstance(self.name, str) or not self.name:
            raise _err("MasterSpec", "name", f"must be a non-empty string, got {self.name!r}")
        if not isinstance(self.workload, WorkloadSpec):
            raise _err(c, "workload", f"must be a WorkloadSpec, got {type(self.workload).__name__}")
        reach = tuple(self.reaches)
        if not reach:
            raise _err(c, "reaches", "must name at least one device")
        for i, d in enumerate(reach):
            if isinstance(d, bool) or int(d) != d or d < 0:
                raise _err(c, f"reaches[{i}]", f"must be a device index >= 0, got {d!r}")
        reach = tuple(int(d) for d in reach)
        if any(b <= a for a, b in itertools.pairwise(reach)):
            raise _err(c, "reaches", f"device indices must be strictly increasing, got {reach!r}")
        _set(self, "reaches", reach)


@dataclass(frozen=True)
class SimSpec:
    """A whole run: devices (spec order = column order of every (R, D) result array), workload,
    shared medium (one downlink transmission of each input serves every networked device at once;
    at each instant it runs at the slowest networked link's bandwidth; uplinks stay per link),
    seed.

    ``masters`` (a multi-master world, empty for the classic one): several :class:`MasterSpec`
    users, each multicasting its own arrivals to the devices it reaches. Then ``workload`` is the
    application all of them run (``deadline_s``, ``input_bytes``, ``fallback``; its arrival fields
    are not used), every device is networked and none has role ``master``; the shared medium
    carries every master's inputs, FIFO (one transmission per request, to the devices its master
    reaches). Requests of all masters are merged in arrival order (ties: master order); see
    :func:`merged_requests`, :func:`cells`."""

    devices: tuple
    workload: WorkloadSpec
    shared_medium: bool = False
    seed: int = 0
    masters: tuple = ()

    def __post_init__(self):
        c = "SimSpec"
        devs = tuple(self.devices)
        if not devs:
            raise _err(c, "devices", "needs at least one DeviceSpec")
        names = set()
        for i, d in enumerate(devs):
            if not isinstance(d, DeviceSpec):
                raise _err(c, f"devices[{i}]", f"must be a DeviceSpec, got {type(d).__name__}")
            if d.name in names:
                raise _err(c, f"devices[{i}].name", f"duplicate device name {d.name!r}")
            names.add(d.name)
        _set(self, "devices", devs)
        if not isinstance(self.workload, WorkloadSpec):
            raise _err(c, "workload", f"must be a WorkloadSpec, got {type(self.workload).__name__}")
        _set(self, "shared_medium", bool(self.shared_medium))
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or self.seed < 0:
            raise _err(c, "seed", f"must be an int >= 0, got {self.seed!r}")
        _set(self, "seed", int(self.seed))
        masters = tuple(self.masters)
        if masters:
            seen: dict = {}
            for i, m in enumerate(masters):
                if not isinstance(m, MasterSpec):
                    raise _err(c, f"masters[{i}]", f"must be a MasterSpec, got {type(m).__name__}")
                if m.name in seen:
                    raise _err(c, f"masters[{i}].name", f"duplicate master name {m.name!r}")
                if m.name in names:
                    raise _err(c, f"masters[{i}].name", f"{m.name!r} is also a device's name")
                seen[m.name] = i
                if m.reaches[-1] >= len(devs):
                    raise _err(c, f"masters[{i}].reaches", f"device index {m.reaches[-1]} out of range "
                                                           f"(the world has {len(devs)} devices)")
                if (m.workload.deadline_s, m.workload.input_bytes) != (self.workload.deadline_s,
                                                                       self.workload.input_bytes):
                    raise _err(c, f"masters[{i}].workload", "deadline_s and input_bytes are the application's: "
                                                            "equal to SimSpec.workload's")
            for i, d in enumerate(devs):
                if d.role == "master" or d.link is None:
                    raise _err(c, f"devices[{i}]", f"{d.name!r}: in a multi-master world every device is a "
                                                   "networked worker (the masters are the users)")
            reached = set().union(*(m.reaches for m in masters))
            if len(reached) < len(devs):
                idle = next(d.name for i, d in enumerate(devs) if i not in reached)
                raise _err(c, "masters", f"device {idle!r} is reached by no master")
        _set(self, "masters", masters)

    @property
    def multi(self) -> bool:
        """A multi-master world."""
        return bool(self.masters)


@functools.lru_cache(maxsize=4)
def merged_requests(spec: SimSpec) -> tuple:
    """``(arrival_workload, master_of, reach)`` of a multi-master world: every master's arrivals
    (master ``m`` draws from its own stream, key ``(ARRIVALS, m)``) merged in time order (ties:
    master order) as one ``trace`` workload with ``spec.workload``'s deadline and input size;
    ``master_of[i]`` the master of request ``i``; ``reach`` the (masters, devices) bool matrix.
    Every engine takes its arrivals and per-request draws from this (request ``i`` is the
    ``i``-th of the merged stream), which is what keeps them equal."""
    from vip_ray.core.streams import Arrivals

    times, owner = [], []
    for m, ms in enumerate(spec.masters):
        arr = Arrivals(ms.workload, spec.seed, stream=m)
        wl = ms.workload
        # pieces about the expected count (a user's few hundred requests: no 65k-value blocks)
        piece = 1 << 16
        if wl.rate_hz > 0 and wl.duration_s is not None:
            piece = int(min(piece, max(64, 1.1 * wl.rate_hz * wl.duration_s + 32)))
        parts = []
        while not arr.done:
            parts.append(arr.take(piece)[1])
        t = np.concatenate(parts) if parts else np.empty(0)
        times.append(t)
        owner.append(np.full(len(t), m, dtype=np.int32))
    t = np.concatenate(times) if times else np.empty(0)
    o = np.concatenate(owner) if owner else np.empty(0, np.int32)
    order = np.argsort(t, kind="stable")           # stable: equal times keep master order
    t, o = t[order], o[order]
    w = spec.workload
    wl = WorkloadSpec("trace", times=tuple(t.tolist()), deadline_s=w.deadline_s, input_bytes=w.input_bytes,
                      fallback=w.fallback)
    reach = np.zeros((len(spec.masters), len(spec.devices)), dtype=bool)
    for m, ms in enumerate(spec.masters):
        reach[m, list(ms.reaches)] = True
    return wl, o, reach


def arrival_workload(spec: SimSpec) -> WorkloadSpec:
    """The workload whose arrivals an engine runs: the merged trace of a multi-master world."""
    return merged_requests(spec)[0] if spec.masters else spec.workload


def cells(spec: SimSpec) -> list:
    """A multi-master world split into independent cells: the connected groups of masters that
    share devices (a neighbourhood). ``[(device indices, cell SimSpec)]``; a cell's masters reach
    its devices re-indexed, its seed is the world's when there is one cell, else derived from the
    world's seed and the cell's first device index. Cells share nothing (a shared medium is a
    cell's), so each runs alone and engines' dense (requests, devices) arrays stay cell-sized."""
    n = len(spec.devices)
    parent = list(range(n))

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for m in spec.masters:
        r0 = root(m.reaches[0])
        for d in m.reaches[1:]:
            r = root(d)
            if r != r0:
                parent[r] = r0
    groups: dict = {}
    for d in range(n):
        groups.setdefault(root(d), []).append(d)
    by_root: dict = {}
    for m in spec.masters:
        by_root.setdefault(root(m.reaches[0]), []).append(m)
    out = []
    for r, devs in sorted(groups.items(), key=lambda kv: kv[1][0]):
        pos = {d: i for i, d in enumerate(devs)}
        masters = tuple(MasterSpec(m.name, m.workload, tuple(pos[d] for d in m.reaches)) for m in by_root[r])
        seed = spec.seed if len(groups) == 1 else \
            int(np.random.SeedSequence([spec.seed, devs[0]]).generate_state(1, np.uint32)[0])
        out.append((devs, SimSpec(devices=tuple(spec.devices[d] for d in devs), workload=spec.workload,
                                  shared_medium=spec.shared_medium, seed=seed, masters=masters)))
    return out


__all__ = [
    "MasterSpec", "merged_requests", "arrival_workload", "cells",
    "Availability", "LinkSpec", "VariantSlot", "UNPLACED_SLOT", "DeviceSpec", "WorkloadSpec", "SimSpec",
    "AVAILABILITY_KINDS", "DISTRIBUTIONS", "PREEMPT_MODES", "SERVICE_DISTS", "ARRIVALS",
]
