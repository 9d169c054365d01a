"""Scenarios: validated descriptions of devices, network, workload, strategy, pool and placement.

    from vip_ray.scenario import load_scenario
    s = load_scenario("scenarios/smart_home.yaml", ["workload.deadline_ms=50"])
    s.devices            # one DeviceSpec per device (groups expanded, profiles merged, links complete)
    s.resolved()         # plain dict for a run's config.yaml; Scenario.model_validate(it) == s

Catalogs in ``sim/`` (device and network profiles, traces) are read by :mod:`.catalog`.
"""
from vip_ray.scenario.catalog import (
    TraceError,
    device_catalog,
    find_trace,
    list_traces,
    network_catalog,
    read_trace,
    sim_root,
)
from vip_ray.scenario.load import (
    DATASET_SHAPES,
    apply_overrides,
    check_pool,
    input_bytes,
    load_scenario,
    parse_scenario,
    selected_variants,
)
from vip_ray.scenario.schema import (
    AVAILABILITY_KINDS,
    MODEL_FAMILIES,
    AlwaysAvailable,
    ArrivalTrace,
    BandwidthTrace,
    CrashAvailability,
    DeviceProfile,
    DeviceSpec,
    LinkSpec,
    MtbfAvailability,
    NetworkProfile,
    NetworkSpec,
    OnOffAvailability,
    Placement,
    PoolRef,
    Scenario,
    ScenarioError,
    Seeds,
    StrategySpec,
    Straggler,
    TraceAvailability,
    Workload,
)

__all__ = [
    "AVAILABILITY_KINDS", "AlwaysAvailable", "ArrivalTrace", "BandwidthTrace",
    "CrashAvailability", "DATASET_SHAPES", "DeviceProfile", "DeviceSpec", "LinkSpec", "MODEL_FAMILIES",
    "MtbfAvailability", "NetworkProfile", "NetworkSpec", "OnOffAvailability", "Placement", "PoolRef",
    "Scenario", "ScenarioError", "Seeds", "StrategySpec", "Straggler", "TraceAvailability",
    "TraceError", "Workload", "apply_overrides", "check_pool", "device_catalog",
    "find_trace", "input_bytes", "list_traces", "load_scenario", "network_catalog", "parse_scenario",
    "read_trace", "selected_variants", "sim_root",
]
