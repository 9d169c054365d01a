"""The network and its links (star topology around the master); a link may start from a network
catalog entry (``sim/networks``)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationInfo, model_validator

from vip_ray.scenario.schema.base import _ctx, _custom
from vip_ray.scenario.schema.profiles import LinkFields

_LINK_FIELDS = ("rtt_ms", "bandwidth_mbps", "loss", "bandwidth_trace", "radio")


def _catalog(kind: str, info: ValidationInfo | None) -> dict[str, Any]:
    """The device or network catalog; read once per validation when a context is given."""
    memo = _ctx(info, "catalogs")
    if memo is not None and kind in memo:
        return memo[kind]
    # imported here: the catalog validates its entries with .profiles, which this module's package
    # imports first; at call time every module is loaded
    from vip_ray.scenario import catalog

    read = {"devices": catalog.device_catalog, "networks": catalog.network_catalog}[kind]
    entries = read(_ctx(info, "sim_root"))
    if memo is not None:
        memo[kind] = entries
    return entries


def _network_profile(name: Any, info: ValidationInfo | None, sub: str = "profile"):
    catalog = _catalog("networks", info)
    if not isinstance(name, str) or name not in catalog:
        raise _custom("unknown_profile", f"unknown network profile {name!r}; available: "
                                         f"{', '.join(sorted(catalog)) or '(none)'}", sub=sub)
    return catalog[name]


def _merge_network_profile(data: Any, info: ValidationInfo | None, fields: tuple[str, ...]) -> Any:
    if isinstance(data, dict) and data.get("profile") is not None:
        prof = _network_profile(data["profile"], info)
        data = dict(data)
        for f in fields:
            if data.get(f) is None and getattr(prof, f, None) is not None:
                value = getattr(prof, f)
                data[f] = value.model_dump() if isinstance(value, BaseModel) else value
    return data


class LinkSpec(LinkFields):
    """One master↔device link. In a device group every field is optional and overrides the
    network's; after validation every device's link is complete.

    * ``profile`` — a network catalog entry to start from (e.g. ``wan`` for a cloud server).
    * ``rtt_ms`` — round-trip propagation time, ms (each direction rtt/2).
    * ``bandwidth_mbps`` — Mbit/s (10^6 bit/s), both directions.
    * ``loss`` — probability in [0, 1) that a transmission is lost.
    * ``bandwidth_trace`` — bandwidth steps over time (see :class:`BandwidthTrace`); overrides
      ``bandwidth_mbps`` from its first step on. A link that sets its own ``bandwidth_mbps`` does
      not inherit the network's trace.
    """

    @model_validator(mode="before")
    @classmethod
    def _merge_profile(cls, data: Any, info: ValidationInfo) -> Any:
        return _merge_network_profile(data, info, _LINK_FIELDS)


class NetworkSpec(LinkSpec):
    """The network: star topology, master in the middle. ``profile`` from ``sim/networks`` and/or
    inline fields (inline wins). Fields as :class:`LinkSpec`, plus ``shared_medium``: one
    downlink transmission of each input serves every device at once (Wi-Fi multicast), at the
    slowest link's bandwidth; ``false`` = switched, one unicast per device. Defaults: loss 0,
    shared_medium false; ``rtt_ms`` and ``bandwidth_mbps`` are required (inline or from the profile).
    """

    shared_medium: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _merge_profile(cls, data: Any, info: ValidationInfo) -> Any:
        return _merge_network_profile(data, info, _LINK_FIELDS + ("shared_medium",))

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> NetworkSpec:
        for f in ("rtt_ms", "bandwidth_mbps"):
            if getattr(self, f) is None:
                names = ", ".join(sorted(_catalog("networks", info)))
                raise _custom("required", f"required: set {f} or a profile (available: {names})", sub=f)
        if self.loss is None:
            self.loss = 0.0
        if self.shared_medium is None:
            self.shared_medium = False
        return self
