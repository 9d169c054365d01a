"""Scenario + pool + placement → the plain-data description of a live emulation.

Everything here is picklable data (frozen dataclasses of numbers and strings): it travels to the
Serve replicas in their constructor arguments. The field names of :class:`DeviceConfig`,
:class:`LinkConfig` and :class:`WorkloadConfig` (and the availability, a
:class:`vip_ray.streams.AvailabilityParams`) are the ones the shared random streams read
(:mod:`vip_ray.streams`), so a live device draws the numbers the simulated one draws.
Placement is :func:`vip_ray.placement.plan.plan_placement`, the simulator's own.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from vip_ray import netmodel
from vip_ray.aggregation import AggregationSpec
from vip_ray.placement.plan import PlacementPlan, device_slots, plan_placement
from vip_ray.pool import Pool
from vip_ray.scenario import Scenario, ScenarioError
from vip_ray.streams import AvailabilityParams, availability_params

class DeployError(RuntimeError):
    """The emulation could not be started on Ray / Serve (the message says why)."""


@dataclass(frozen=True)
class ServeOptions:
    """How the emulation runs (not part of the scenario: the same scenario runs on any cluster).

    * ``address`` — Ray cluster to join (``auto``, ``ray://host:10001``, ``host:6379``); ``None``
      starts a local one (with the dashboard) and shuts it down afterwards.
    * ``http_host`` / ``http_port`` — where Serve's HTTP proxy listens (port 0: a free port).
    * ``route_prefix`` — the app's HTTP prefix (``POST {prefix}/predict``, ``GET {prefix}/health``).
    * ``devices_per_replica`` — emulated devices per device-group replica (each replica that
      imports torch costs ≈ 1 GB). Devices with a crash/MTBF availability (with ``failures:
      kill``), devices named in ``isolate`` and pinned devices (``ray_resources``) get replicas of
      their own (pinned devices with the same resources share one).
    * ``failures`` — ``kill``: a crash / MTBF failure kills the device's replica (``ray.kill``) and
      Serve's health checks replace it (the device is back once its replacement is up, however
      short the MTTR); ``in_place``: the device fails and recovers inside its replica, on the
      simulator's timeline exactly.
    * ``grace_ms`` — how long after the deadline the master still waits for a device group's
      message whose replies arrived in time on the emulated timeline (harness transport).
    * ``fallback_wait_s`` — the longest a ``local`` / ``best_effort`` fallback waits for a late reply.
    * ``inference`` — ``jit`` (a frozen TorchScript graph of each variant: ≈ 2× faster on CPU) or
      ``eager`` (the plain module, logits bit-equal to the prediction bank's batch).
    * ``inference_threads`` — torch worker threads per device-group replica.
    * ``max_body_bytes`` — larger HTTP bodies are refused with 413.
    * ``deploy_timeout_s`` — give up (with the deployments' status) if the app is not running by then.
    """

    address: str | None = None
    dashboard: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 0
    route_prefix: str = "/"
    devices_per_replica: int = 16
    isolate: tuple[str, ...] = ()
    failures: str = "kill"
    grace_ms: float = 50.0
    fallback_wait_s: float = 30.0
    inference: str = "jit"
    inference_threads: int = 2
    max_body_bytes: int = 4 << 20
    deploy_timeout_s: float = 180.0
    ray_temp_dir: str | None = None

    def __post_init__(self):
        if int(self.devices_per_replica) < 1:
            raise ValueError(f"devices_per_replica must be >= 1, got {self.devices_per_replica!r}")
        if not 0 <= int(self.http_port) <= 65535:
            raise ValueError(f"http_port must be in 0..65535, got {self.http_port!r}")
        if not str(self.route_prefix).startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {self.route_prefix!r}")
        for key in ("grace_ms", "fallback_wait_s", "deploy_timeout_s"):
            if not float(getattr(self, key)) >= 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)!r}")
        if self.failures not in ("kill", "in_place"):
            raise ValueError(f"failures must be 'kill' or 'in_place', got {self.failures!r}")
        if self.inference not in ("jit", "eager"):
            raise ValueError(f"inference must be 'jit' or 'eager', got {self.inference!r}")
        if int(self.inference_threads) < 1:
            raise ValueError(f"inference_threads must be >= 1, got {self.inference_threads!r}")


@dataclass(frozen=True)
class LinkConfig:
    """Master↔device link: ``rtt_s``, bandwidth steps ``(times, rates)`` in bit/s, ``loss``."""

    rtt_s: float
    times: tuple[float, ...]
    rates: tuple[float, ...]
    loss: float = 0.0

    def direction(self) -> netmodel.Direction:
        return netmodel.Direction(self.times, self.rates, self.rtt_s / 2.0)


@dataclass(frozen=True)
class DeviceConfig:
    """One emulated device. ``slots``: ``(start_s, variant, mean service s)`` steps of its placed
    variant (``()``: nothing placed); ``link`` ``None``: the master's own local variant."""

    index: int
    name: str
    group: str
    role: str
    slots: tuple[tuple[float, int, float], ...]
    service_dist: str
    jitter_cv: float
    straggler_prob: float
    straggler_factor: float
    availability: AvailabilityParams
    link: LinkConfig | None
    reply_bytes: int
    ray_resources: dict[str, float] = field(default_factory=dict)

    def slot_at(self, t: float) -> tuple[int, float] | None:
        """``(variant, mean service s)`` in force at ``t``; ``None`` when nothing is placed
        (before the first step, or a step with variant -1 / infinite service)."""
        cur = None
        for start, v, svc in self.slots:
            if start <= t:
                cur = (v, svc) if v >= 0 and svc < math.inf else None
            else:
                break
        return cur


@dataclass(frozen=True)
class VariantConfig:
    """A pool variant a device may run: how to build it (``vip_ray.models.build_model``)."""

    index: int
    id: str
    model: str
    build: dict[str, Any]
    macs: int = 0


@dataclass(frozen=True)
class WorkloadConfig:
    """The scenario's workload in the fields :class:`vip_ray.streams.Arrivals` reads."""

    arrival: str
    rate_hz: float
    times: tuple[float, ...]
    n_requests: int | None
    duration_s: float | None
    deadline_s: float
    input_bytes: int
    fallback: str


@dataclass(frozen=True)
class GroupConfig:
    """One device-group deployment: its devices and the Ray resources its replica asks for."""

    name: str
    devices: tuple[int, ...]
    ray_resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EmulationConfig:
    scenario: str
    app: str
    devices: tuple[DeviceConfig, ...]
    variants: tuple[VariantConfig, ...]
    groups: tuple[GroupConfig, ...]
    aggregation: AggregationSpec
    workload: WorkloadConfig
    shared_medium: bool
    num_classes: int
    class_names: tuple[str, ...]
    top_m: int
    input_shape: tuple[int, int, int]   # (C, H, W) of the pool's images
    base_seed: int
    strategy: str
    options: ServeOptions

    @property
    def device_names(self) -> list[str]:
        return [d.name for d in self.devices]

    @property
    def master(self) -> int:
        return next(d.index for d in self.devices if d.role == "master")


def _link(link: Any) -> LinkConfig:
    p = netmodel.link_params(link)
    times, rates = netmodel.bandwidth_steps(p["bandwidth_bps"], p["bandwidth_trace"])
    return LinkConfig(rtt_s=p["rtt_s"], times=tuple(times), rates=tuple(rates), loss=p["loss"])


def _safe(name: str) -> str:
    """A deployment-name-safe form of a device name (Serve reserves ``#``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def plan_groups(devices: Sequence[DeviceConfig], options: ServeOptions) -> tuple[GroupConfig, ...]:
    """Device-group deployments: pinned devices by resource set, failure-prone and isolated
    devices alone (a crash kills its replica, and only its own devices may go with it), the
    rest packed into balanced groups of at most ``devices_per_replica``, by placed variant."""
    unknown = sorted(set(options.isolate) - {d.name for d in devices})
    if unknown:
        raise ScenarioError(f"serve isolate: no device {', '.join(map(repr, unknown))}; devices: "
                            f"{', '.join(d.name for d in devices)}")
    groups: list[GroupConfig] = []
    pinned: dict[tuple, list[int]] = {}
    rest: list[int] = []
    for d in devices:
        alone = (d.availability.failure and options.failures == "kill") or d.name in options.isolate
        if d.ray_resources and not alone:
            pinned.setdefault(tuple(sorted(d.ray_resources.items())), []).append(d.index)
        elif alone:
            groups.append(GroupConfig(f"dev-{_safe(d.name)}", (d.index,), dict(d.ray_resources)))
        else:
            rest.append(d.index)
    for j, (res, members) in enumerate(pinned.items()):
        groups.append(GroupConfig(f"pinned-{j}-" + "-".join(_safe(k) for k, _ in res), tuple(members), dict(res)))
    # devices that run the same variant share a replica where possible: one forward pass serves them all
    rest.sort(key=lambda i: (devices[i].slots[0][1] if devices[i].slots else -1, i))
    n = math.ceil(len(rest) / options.devices_per_replica) if rest else 0
    for j in range(n):  # balanced: sizes differ by at most one
        members = tuple(sorted(rest[j * len(rest) // n:(j + 1) * len(rest) // n]))
        groups.append(GroupConfig(f"devices-{j}", members))
    return tuple(sorted(groups, key=lambda g: g.devices[0]))


def build_config(scenario: Scenario, pool: Pool, *, input_shape: tuple[int, int, int],
                 options: ServeOptions | None = None, app: str | None = None,
                 plan: PlacementPlan | None = None) -> EmulationConfig:
    """The emulation of ``scenario`` on ``pool`` (placement as in the simulator); ``input_shape``
    is (C, H, W) of the pool's test images."""
    from vip_ray.pool.report import top_m

    options = options or ServeOptions()
    plan = plan or plan_placement(scenario, pool)
    devices = []
    for i, d in enumerate(scenario.devices):
        devices.append(DeviceConfig(
            index=i, name=d.name, group=d.group or d.name, role=d.role, slots=tuple(device_slots(plan, i)),
            service_dist=d.service_dist, jitter_cv=float(d.jitter_cv), straggler_prob=float(d.straggler.prob),
            straggler_factor=float(d.straggler.factor), availability=AvailabilityParams(**availability_params(d.availability)),
            link=None if d.role == "master" else _link(d.link), reply_bytes=int(plan.reply_bytes),
            ray_resources=dict(d.ray_resources or {})))
    variants = tuple(VariantConfig(j, v.id, v.model, dict(v.build), int(v.macs)) for j, v in enumerate(plan.variants))
    placed = [v for d in devices for _, v, _ in d.slots]
    agg = AggregationSpec.build(scenario.strategy.aggregator, plan.k, scenario.strategy.alpha, plan.variants, placed)
    w = scenario.workload
    times = tuple(float(t) for t in (w.trace.times_s if w.arrival == "trace" else ()))
    workload = WorkloadConfig(arrival=w.arrival, rate_hz=float(w.rate or 0.0), times=times, n_requests=w.requests,
                              duration_s=w.duration_s, deadline_s=w.deadline_ms / 1e3, input_bytes=plan.input_bytes,
                              fallback=w.fallback)
    data = pool.manifest.data
    c = pool.num_classes
    names = tuple(str(x) for x in (data.get("class_names") or range(c)))
    return EmulationConfig(
        scenario=scenario.name, app=app or f"vip-{_safe(scenario.name)}", devices=tuple(devices),
        variants=variants, groups=plan_groups(devices, options), aggregation=agg, workload=workload,
        shared_medium=bool(scenario.network.shared_medium), num_classes=c, class_names=names,
        top_m=min(top_m(c), c), input_shape=tuple(int(x) for x in input_shape), base_seed=scenario.seeds.base,
        strategy=scenario.strategy.name, options=options)
