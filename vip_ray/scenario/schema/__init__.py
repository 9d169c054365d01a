"""The scenario schema: what ``scenarios/*.yaml`` may say, with units in the field names.

Every model forbids unknown keys. Device groups and networks may name a catalog profile
(``sim/devices/*.yaml``, ``sim/networks/*.yaml``); inline fields override the profile's.
After validation a :class:`Scenario` is *resolved*: profiles merged, device groups expanded
by ``count`` into single devices, every link filled from the network, every derived default
(master, aggregator, placement policy, service distribution, request count) set. So
``Scenario.model_validate(s.resolved()) == s``.

Errors are turned into :class:`ScenarioError` by :func:`format_validation_error`: one line per
problem with the file, the key path (``devices[2].availability.kind``) and what is allowed.

One module per concern, each importing only those listed before it::

    base          shared names, number types, the base model
    errors        ScenarioError and the error formatting
    trace_refs    bandwidth and arrival traces (a file or inline values)
    availability  availability processes, stragglers
    profiles      catalog entries and the device attributes they share with scenario devices
                  (below vip_ray.scenario.catalog, which validates its entries with them)
    network       the network and its links (read the network catalog)
    devices       a scenario device (reads the device catalog)
    workload      requests and frames
    strategy      strategy, aggregation rule, placement
    masters       several masters (users) of a multi-master scenario
    scenario      the pool reference, seeds and the Scenario
"""
from vip_ray.scenario.schema.base import ARRIVALS, AVAILABILITY_KINDS, FALLBACKS, MODEL_FAMILIES, SERVICE_DISTS
from vip_ray.scenario.schema.errors import ScenarioError, format_validation_error, path_of, validate
from vip_ray.scenario.schema.trace_refs import ArrivalTrace, BandwidthTrace
from vip_ray.scenario.schema.availability import (AlwaysAvailable, Availability, CrashAvailability, MtbfAvailability,
                                                  OnOffAvailability, Straggler, TraceAvailability)
from vip_ray.scenario.schema.profiles import DeviceAttributes, DeviceProfile, LinkFields, NetworkProfile
from vip_ray.scenario.schema.network import LinkSpec, NetworkSpec
from vip_ray.scenario.schema.devices import DeviceSpec
from vip_ray.scenario.schema.workload import Frames, Workload
from vip_ray.scenario.schema.strategy import Placement, StrategySpec
from vip_ray.scenario.schema.masters import Masters, User
from vip_ray.scenario.schema.scenario import PoolRef, Scenario, Seeds

__all__ = [
    "ARRIVALS", "AVAILABILITY_KINDS", "FALLBACKS", "MODEL_FAMILIES", "SERVICE_DISTS", "AlwaysAvailable",
    "ArrivalTrace", "Availability", "BandwidthTrace", "CrashAvailability", "DeviceAttributes", "DeviceProfile",
    "DeviceSpec", "Frames", "LinkFields", "LinkSpec", "Masters", "MtbfAvailability", "NetworkProfile", "NetworkSpec",
    "OnOffAvailability", "Placement", "PoolRef", "Scenario", "ScenarioError", "Seeds", "Straggler", "StrategySpec",
    "TraceAvailability", "User", "Workload", "format_validation_error", "path_of", "validate",
]
