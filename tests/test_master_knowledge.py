"""What the master knows of failures (issue 13 item 2): a missed heartbeat, not the schedule.

The oracle is the rule written out: with heartbeat period h, the master knows device d is down
at t exactly when d was down (failed, not yet repaired) at t − h — checked against a walk over
the device's own up/down periods, by brute force on a grid of instants."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vip_ray.core.master import Knowledge, expected
from vip_ray.core.streams import availability_durations
from vip_ray.core.world import Availability, DeviceSpec, VariantSlot


def _dev(name, av=None):
    return DeviceSpec(name, (VariantSlot(0.0, 0, 0.01),), availability=av or Availability())


def _down_at(av, index, seed, t):
    """Brute force: walk the up/down periods to ``t``."""
    if t < 0:
        return False
    clock, up = 0.0, True
    for d in availability_durations(av, index, seed):
        if d == math.inf or clock + d > t:
            return not up
        clock = clock + d
        up = not up
    return not up


def test_a_crash_is_known_one_heartbeat_later_and_for_good():
    """Crash at 2 s, heartbeat 0.5 s: waited for until 2.5 s, never again from then on."""
    devs = [_dev("m"), _dev("w", Availability(kind="crash", crash_at_s=2.0))]
    k = Knowledge(devs, seed=0, heartbeat_s=0.5)
    arrival = np.array([0.0, 1.99, 2.0, 2.49, 2.5, 10.0, 1e6])
    np.testing.assert_array_equal(k.mask(2, arrival)[:, 1], [False, False, False, False, True, True, True])
    assert not k.mask(2, arrival)[:, 0].any()
    np.testing.assert_array_equal(expected(devs, arrival, k)[:, 1], [True] * 4 + [False] * 3)


def test_without_a_heartbeat_the_master_never_learns():
    devs = [_dev("m"), _dev("w", Availability(kind="crash", crash_at_s=0.0))]
    assert not Knowledge(devs, seed=0, heartbeat_s=None).mask(2, np.array([0.0, 5.0, 1e9])).any()


def test_owner_preemption_is_not_a_failure():
    """On/off cycle stealing: the device answers once its owner is done; the master keeps waiting."""
    devs = [_dev("tv", Availability(kind="onoff", busy_mean_s=1.0, free_mean_s=1.0))]
    assert not Knowledge(devs, seed=3, heartbeat_s=0.1).mask(1, np.linspace(0, 50, 501)).any()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("h", [0.0, 0.3, 2.0])
def test_mtbf_knowledge_is_the_state_one_heartbeat_ago(seed, h):
    av = Availability(kind="mtbf", mtbf_s=3.0, mttr_s=1.0)
    devs = [_dev("m"), _dev("flaky", av)]
    t = np.sort(np.random.default_rng(seed).uniform(0, 60, 400))
    want = np.array([_down_at(av, 1, seed, x - h) for x in t])
    assert want.any() and not want.all()                 # the rule bites both ways
    np.testing.assert_array_equal(Knowledge(devs, seed, h).mask(2, t)[:, 1], want)
    fresh = Knowledge(devs, seed, h)                     # one instant at a time (the live master's way)
    assert [fresh.known_down(1, x) for x in t] == want.tolist()


@pytest.mark.parametrize("heartbeat", ["500", "null"])
def test_the_simulated_master_stops_waiting_one_heartbeat_after_a_crash(tmp_path, heartbeat):
    """smart_home with its most capable worker crashed at t = 0 and no cycle stealing: with a
    500 ms heartbeat, requests that leave before 0.5 s wait the whole 50 ms deadline for it, the
    later ones only for the devices that answer; with no heartbeat, every request waits 50 ms."""
    from vip_ray import analysis
    from vip_ray.experiment.run import run_scenario

    out = run_scenario("scenarios/smart_home.yaml", overrides=[
        "seeds.replications=1", "workload.requests=200", "devices.1.availability=always",
        f"workload.heartbeat_ms={heartbeat}"], failed_devices=1, out=tmp_path / "run", plots=False,
        log=lambda s: None)
    r = analysis.load(out)
    early = r["arrival_s"].to_numpy() < 0.5
    lat = r["latency_s"].to_numpy()
    assert early.sum() >= 2 and (~early).sum() >= 100
    np.testing.assert_allclose(lat[early], 0.05, rtol=0, atol=1e-12)
    if heartbeat == "null":
        np.testing.assert_allclose(lat, 0.05, rtol=0, atol=1e-12)
    else:
        assert (lat[~early] < 0.05).all()
