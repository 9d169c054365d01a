"""A device of the scenario (a device group in the YAML, expanded by ``count``); it may start from
a device catalog entry (``sim/devices``)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from vip_ray.scenario.schema.availability import Straggler
from vip_ray.scenario.schema.base import (
    NonNegFloat,
    PositiveFloat,
    PositiveInt,
    _custom,
    _Model,
)
from vip_ray.scenario.schema.errors import ScenarioError
from vip_ray.scenario.schema.network import LinkSpec, _catalog
from vip_ray.scenario.schema.profiles import DeviceAttributes

_COMPUTE_FIELDS = ("macs_per_s", "macs_per_s_by_family", "latency_ms", "overhead_ms")
_SERVICE_FIELDS = ("service_dist", "jitter_cv")
#: the attributes a device takes from its profile one by one (the rest: as a unit, or the link)
_PLAIN_PROFILE_FIELDS = tuple(f for f in DeviceAttributes.model_fields
                              if f not in _COMPUTE_FIELDS + _SERVICE_FIELDS + ("link",))


def _device_profile(name: Any, info: ValidationInfo | None):
    catalog = _catalog("devices", info)
    if not isinstance(name, str) or name not in catalog:
        raise _custom("unknown_profile", f"unknown device profile {name!r}; available: "
                                         f"{', '.join(sorted(catalog)) or '(none)'}", sub="profile")
    return catalog[name]


class _DeviceHead(_Model):
    """The fields a scenario device has first (bases are laid out in reverse order: these lead)."""

    name: str | None = None
    group: str | None = None
    profile: str | None = None
    role: Literal["worker", "master"] | None = None
    count: PositiveInt = 1


class DeviceSpec(DeviceAttributes, _DeviceHead):
    """A device group in the YAML; one device after validation (groups are expanded by ``count``).

    * ``name`` — default: the profile name, else ``device<i>``; a group of ``count`` N > 1 becomes
      devices ``name-0`` … ``name-(N-1)``.
    * ``group`` — the group a device was expanded from (default: its name).
    * ``profile`` — a device catalog entry (``sim/devices/<profile>.yaml``); inline fields override it.
    * ``role`` — ``master`` (exactly one device: it multicasts, runs a local variant and
      aggregates) or ``worker``. Default: the first device is the master.
    * ``count`` — number of alike devices in the group (≥ 1).
    * compute (the profile's speeds and overhead are taken as a unit unless ``macs_per_s``,
      ``macs_per_s_by_family`` or ``latency_ms`` is set inline):
      ``macs_per_s`` — effective multiply-accumulates per second;
      ``macs_per_s_by_family`` — per model family (``vp``, ``vp_imagenet``, ``resnet50_slices``,
      ``baseline``), wins over ``macs_per_s``;
      ``latency_ms`` — measured per-inference latency, ms, keyed by member id or model name,
      wins over both;
      ``overhead_ms`` — fixed per-inference time (framework, kernel launches) added to MACs/speed
      (not to ``latency_ms`` entries). Default 0.
      Service time = ``latency_ms[member or model]`` else ``overhead_ms + MACs / speed``.
    * ``memory_mb`` — memory for models, MB (None: unlimited).
    * ``availability`` — ``always`` | ``onoff`` | ``trace`` | ``crash`` | ``mtbf`` (see the models).
    * ``service_dist`` — ``deterministic`` | ``exponential`` (CV 1) | ``lognormal`` (CV
      ``jitter_cv``); default lognormal when ``jitter_cv`` > 0, else deterministic.
    * ``jitter_cv`` — coefficient of variation of the service time (≥ 0).
    * ``straggler`` — ``{prob, factor}``: occasional slow jobs.
    * ``link`` — per-device overrides of the network fields (after validation: the complete link).
    * ``power`` — ``{idle_w, busy_w}``: electrical power when idle / computing (energy only).
    * ``battery_wh`` — battery capacity, Wh (None: mains powered); needs ``power`` and availability
      ``always`` or ``crash``: the device crashes when the battery is empty (:mod:`vip_ray.core.energy`).
    * ``ray_resources`` — Ray custom resources the Serve engine asks for this device's replica,
      e.g. ``{edge_board_1: 1}`` pins it to the node that advertises them (the simulator ignores it).
    * ``timing`` — ``emulated`` (default: the profile's service times, on an emulated clock) or
      ``measured`` (Serve engine: the device runs its variant for real on its node — pin it with
      ``ray_resources`` — and the pass's elapsed time is its compute; the simulator uses the profile).
    """

    # the attributes of DeviceAttributes, with a scenario device's defaults where they differ
    overhead_ms: NonNegFloat = 0.0
    straggler: Straggler = Field(default_factory=Straggler)
    link: LinkSpec | None = None
    ray_resources: dict[str, PositiveFloat] | None = None
    timing: Literal["emulated", "measured"] = "emulated"

    @model_validator(mode="before")
    @classmethod
    def _merge_profile(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or data.get("profile") is None:
            return data
        prof = _device_profile(data["profile"], info)
        data = dict(data)
        pdump = prof.model_dump(exclude_none=True)
        # speeds come as a unit (with the overhead they were fitted with); so do service_dist + jitter_cv
        for unit, triggers in ((_COMPUTE_FIELDS, _COMPUTE_FIELDS[:3]), (_SERVICE_FIELDS, _SERVICE_FIELDS)):
            if all(data.get(f) is None for f in triggers):
                for f in unit:
                    if data.get(f) is None and f in pdump:
                        data[f] = pdump[f]
        for f in _PLAIN_PROFILE_FIELDS:
            if data.get(f) is None and f in pdump:
                data[f] = pdump[f]
        if prof.link is not None:
            own = data.get("link")
            merged = prof.link.model_dump(exclude_none=True)  # the catalog merged its network profile in
            if isinstance(own, dict):
                merged.update({k: v for k, v in own.items() if v is not None})
            elif own is not None:
                merged = own  # not a mapping: let field validation report it
            data["link"] = merged
        return data

    @model_validator(mode="after")
    def _complete(self) -> DeviceSpec:
        if self.macs_per_s is None and not self.macs_per_s_by_family and not self.latency_ms:
            raise _custom("no_compute", "no compute speed: set macs_per_s, macs_per_s_by_family or "
                                        "latency_ms, or a profile that has one")
        if self.timing == "measured" and self.availability.kind in ("onoff", "trace"):
            raise _custom("bad_timing", f"timing 'measured' needs availability always, crash or mtbf (a real "
                                        f"forward pass is not paused by the owner's work), got "
                                        f"{self.availability.kind!r}", sub="timing")
        if self.battery_wh is not None:
            if self.power is None:
                raise _custom("bad_battery", "battery_wh needs a power block (idle_w, busy_w) to know when it is "
                                             "empty", sub="battery_wh")
            if self.availability.kind not in ("always", "crash"):
                raise _custom("bad_battery", f"battery_wh needs availability always or crash (an empty battery is "
                                             f"a crash), got {self.availability.kind!r}", sub="battery_wh")
        cv, dist = self.jitter_cv, self.service_dist
        if dist is None:
            dist = "lognormal" if cv else "deterministic"
        if dist == "deterministic" and cv:
            raise _custom("bad_jitter", f"jitter_cv must be 0 with service_dist deterministic (use lognormal "
                                        f"for jitter), got {cv}", sub="jitter_cv")
        if dist == "exponential":
            if cv not in (None, 1.0):
                raise _custom("bad_jitter", f"exponential service times have CV 1; leave jitter_cv unset or "
                                            f"1, got {cv}", sub="jitter_cv")
            cv = 1.0
        if dist == "lognormal" and not cv:
            raise _custom("bad_jitter", "service_dist lognormal needs jitter_cv > 0", sub="jitter_cv")
        self.service_dist, self.jitter_cv = dist, float(cv or 0.0)
        return self

    # -- helpers for the simulator and the placement policies ---------------------------------

    @property
    def is_master(self) -> bool:
        return self.role == "master"

    def speed(self, family: str | None = None) -> float | None:
        """Effective MAC/s for a model family (by-family figure, else ``macs_per_s``)."""
        by_family = self.macs_per_s_by_family or {}
        if family is not None and family in by_family:
            return by_family[family]
        return self.macs_per_s

    def can_run(self, *, model: str | None = None, member_id: str | None = None,
                family: str | None = None) -> bool:
        table = self.latency_ms or {}
        return (member_id in table) or (model in table) or self.speed(family) is not None

    def service_ms(self, *, macs: float, model: str | None = None, member_id: str | None = None,
                   family: str | None = None) -> float:
        """Mean compute time (ms) of one inference of a pool member on this device."""
        table = self.latency_ms or {}
        for key in (member_id, model):
            if key is not None and key in table:
                return float(table[key])
        speed = self.speed(family)
        if speed is None:
            raise ScenarioError(
                f"device {self.name!r} has no latency_ms entry for {member_id or model!r} and no "
                f"macs_per_s{' for family ' + repr(family) if family else ''}; its table has: "
                f"{', '.join(table) or '(empty)'}")
        return self.overhead_ms + 1000.0 * float(macs) / speed

    def compute_signature(self) -> tuple:
        """Equal for devices that compute alike (used to tell homogeneous from heterogeneous)."""
        return (self.macs_per_s, tuple(sorted((self.macs_per_s_by_family or {}).items())),
                tuple(sorted((self.latency_ms or {}).items())), self.overhead_ms)
