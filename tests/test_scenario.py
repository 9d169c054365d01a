"""Scenario schema, loader, overrides and the sim/ catalogs (no pool, no torch, no Ray)."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from vip_ray.scenario import (
    MODEL_FAMILIES,
    Scenario,
    ScenarioError,
    apply_overrides,
    check_pool,
    device_catalog,
    input_bytes,
    load_scenario,
    network_catalog,
    parse_scenario,
    selected_variants,
)

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "scenarios"
SHIPPED = ["smart_home", "homogeneous_office", "cycle_stealing", "degrading_network"]
SMART_HOME = SCENARIOS / "smart_home.yaml"


def _raw(name: str = "smart_home") -> dict:
    return yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())


def _error(data=None, overrides=(), file="scen.yaml", **kw) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(_raw() if data is None else data, file=file, overrides=overrides, **kw)
    text = str(info.value)
    for leak in ("pydantic", "validation error", "errors.pydantic.dev", "Traceback", "Value error"):
        assert leak not in text, text
    return info.value


# --- shipped scenarios -------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenario_loads_and_round_trips(name):
    s = load_scenario(SCENARIOS / f"{name}.yaml")
    assert s.name == name
    assert sum(d.role == "master" for d in s.devices) == 1
    assert all(d.count == 1 and d.link.bandwidth_mbps > 0 and d.link.rtt_ms is not None for d in s.devices)
    assert len({d.name for d in s.devices}) == len(s.devices)
    assert s.strategy.name in ("vp", "vip") and s.strategy.aggregator == s.strategy.name
    resolved = s.resolved()
    again = Scenario.model_validate(yaml.safe_load(yaml.safe_dump(resolved)))  # YAML-safe, and equal
    assert again == s
    assert again.resolved() == resolved


def test_shipped_scenarios_say_what_they_promise():
    home = load_scenario(SMART_HOME)
    assert [d.name for d in home.devices] == ["tablet", "tv", "pi", "nx", "tx2"]
    assert home.master.name == "tablet" and home.master.profile == "tablet_vp"
    assert (home.network.rtt_ms, home.network.bandwidth_mbps, home.network.shared_medium) == (2.0, 1.0, True)
    assert home.pool.name == "default" and home.placement.policy == "capacity"

    office = load_scenario(SCENARIOS / "homogeneous_office.yaml")
    assert [d.name for d in office.devices] == [f"desk-{i}" for i in range(10)]
    assert {d.group for d in office.devices} == {"desk"} and office.master.name == "desk-0"
    assert office.strategy.name == "vip" and office.strategy.k == "all" and office.strategy.top_k is None
    assert office.pool.name == "resnet50_slices-homogeneous-crops-mnist5k"
    assert office.placement.policy == "diverse"

    steal = load_scenario(SCENARIOS / "cycle_stealing.yaml")
    kinds = {d.name: d.availability.kind for d in steal.devices}
    assert kinds == {"tablet": "always", "tv": "trace", "pi-0": "onoff", "pi-1": "onoff", "pi-2": "onoff",
                     "nx": "onoff", "tx2": "mtbf"}
    pi = steal.device("pi-1").availability
    assert (pi.distribution, pi.weibull_shape, pi.mode, pi.stationary()) == ("weibull", 0.7, "drop", 0.5)
    assert steal.device("tv").availability.intervals[0] == (4.0, 11.5)
    assert steal.placement.dynamic and steal.workload.duration_s == 120 and steal.workload.requests is None

    degrade = load_scenario(SCENARIOS / "degrading_network.yaml")
    assert all(d.link.bandwidth_trace.points == [(0.0, 20.0), (20.0, 10.0), (40.0, 5.0)] for d in degrade.devices)
    assert degrade.workload.arrival == "periodic" and degrade.workload.rate == 2.0


# --- catalogs ----------------------------------------------------------------------------------


def test_device_catalog_entries_load_with_positive_speeds():
    cat = device_catalog()
    assert {"tablet_vp", "jetson_nx", "jetson_tx2", "raspberry_pi4", "smart_tv", "cloud_gpu"} <= set(cat)
    for name, p in cat.items():
        assert p.name == name and p.source.strip() and p.memory_mb > 0
        speeds = [p.macs_per_s or 0] + list((p.macs_per_s_by_family or {}).values())
        assert any(v > 0 for v in speeds) or p.latency_ms, name
        assert all(v > 0 for v in speeds if v) and all(v > 0 for v in (p.latency_ms or {}).values())
        assert set(p.macs_per_s_by_family or {}) <= set(MODEL_FAMILIES)
    # tablet: VP Table VII latencies of V1..V6 against their Table II MACs
    macs, ms = [10, 17, 27, 40, 54, 71], [17, 26.5, 38, 53, 71, 91]
    assert cat["tablet_vp"].macs_per_s == pytest.approx(sum(macs) * 1e6 / (sum(ms) / 1e3), rel=0.01)
    assert cat["tablet_vp_table7"].latency_ms["vp_v5"] == 71.0
    assert cat["jetson_nx"].macs_per_s > cat["jetson_tx2"].macs_per_s > cat["tablet_vp"].macs_per_s
    assert cat["smart_tv"].availability.kind == "onoff" and cat["cloud_gpu"].link.profile == "wan"


def test_network_catalog_entries():
    cat = network_catalog()
    assert {"smart_home_wifi", "wifi_5ghz", "lte", "5g", "wan"} <= set(cat)
    for name, n in cat.items():
        assert n.source.strip() and n.rtt_ms >= 0 and n.bandwidth_mbps > 0 and 0 <= n.loss < 1, name
    home = cat["smart_home_wifi"]
    assert (home.rtt_ms, home.bandwidth_mbps, home.shared_medium) == (2.0, 1.0, True)


def test_families_and_aggregators_match_the_other_parts():
    tree = ast.parse((REPO / "vip_ray/models/registry.py").read_text())  # no torch import needed
    families = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", None) == "FAMILIES" for t in n.targets))
    assert tuple(families) == MODEL_FAMILIES
    s = parse_scenario(_raw(), overrides=["strategy.aggregator=majority"])
    assert s.strategy.aggregator == "majority"


def test_broken_catalog_file_is_named(tmp_path):
    root = tmp_path / "sim"
    shutil.copytree(REPO / "sim", root)
    (root / "devices" / "smart_tv.yaml").write_text("name: smart_tv\nsource: x\nmacs_per_s: 1e9\nspeed: 3\n")
    e = _error(sim_root=root)
    assert "smart_tv.yaml" in str(e) and "unknown key 'speed'" in str(e) and "macs_per_s" in str(e)


# --- overrides ---------------------------------------------------------------------------------


def test_overrides_nested_list_index_append_and_types():
    raw = _raw()
    out = apply_overrides(raw, ["workload.deadline_ms=50", "devices.0.count=1", "devices[2].count=3",
                                "network.bandwidth_mbps=5", "devices.5={name: cloud, profile: cloud_gpu}",
                                "devices.1.availability.kind=always", "placement.params.x=[1, 2]"])
    assert raw["workload"]["deadline_ms"] == 50 and "bandwidth_mbps" not in raw["network"]  # input untouched
    assert out["devices"][2]["count"] == 3 and out["devices"][5]["profile"] == "cloud_gpu"
    assert out["placement"]["params"] == {"x": [1, 2]}
    s = load_scenario(SMART_HOME, ["workload.deadline_ms=50", "devices.2.count=3", "network.bandwidth_mbps=5",
                                   "devices.5={name: cloud, profile: cloud_gpu}", "devices.1.availability=always"])
    assert s.workload.deadline_ms == 50
    assert [d.name for d in s.devices] == ["tablet", "tv", "pi-0", "pi-1", "pi-2", "nx", "tx2", "cloud"]
    assert s.device("pi-2").group == "pi" and s.device("tv").availability.kind == "always"
    assert s.network.bandwidth_mbps == 5 and s.device("nx").link.bandwidth_mbps == 5
    assert s.device("cloud").link.rtt_ms == 80.0  # cloud_gpu's own link profile (wan) wins over the network


def test_bad_override_names_the_override():
    e = _error(overrides=["devices.9.count=3"])
    assert "devices.9.count=3" in str(e) and "out of range" in str(e) and "5 entries" in str(e)
    e = _error(overrides=["deadline"])
    assert "'deadline'" in str(e) and "key.path=value" in str(e)
    e = _error(overrides=["workload.deadline_ms=soon"])
    assert "workload.deadline_ms" in str(e) and "expected a number" in str(e) and "workload.deadline_ms=soon" in str(e)


# --- errors: file, key path, allowed values ------------------------------------------------------


def test_unknown_key_lists_allowed_keys():
    raw = _raw()
    raw["devices"][2]["availabilty"] = "always"
    e = _error(raw)
    assert str(e).startswith("scen.yaml: devices[2].availabilty: unknown key 'availabilty'; allowed: ")
    assert "availability" in str(e) and "macs_per_s" in str(e)
    assert e.file == "scen.yaml" and e.problems[0][0] == "devices[2].availabilty"


def test_bad_enum_names_path_and_allowed_values(tmp_path):
    path = tmp_path / "bad.yaml"
    raw = _raw()
    raw["devices"][2]["availability"] = {"kind": "sometimes"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert str(path) in msg and "devices[2].availability.kind" in msg
    assert "'sometimes'" in msg and "always, onoff, trace, crash, mtbf" in msg
    e = _error(overrides=["workload.fallback=retry"])
    assert "workload.fallback" in str(e) and "none, local, best_effort" in str(e)


def test_wrong_type_names_expected_type():
    raw = _raw()
    raw["devices"][1]["count"] = "three"
    e = _error(raw)
    assert "devices[1].count: expected an integer, got 'three'" in str(e)
    e = _error(overrides=["workload=5"])
    assert "workload: expected a mapping" in str(e)


def test_missing_profile_lists_available_profiles():
    e = _error(overrides=["devices.1.profile=smart_fridge"])
    assert "devices[1].profile: unknown device profile 'smart_fridge'" in str(e)
    assert "jetson_nx" in str(e) and "tablet_vp" in str(e)
    e = _error(overrides=["network.profile=carrier_pigeon"])
    assert "network.profile" in str(e) and "smart_home_wifi" in str(e) and "wan" in str(e)


def test_two_masters_refused():
    e = _error(overrides=["devices.3.role=master"])
    assert "devices[3].role" in str(e) and "devices[0] (tablet)" in str(e) and "exactly one" in str(e)
    e = _error(overrides=["devices.0.count=2"])
    assert "devices[0].count" in str(e) and "master is one device" in str(e)


def test_requests_and_duration_both_set_refused():
    e = _error(overrides=["workload.duration_s=30"])
    assert "workload.duration_s" in str(e) and "requests" in str(e) and "exactly one" in str(e)
    s = parse_scenario(_raw(), overrides=["workload.duration_s=30", "workload.requests=null"])
    assert (s.workload.requests, s.workload.duration_s) == (None, 30)


def test_unknown_trace_file_lists_the_folder():
    e = _error(overrides=["network.bandwidth_trace=lunar_link.csv"])
    msg = str(e)
    assert "network.bandwidth_trace" in msg and "'lunar_link.csv'" in msg
    assert "traces" in msg and "degrading_20_10_5.csv" in msg and "tv_viewing_busy.csv" in msg
    e = _error(overrides=["devices.1.availability={kind: trace, file: nope.csv}"])
    assert "devices[1].availability.file" in str(e) and "tv_viewing_busy.csv" in str(e)


def test_malformed_trace_file_names_the_line(tmp_path):
    (tmp_path / "bw.csv").write_text("t_s,mbps\n0,20\n10,fast\n")
    raw = _raw()
    raw["network"]["bandwidth_trace"] = "bw.csv"
    e = _error(raw, file=str(tmp_path / "x.yaml"))
    assert "bw.csv: line 3" in str(e) and "network.bandwidth_trace.file" in str(e)


def test_strategy_name_is_an_identifier_checked_later_by_the_registry():
    s = parse_scenario(_raw(), overrides=["strategy.name=coach", "strategy.options={mp: {on_failure: stall}}"])
    assert s.strategy.name == "coach" and s.strategy.aggregator is None
    assert s.strategy.options == {"mp": {"on_failure": "stall"}}
    e = _error(overrides=["strategy.name=Bad-Name"])
    assert "strategy.name" in str(e)


def test_several_problems_reported_together():
    raw = _raw()
    raw["engine"] = "ray"
    raw["seeds"]["replications"] = 0
    e = _error(raw)
    assert "2 problems" in str(e) and {p for p, _ in e.problems} == {"engine", "seeds.replications"}


# --- semantics -----------------------------------------------------------------------------------


def test_defaults_are_filled():
    s = parse_scenario({"devices": [{"profile": "raspberry_pi4", "count": 3}]}, file="mini.yaml")
    assert s.name == "mini" and s.pool.name == "default" and s.network.bandwidth_mbps == 1.0
    assert [d.name for d in s.devices] == ["raspberry_pi4-0", "raspberry_pi4-1", "raspberry_pi4-2"]
    assert s.master.name == "raspberry_pi4-0" and s.placement.policy == "diverse"
    w = s.workload
    assert (w.arrival, w.rate_hz, w.requests, w.deadline_ms, w.fallback) == ("poisson", 10.0, 1000, 100.0, "local")
    assert (s.strategy.name, s.strategy.aggregator, s.strategy.k, s.strategy.alpha) == ("vp", "vp", 2, 1.0)
    assert (s.seeds.base, s.seeds.replications, s.engine, s.sim_engine) == (0, 1, "sim", "fast")
    d = s.devices[0]
    assert (d.service_dist, d.jitter_cv) == ("deterministic", 0.0)
    assert parse_scenario({"devices": [{"macs_per_s": 1e9, "jitter_cv": 0.2}]}).devices[0].service_dist == "lognormal"


def test_service_time_precedence():
    s = parse_scenario(_raw(), overrides=["devices.1.profile=tablet_vp_table7"])
    tv = s.device("tv")
    assert tv.service_ms(macs=54e6, model="vp_v5", family="vp") == 71.0          # measured table
    assert tv.service_ms(macs=8.3e6, model="vp_v9", family="vp") == pytest.approx(5.3 + 10.0)  # fit
    nx = s.device("nx")
    assert nx.service_ms(macs=4.2e7, model="vp_v1", family="vp") == pytest.approx(1.0)
    assert nx.service_ms(macs=1.06e8, model="resnet50_s3", family="resnet50_slices") == pytest.approx(1.0)
    only_table = parse_scenario(_raw(), overrides=["devices.2.latency_ms={vp_v1: 3}"]).device("pi")
    assert only_table.macs_per_s is None and only_table.macs_per_s_by_family is None  # compute is one unit
    with pytest.raises(ScenarioError, match="no latency_ms entry for 'vp_v2'"):
        only_table.service_ms(macs=1e6, model="vp_v2", family="vp")


def test_device_link_overrides_network():
    s = parse_scenario(_raw("degrading_network"), overrides=["devices.1.link={bandwidth_mbps: 40}",
                                                             "devices.2.link.rtt_ms=9"])
    assert s.device("nx").link.bandwidth_mbps == 40 and s.device("nx").link.bandwidth_trace is None
    assert s.device("tx2").link.rtt_ms == 9 and s.device("tx2").link.bandwidth_trace is not None
    assert Scenario.model_validate(s.resolved()) == s


def _manifest(data_name="mnist5k", source="mnist5k", channels=1):
    members = [SimpleNamespace(id=f"vp_v{i}", role="variant", model=f"vp_v{i}", family="vp") for i in range(1, 4)]
    members.append(SimpleNamespace(id="mobilenet_v2", role="baseline", model="mobilenet_v2", family="baseline"))
    return SimpleNamespace(
        name="toy", members=members, data={"name": data_name, "channels": channels},
        config={"data": {"name": data_name, "source": source}},
        ids=lambda role=None: [m.id for m in members if role in (None, m.role)])


def test_pool_checks_and_input_bytes():
    s = load_scenario(SMART_HOME)
    m = _manifest()
    check_pool(s, m)
    assert [v.id for v in selected_variants(s, m)] == ["vp_v1", "vp_v2", "vp_v3"]
    assert input_bytes(s, m) == 784
    assert input_bytes(s, _manifest("c10", "cifar10", 3)) == 3072
    assert input_bytes(load_scenario(SCENARIOS / "degrading_network.yaml"), m) == 150528
    with pytest.raises(ScenarioError, match="pool.variants\\[1\\].*no member 'vp_v9'"):
        check_pool(parse_scenario(_raw(), overrides=["pool.variants=[vp_v1, vp_v9]"]), m)
    only = parse_scenario(_raw(), overrides=["devices.2.latency_ms={vp_v7: 3}"])
    with pytest.raises(ScenarioError, match="device 'pi'.*can run none"):
        check_pool(only, m)


@pytest.mark.parametrize("overrides,key", [
    (["workload.arrival=periodic", "workload.rate_hz=20"], "rate_hz applies to arrival 'poisson'"),
    (["workload.fps=30"], "fps applies to arrival 'periodic'"),
])
def test_a_rate_the_arrival_process_would_ignore_is_refused(overrides, key):
    with pytest.raises(ScenarioError) as e:
        load_scenario("scenarios/smart_home.yaml", overrides)
    assert key in str(e.value) and "workload" in str(e.value)

