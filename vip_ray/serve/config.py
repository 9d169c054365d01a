"""A fan-out deployment (:class:`vip_ray.core.deployment.FanOut`) → the plain-data description of
a live emulation: the core world's devices and workload as they are, plus what only Serve needs
(device groups, Ray resources, HTTP and inference options, how to build each variant).

Everything here is picklable data (frozen dataclasses of numbers and strings): it travels to the
Serve replicas in their constructor arguments. The devices are the core world's
:class:`~vip_ray.core.world.DeviceSpec`s, so a live device draws the numbers the simulated one
draws (:mod:`vip_ray.core.streams`).
"""
from __future__ import annotations

from vip_ray.errors import UserError

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from vip_ray.core.aggregation import AggregationSpec
from vip_ray.core.deployment import FanOut
from vip_ray.core.world import DeviceSpec, WorkloadSpec

class DeployError(UserError, RuntimeError):
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
    * ``time_dilation`` — X: the emulated world runs X times slower than wall time (device
      times, RTTs, transfers, deadline, arrivals), so that the host's real work fits inside the
      emulated device times; measured latencies are divided by X. ``auto`` picks X from a short
      calibration of the host's forward passes (:mod:`vip_ray.serve.dilation`).
    * ``harness_ms`` — what ``auto`` allows for the harness's own round trip (Serve handle calls,
      the event loops; wall ms): X is large enough that it is ≤ ``tolerance`` of the emulated latency.
    * ``tolerance`` — the share of the emulated latency ``auto`` lets the harness take (0.05: 5 %).
    * ``access_log`` — Serve's access log line per call of every replica (off: it costs the
      event loops time on every request; the custom metrics count the requests).
    * ``answer_lead_ms`` — the least a request that waits for the deadline stops waiting (wall)
      before it, so that the master's answer is ready by the deadline (the harness's own transport
      and aggregation; the simulator's master answers at the deadline itself). The lead in use is
      a high quantile of the run's own answer paths, never below this (:mod:`vip_ray.serve.lead`;
      per request in ``serve_timing.parquet``). Replies due in that last window are not used.
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
    time_dilation: float | str = 1.0
    harness_ms: float = 3.0
    tolerance: float = 0.05
    access_log: bool = False
    answer_lead_ms: float = 3.0

    def __post_init__(self):
        if int(self.devices_per_replica) < 1:
            raise ValueError(f"devices_per_replica must be >= 1, got {self.devices_per_replica!r}")
        if not 0 <= int(self.http_port) <= 65535:
            raise ValueError(f"http_port must be in 0..65535, got {self.http_port!r}")
        if not str(self.route_prefix).startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {self.route_prefix!r}")
        for key in ("grace_ms", "fallback_wait_s", "deploy_timeout_s", "answer_lead_ms"):
            if not float(getattr(self, key)) >= 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)!r}")
        if self.failures not in ("kill", "in_place"):
            raise ValueError(f"failures must be 'kill' or 'in_place', got {self.failures!r}")
        if self.inference not in ("jit", "eager"):
            raise ValueError(f"inference must be 'jit' or 'eager', got {self.inference!r}")
        if self.time_dilation != "auto":
            try:
                x = float(self.time_dilation)
            except (TypeError, ValueError):
                x = float("nan")
            if not (x > 0 and math.isfinite(x)):
                raise ValueError(f"time_dilation must be a number > 0 or 'auto', got {self.time_dilation!r}")
        if not (0 < float(self.tolerance) < 1):
            raise ValueError(f"tolerance must be in (0, 1), got {self.tolerance!r}")
        if int(self.inference_threads) < 1:
            raise ValueError(f"inference_threads must be >= 1, got {self.inference_threads!r}")


@dataclass(frozen=True)
class VariantConfig:
    """A pool variant a device may run: how to build it (``vip_ray.models.build_model``)."""

    index: int
    id: str
    model: str
    build: dict[str, Any]
    macs: int = 0
    classes: tuple[int, ...] = ()   # a class-group model (strategy cp): the classes it owns


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
    devices: tuple[DeviceSpec, ...]
    variants: tuple[VariantConfig, ...]
    groups: tuple[GroupConfig, ...]
    aggregation: AggregationSpec
    workload: WorkloadSpec
    shared_medium: bool
    num_classes: int
    class_names: tuple[str, ...]
    top_m: int
    input_shape: tuple[int, int, int]   # (C, H, W) of the pool's images
    base_seed: int
    strategy: str
    options: ServeOptions
    dilation: float = 1.0               # X resolved (time_dilation 'auto' calibrated): wall s per emulated s
    control: Any = None                 # the master's online controller (vip_ray.control.live); None: today's

    @property
    def device_names(self) -> list[str]:
        return [d.name for d in self.devices]

    @property
    def master(self) -> int:
        return next((i for i, d in enumerate(self.devices) if d.role == "master"), None)


def _safe(name: str) -> str:
    """A deployment-name-safe form of a device name (Serve reserves ``#``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def plan_groups(devices: Sequence[DeviceSpec], options: ServeOptions) -> tuple[GroupConfig, ...]:
    """Device-group deployments: pinned devices by resource set, failure-prone, measured and isolated
    devices alone (a crash kills its replica, and only its own devices may go with it), the
    rest packed into balanced groups of at most ``devices_per_replica``, by placed variant."""
    unknown = sorted(set(options.isolate) - {d.name for d in devices})
    if unknown:
        raise DeployError(f"serve isolate: no device {', '.join(map(repr, unknown))}; devices: "
                            f"{', '.join(d.name for d in devices)}")
    groups: list[GroupConfig] = []
    pinned: dict[tuple, list[int]] = {}
    rest: list[int] = []
    for i, d in enumerate(devices):
        alone = ((d.availability.failure and options.failures == "kill") or d.name in options.isolate
                 or d.timing == "measured")   # a measured device's passes must not share its replica's threads
        if d.ray_resources and not alone:
            pinned.setdefault(tuple(sorted(d.ray_resources)), []).append(i)
        elif alone:
            groups.append(GroupConfig(f"dev-{_safe(d.name)}", (i,), dict(d.ray_resources)))
        else:
            rest.append(i)
    for j, (res, members) in enumerate(pinned.items()):
        groups.append(GroupConfig(f"pinned-{j}-" + "-".join(_safe(k) for k, _ in res), tuple(members), dict(res)))
    # devices that run the same variant share a replica where possible: one forward pass serves them all
    rest.sort(key=lambda i: ((devices[i].placed_variants() or [-1])[0], i))
    n = math.ceil(len(rest) / options.devices_per_replica) if rest else 0
    for j in range(n):  # balanced: sizes differ by at most one
        members = tuple(sorted(rest[j * len(rest) // n:(j + 1) * len(rest) // n]))
        groups.append(GroupConfig(f"devices-{j}", members))
    return tuple(sorted(groups, key=lambda g: g.devices[0]))


def build_config(dep: FanOut, *, input_shape: tuple[int, int, int], options: ServeOptions | None = None,
                 app: str | None = None, dilation: float = 1.0) -> EmulationConfig:
    """The emulation of a fan-out deployment (the very world the simulator runs); ``input_shape``
    is (C, H, W) of the pool's test images."""
    options = options or ServeOptions()
    agg = dep.aggregation
    variants = tuple(VariantConfig(j, v.id, v.model, dict(v.build), int(v.macs),
                                   tuple(agg.classes[j]) if agg.classes else ())
                     for j, v in enumerate(dep.variants))
    data = dep.pool.manifest.data
    c = dep.pool.num_classes
    names = tuple(str(x) for x in (data.get("class_names") or range(c)))
    return EmulationConfig(
        scenario=dep.scenario, app=app or f"vip-{_safe(dep.scenario)}", devices=dep.world.devices,
        variants=variants, groups=plan_groups(dep.world.devices, options), aggregation=agg,
        workload=dep.world.workload, shared_medium=dep.world.shared_medium, num_classes=c, class_names=names,
        top_m=dep.top_m, input_shape=tuple(int(x) for x in input_shape), base_seed=dep.seed,
        strategy=dep.strategy, options=options, dilation=float(dilation))
