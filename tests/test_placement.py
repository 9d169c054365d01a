import pytest

from vip_ray.placement import DeviceInfo, PlacementError, VariantInfo, place, register_placement

# VP-like pool: bigger variants are more accurate
V = [VariantInfo(i, f"vp_v{i + 1}", f"vp_v{i + 1}", macs=m, bytes=b, accuracy=a)
     for i, (m, b, a) in enumerate([(10e6, 1.3e6, 0.80), (17e6, 1.3e6, 0.84), (27e6, 1.4e6, 0.86),
                                    (40e6, 1.4e6, 0.88), (54e6, 1.5e6, 0.89)])]


def test_capacity_gives_fast_devices_the_best_variants_within_the_deadline():
    devices = [DeviceInfo("pi", macs_per_s=1e9), DeviceInfo("nx", macs_per_s=20e9),
               DeviceInfo("tv", macs_per_s=3e9), DeviceInfo("tx2", macs_per_s=8e9)]
    # deadline 20 ms, margin 0.8 -> 16 ms of compute: pi fits only V1 (10 ms); tv fits up to V4 (13.3 ms)
    out = place("capacity", devices, V, deadline_s=0.020)
    assert out == [0, 4, 2, 3]          # nx: V5, tx2: V4 (next best, distinct), tv: V3, pi: V1
    assert len(set(out)) == 4


def test_capacity_respects_memory_and_network_time():
    devices = [DeviceInfo("tiny", macs_per_s=100e9, memory_mb=1.35), DeviceInfo("far", macs_per_s=100e9,
                                                                               network_s=0.015)]
    out = place("capacity", devices, V, deadline_s=0.020)
    assert V[out[0]].bytes / 2**20 <= 1.35            # memory-bound device: small variant
    assert out[1] == 4                                 # 0.54 ms compute + 15 ms network < 16 ms


def test_capacity_latency_table_beats_macs_estimate():
    slow_for_v5 = DeviceInfo("npu", macs_per_s=100e9, latency_s={"vp_v5": 0.5})
    assert place("capacity", [slow_for_v5], V, deadline_s=0.02) == [3]


def test_diverse_spreads_distinct_members_and_cycles():
    devices = [DeviceInfo(f"d{i}", macs_per_s=10e9) for i in range(7)]
    assert place("diverse", devices, V, deadline_s=1.0) == [0, 1, 2, 3, 4, 0, 1]


def test_registry_unknown_and_pluggable(monkeypatch):
    import vip_ray.placement.base as base

    monkeypatch.setattr(base, "PLACEMENTS", base.PLACEMENTS.copy())  # keep test policies out of the real registry
    with pytest.raises(PlacementError, match="allowed: capacity, diverse, round_robin"):
        place("best", [DeviceInfo("a", 1e9)], V, deadline_s=1)

    @register_placement("all_smallest")
    def all_smallest(devices, variants, *, deadline_s):
        return [min(variants, key=lambda v: v.macs).index] * len(devices)

    assert place("all_smallest", [DeviceInfo("a", 1e9)] * 3, V, deadline_s=1) == [0, 0, 0]
    with pytest.raises(PlacementError, match="invalid assignment"):
        register_placement("broken")(lambda d, v, *, deadline_s: [99] * len(d))
        place("broken", [DeviceInfo("a", 1e9)], V, deadline_s=1)


def test_capacity_keeps_the_ensemble_diverse_when_nothing_fits_the_deadline():
    """At a 10 ms deadline (8 ms budget) nothing fits the Pi, the TV or the TX2: each still gets a
    variant, the fastest on it among those not yet used, so the ensemble keeps distinct members
    (worked by hand: fastest device first; V1 = 10 MMACs is the fastest everywhere)."""
    devices = [DeviceInfo("pi", macs_per_s=0.5e9), DeviceInfo("tx2", macs_per_s=1.2e9),
               DeviceInfo("tv", macs_per_s=1e9)]
    out = place("capacity", devices, V, deadline_s=0.010)
    # tx2 (fastest) takes V1 (8.3 ms > 8 ms), tv the fastest unused: V2; pi then V3
    assert out == [2, 0, 1] and len(set(out)) == 3
    # a device with a per-variant latency table: "fastest on it" follows its table, not the MACs
    npu = DeviceInfo("npu", macs_per_s=0.1e9, latency_s={"vp_v4": 0.02, "vp_v1": 0.5})
    assert place("capacity", [npu], V, deadline_s=0.010) == [3]


def test_a_deadline_nothing_fits_is_said_once_and_recorded(tmp_path):
    """smart_home at 10 ms on the shipped reference pool: the run says which devices cannot answer
    in time (one line, before any result) and summary.json records it; they run distinct variants."""
    import json

    from vip_ray import analysis
    from vip_ray.experiment.run import run_scenario

    said = []
    out = run_scenario("scenarios/smart_home.yaml", overrides=["workload.deadline_ms=10", "workload.requests=200",
                                                               "seeds.replications=1"],
                       out=tmp_path / "r", plots=False, log=said.append)
    warnings = [s for s in said if "warning: placement: nothing answers within the 10 ms deadline" in s]
    assert len(warnings) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["placement_warnings"] and "10 ms" in summary["placement_warnings"][0]
    dev = analysis.load(out, "devices")
    placed = dev["variant"].dropna()
    assert placed.nunique() == len(placed)   # no two devices run the same variant


def test_dynamic_placement_stops_the_master_waiting_for_crashed_devices(tmp_path):
    """smart_home with its two most capable workers crashed at t = 0: with placement.dynamic the
    master re-places among the devices that are up and no longer waits for the crashed ones, so a
    request ends with the last reply it waits for (the deadline only when that one is late);
    without it (and without a heartbeat: tests/test_master_knowledge.py covers that), every
    request waits the whole deadline for them."""
    from vip_ray import analysis
    from vip_ray.experiment.run import run_scenario

    sets = ["workload.requests=300", "seeds.replications=1", "workload.heartbeat_ms=null"]
    runs = {dyn: analysis.load(run_scenario("scenarios/smart_home.yaml", overrides=[*sets, f"placement.dynamic={dyn}"],
                                            failed_devices=2, out=tmp_path / str(dyn), plots=False,
                                            log=lambda s: None)) for dyn in ("true", "false")}
    deadline = 0.050
    static, dynamic = runs["false"], runs["true"]
    assert (static["latency_s"] >= deadline - 1e-9).all()            # waits for the crashed ones
    assert dynamic["latency_s"].median() < deadline / 2
    assert (dynamic["n_responders"] == 3).mean() > 0.9                # the three devices still up answer
