"""Placement: which pool variant runs on which device. Shared by the simulator and the Serve
emulation (neither imports the other); register new policies with :func:`register_placement`."""
from vip_ray.placement.base import (PLACEMENTS, DeviceInfo, Placement, PlacementError, VariantInfo,
                                    get_placement, place, register_placement)
from vip_ray.placement import policies as _policies  # noqa: F401  (registers the built-in policies)

__all__ = ["PLACEMENTS", "DeviceInfo", "Placement", "PlacementError", "VariantInfo", "get_placement", "place",
           "register_placement"]
