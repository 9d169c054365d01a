"""Placement contract and registry."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from vip_ray.core.registry import Registry, UnknownName
from vip_ray.errors import UserError


class PlacementError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class DeviceInfo:
    """What a placement policy knows of a device."""

    name: str
    macs_per_s: float                              # effective compute speed
    memory_mb: float = float("inf")
    network_s: float = 0.0                         # expected round trip of one request (transfer + RTT)
    latency_s: dict[str, float] = field(default_factory=dict)  # measured per-variant latency (member id or model)
    is_master: bool = False

    def compute_s(self, v: "VariantInfo") -> float:
        """Compute time of ``v`` here: the latency table when it has the variant, else MACs / speed."""
        for key in (v.id, v.model):
            if key in self.latency_s:
                return self.latency_s[key]
        return v.macs / self.macs_per_s


@dataclass(frozen=True)
class VariantInfo:
    """What a placement policy knows of a pool variant."""

    index: int            # position in the pool's variant list (the prediction bank's order)
    id: str
    model: str
    macs: int
    bytes: int
    accuracy: float
    segment: int | None = None


Placement = list[int]  # variant index per device (-1: nothing placed)
PolicyFn = Callable[..., Placement]
#: every placement policy by name; the built-ins register in :mod:`.policies`
PLACEMENTS: Registry[PolicyFn] = Registry("placement policy")


def register_placement(name: str):
    """Register ``fn(devices, variants, *, deadline_s, **params) -> Placement`` under ``name``."""

    def wrap(fn: PolicyFn) -> PolicyFn:
        PLACEMENTS.register(name, fn)
        return fn

    return wrap


def get_placement(name: str) -> PolicyFn:
    try:
        return PLACEMENTS.get(name)
    except UnknownName as e:
        raise PlacementError(str(e)) from None


def place(name: str, devices: Sequence[DeviceInfo], variants: Sequence[VariantInfo], *, deadline_s: float,
          params: dict[str, Any] | None = None) -> Placement:
    if not variants:
        raise PlacementError("the pool has no variants to place")
    fn = get_placement(name)
    try:
        out = fn(list(devices), list(variants), deadline_s=deadline_s, **(params or {}))
    except TypeError as e:  # an unknown or missing placement.params key
        raise PlacementError(f"placement {name!r}: bad placement.params {params or {}} ({e}); "
                             f"see the policy's docstring for its parameters") from None
    if len(out) != len(devices) or any(not -1 <= i < len(variants) for i in out):
        raise PlacementError(f"placement {name!r} returned an invalid assignment {out}")
    return out
