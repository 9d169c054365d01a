"""The scenario: pool, devices, network, workload, strategy, placement, seeds and engine, resolved
(profiles merged, groups expanded, links completed, defaults set)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from vip_ray.scenario.schema.base import (
    DEFAULT_NETWORK_PROFILE,
    PositiveInt,
    _ctx,
    _custom,
    _Model,
)
from vip_ray.scenario.schema.control import Control, StaticControl
from vip_ray.scenario.schema.devices import DeviceSpec
from vip_ray.scenario.schema.masters import Masters
from vip_ray.scenario.schema.network import _LINK_FIELDS, LinkSpec, NetworkSpec
from vip_ray.scenario.schema.strategy import Placement, StrategySpec
from vip_ray.scenario.schema.workload import Workload


class PoolRef(_Model):
    """The trained pool to use.

    * ``name`` — pool name in the store or among the shipped reference pools (default
      ``default``: VP's MobileNetV2 V1..V5 on MNIST-5k, shipped with vip_ray).
    * ``root`` — the pool store (default ``$VIP_RAY_POOLS``, else ``$VIP_RAY_HOME/pools``).
    * ``variants`` — member ids to deploy (default: every ``role: variant`` member, manifest order).
    * ``build`` — training overrides (``python -m vip_ray.tune`` style, e.g.
      ``[family=resnet50_slices, shape=homogeneous, diversity=crops]``) that build the pool on
      first use when the store does not have it; ``pool.name`` and ``pool.root`` are added.
    """

    name: str = "default"
    root: str | None = None
    variants: list[str] | None = None
    build: list[str] | None = None

    @field_validator("variants")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise _custom("empty", "must name at least one member (or leave it out for all variants)")
            dup = sorted({x for x in v if v.count(x) > 1})
            if dup:
                raise _custom("duplicate", f"member ids listed twice: {', '.join(dup)}")
        return v


class Seeds(_Model):
    """``base`` — seed of replication 0 (replication r uses a seed derived from base and r);
    ``replications`` — independent runs (≥ 1)."""

    base: Annotated[int, Field(ge=0)] = 0
    replications: PositiveInt = 1


class Scenario(_Model):
    """A complete, validated scenario (see the module docstring and ``scenarios/README.md``).

    * ``name`` — default: the file stem.  * ``description`` — free text.
    * ``pool`` — :class:`PoolRef`.  * ``devices`` — list of :class:`DeviceSpec` (≥ 1).
    * ``network`` — :class:`NetworkSpec` (default profile ``smart_home_wifi``).
    * ``workload`` — :class:`Workload`.  * ``strategy`` — :class:`StrategySpec`.
    * ``placement`` — :class:`Placement`.  * ``seeds`` — :class:`Seeds`.
    * ``engine`` — ``sim`` (SimPy discrete-event simulation) | ``serve`` (live on Ray Serve).
    * ``sim_engine`` — a simulator kernel of ``vip_ray.core.engine.FAMILIES["sim"]``: ``fast``
      (default), ``jit`` (numba), ``loop``, ``numpy``, ``reference`` (the one-process-per-job oracle).
    * ``masters`` — several masters (users) sharing the devices: :class:`Masters`.
    * ``control`` — the master's online controller: ``{policy: NAME, ...}`` (``vip-sim policies``).
    """

    name: str = "scenario"
    description: str = ""
    pool: PoolRef = Field(default_factory=PoolRef)
    devices: list[DeviceSpec]
    network: NetworkSpec
    workload: Workload = Field(default_factory=Workload)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    placement: Placement = Field(default_factory=Placement)
    seeds: Seeds = Field(default_factory=Seeds)
    engine: Literal["sim", "serve"] = "sim"
    sim_engine: str = "fast"
    masters: Masters | None = None      # several masters (users): see Masters
    control: Control = Field(default_factory=StaticControl)   # the master's online controller (vip_ray.control)

    @field_validator("sim_engine")
    @classmethod
    def _known_kernel(cls, v: str) -> str:
        from vip_ray.core.engine import (
            FAMILIES,  # the one engine registry names the kernels
        )

        if v not in FAMILIES["sim"]:
            raise _custom("unknown_engine", f"{v!r} is not a simulator kernel; allowed: {', '.join(FAMILIES['sim'])}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict):
            if data.get("name") is None and _ctx(info, "default_name"):
                data = {**data, "name": _ctx(info, "default_name")}
            if data.get("network") is None:
                data = {**data, "network": {"profile": DEFAULT_NETWORK_PROFILE}}
        return data

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> Scenario:
        if not self.devices:
            raise _custom("empty", "at least one device is required", sub="devices")
        groups = self.devices
        for i, g in enumerate(groups):
            if g.name is None:
                g.name = g.profile or f"device{i}"
        masters = [i for i, g in enumerate(groups) if g.role == "master"]
        if len(masters) > 1:
            where = ", ".join(f"devices[{i}] ({groups[i].name})" for i in masters)
            raise _custom("two_masters", f"{len(masters)} device groups have role master ({where}); "
                                         f"exactly one device is the master", sub=f"devices[{masters[1]}].role")
        if masters and groups[masters[0]].count > 1:
            i = masters[0]
            raise _custom("master_count", f"the master is one device; group {groups[i].name!r} has count "
                                          f"{groups[i].count} (split it into a master and a worker group)",
                          sub=f"devices[{i}].count")
        expanded: list[DeviceSpec] = []
        origin: dict[str, int] = {}
        for i, g in enumerate(groups):
            base = g.name
            names = [base] if g.count == 1 else [f"{base}-{j}" for j in range(g.count)]
            for name in names:
                if name in origin:
                    raise _custom("duplicate_name", f"device name {name!r} is used twice (devices[{origin[name]}] "
                                                    f"and devices[{i}]); give each group a distinct name",
                                  sub=f"devices[{i}].name")
                origin[name] = i
                d = g.model_copy(deep=True)
                d.name, d.count, d.group = name, 1, g.group or base
                expanded.append(d)
        if self.masters is not None:   # several masters: the users (see Masters)
            ctx = getattr(info, "context", None)
            self.devices = self.masters.expand(expanded, lambda lk: self._complete_link(lk, ctx))
            return self._default_policy()
        if not masters:
            expanded[0].role = "master"
        for d in expanded:
            if d.role is None:
                d.role = "worker"
            d.link = self._complete_link(d.link, getattr(info, "context", None))
        self.devices = expanded
        return self._default_policy()

    def _default_policy(self) -> Scenario:
        if self.placement.policy is None:
            homogeneous = len({d.compute_signature() for d in self.devices}) == 1
            self.placement.policy = "diverse" if homogeneous else "capacity"
        return self

    def _complete_link(self, link: LinkSpec | None, context: dict[str, Any] | None) -> LinkSpec:
        """The network's link fields, overridden by the device's own (see :class:`LinkSpec`)."""
        merged: dict[str, Any] = {f: getattr(self.network, f) for f in _LINK_FIELDS}
        merged["profile"] = None
        if link is not None:
            merged.update({f: getattr(link, f) for f in ("profile",) + _LINK_FIELDS if getattr(link, f) is not None})
            if link.bandwidth_mbps is not None and link.bandwidth_trace is None:
                merged["bandwidth_trace"] = None
        if merged["bandwidth_trace"] is not None:
            merged["bandwidth_trace"] = merged["bandwidth_trace"].model_copy(deep=True)
        return LinkSpec.model_validate(merged, context=context)

    # -- accessors ---------------------------------------------------------------------------

    @property
    def master(self) -> DeviceSpec:
        return next(d for d in self.devices if d.role == "master")

    @property
    def workers(self) -> list[DeviceSpec]:
        return [d for d in self.devices if d.role != "master"]

    def device(self, name: str) -> DeviceSpec:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(f"no device {name!r}; devices: {', '.join(d.name for d in self.devices)}")

    def resolved(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML-safe) with every reference expanded and every default filled;
        ``Scenario.model_validate(s.resolved()) == s``. Written into a run's config.yaml."""
        return self.model_dump(mode="json")
