"""Catalog entries (``sim/devices/*.yaml``, ``sim/networks/*.yaml``) and the device and link
attributes that an entry and a scenario device share. Below the catalog, which validates its
entries with these models (and above nothing that reads the catalog).

A new device attribute is declared once, in :class:`DeviceAttributes`: device profiles and
scenario devices both take it, a device inherits it from its profile, and the scenario → world
translation (:mod:`vip_ray.scenario.world`) copies it into :class:`vip_ray.core.world.DeviceSpec`
when that has a field of the same name.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from vip_ray.scenario.schema.availability import (
    AlwaysAvailable,
    Availability,
    Straggler,
    _availability_shorthand,
)
from vip_ray.scenario.schema.base import (
    MODEL_FAMILIES,
    NonNegFloat,
    PositiveFloat,
    _custom,
    _Model,
)
from vip_ray.scenario.schema.trace_refs import BandwidthTrace


def _check_families(v: dict[str, float] | None) -> dict[str, float] | None:
    for fam in v or {}:
        if fam not in MODEL_FAMILIES:
            raise _custom("bad_family", f"invalid family {fam!r}; allowed: {', '.join(MODEL_FAMILIES)}", sub=fam)
    return v


class PowerFields(_Model):
    """A device's electrical power (W): ``idle_w`` when available and idle, ``busy_w`` when computing
    (see :mod:`vip_ray.core.energy`)."""

    idle_w: NonNegFloat
    busy_w: NonNegFloat


class RadioFields(_Model):
    """A link's radio (see :mod:`vip_ray.core.energy`): per bit sent / received, ``tx_nj_per_bit`` /
    ``rx_nj_per_bit`` (nJ), or the power while sending / receiving, ``tx_w`` / ``rx_w`` (W, over
    bits / bandwidth seconds); an optional tail state ``tail_w`` for ``tail_s`` after each transfer
    (LTE's RRC tail, Huang et al., MobiSys 2012)."""

    tx_w: NonNegFloat | None = None
    rx_w: NonNegFloat | None = None
    tx_nj_per_bit: NonNegFloat | None = None
    rx_nj_per_bit: NonNegFloat | None = None
    tail_w: NonNegFloat = 0.0
    tail_s: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _one_per_side(self) -> "RadioFields":
        for side in ("tx", "rx"):
            if (getattr(self, f"{side}_w") is None) == (getattr(self, f"{side}_nj_per_bit") is None):
                raise _custom("bad_radio", f"give exactly one of {side}_w and {side}_nj_per_bit", sub=f"{side}_w")
        return self


class LinkFields(_Model):
    """One master↔device link as written (see :class:`vip_ray.scenario.schema.LinkSpec`, which
    also merges the named network profile's fields in)."""

    profile: str | None = None
    rtt_ms: NonNegFloat | None = None
    bandwidth_mbps: PositiveFloat | None = None
    loss: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] | None = None
    bandwidth_trace: BandwidthTrace | None = None
    radio: RadioFields | None = None


class DeviceAttributes(_Model):
    """What a device is, as a device profile and a scenario device both say it (meanings in
    :class:`vip_ray.scenario.schema.DeviceSpec`); ``None``: not set here."""

    macs_per_s: PositiveFloat | None = None
    macs_per_s_by_family: dict[str, PositiveFloat] | None = None
    latency_ms: dict[str, PositiveFloat] | None = None
    overhead_ms: NonNegFloat | None = None
    memory_mb: PositiveFloat | None = None
    availability: Availability = Field(default_factory=AlwaysAvailable)
    service_dist: Literal["deterministic", "exponential", "lognormal"] | None = None
    jitter_cv: NonNegFloat | None = None
    straggler: Straggler | None = None
    link: LinkFields | None = None
    power: PowerFields | None = None
    battery_wh: PositiveFloat | None = None

    _families = field_validator("macs_per_s_by_family")(_check_families)

    @field_validator("availability", mode="before")
    @classmethod
    def _availability_str(cls, v: Any) -> Any:
        return _availability_shorthand(v)


class _ProfileHead(_Model):
    """The fields a catalog entry has first (bases are laid out in reverse order: these lead)."""

    name: str
    description: str = ""
    source: str
    derivation: str = ""


class DeviceProfile(DeviceAttributes, _ProfileHead):
    """A device catalog entry (``sim/devices/<name>.yaml``). Fields as :class:`DeviceSpec`,
    plus ``source`` (where the figures come from; required) and ``derivation`` (how)."""

    @model_validator(mode="after")
    def _has_speed(self) -> DeviceProfile:
        if self.macs_per_s is None and not self.macs_per_s_by_family and not self.latency_ms:
            raise _custom("no_compute", "a device profile needs macs_per_s, macs_per_s_by_family or latency_ms")
        return self


class NetworkProfile(_ProfileHead):
    """A network catalog entry (``sim/networks/<name>.yaml``): ``rtt_ms``, ``bandwidth_mbps``,
    ``loss``, ``shared_medium``, optional ``bandwidth_trace``; ``source`` required."""

    rtt_ms: NonNegFloat
    bandwidth_mbps: PositiveFloat
    loss: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0
    shared_medium: bool = False
    bandwidth_trace: BandwidthTrace | None = None
    radio: RadioFields | None = None
