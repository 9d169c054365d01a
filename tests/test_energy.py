"""Energy: device compute/idle energy, radio bytes x J/bit and tail, per-request energy, the battery
as a crash at its depletion time, and the energy columns of a real run. Expected values are
worked by hand (closed forms), never read back from vip_ray.core.energy."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from vip_ray.core import energy as E
from vip_ray.core.power import PowerSpec, RadioSpec
from vip_ray.core.world import Availability, DeviceSpec, LinkSpec, SimSpec, VariantSlot, WorkloadSpec
from vip_ray.sim.engine import run


def _frame(res):
    st = res.device_stats
    return pd.DataFrame({k: np.asarray(st[k]) for k in ("busy_s", "available_s", "jobs", "served", "lost_down")})


def test_busy_and_idle_energy_is_b_p_plus_t_minus_b_p_idle():
    """50 periodic requests (10 Hz), 20 ms deterministic compute on the master's own device: busy
    B = 50 * 0.02 = 1.0 s, available T = last arrival 4.9 s + deadline 0.1 s = 5.0 s."""
    dev = DeviceSpec("m", (VariantSlot(0.0, 0, 0.02),), role="master", power=PowerSpec(idle_w=2.7, busy_w=6.4))
    spec = SimSpec((dev,), WorkloadSpec("periodic", rate_hz=10.0, n_requests=50, deadline_s=0.1), seed=1)
    for engine in ("reference", "loop", "numpy", "jit"):
        cols = E.device_energy(spec, _frame(run(spec, engine)), 3072, np.arange(50) * 0.1)
        assert cols["energy_compute_j"][0] == pytest.approx(1.0 * 6.4, abs=1e-9)
        assert cols["energy_idle_j"][0] == pytest.approx((5.0 - 1.0) * 2.7, abs=1e-9)
        assert cols["energy_radio_j"][0] == 0.0
        assert cols["energy_j"][0] == pytest.approx(6.4 + 4.0 * 2.7, abs=1e-9)


def test_radio_energy_is_bytes_times_joules_per_bit_at_both_ends():
    """A worker on a lossless link without a tail: it receives 40 inputs of 1,000 B and sends 40
    replies of 20 B; the master sends and receives the same bits."""
    tx, rx = 400e-9, 50e-9
    link = LinkSpec(0.002, 1e6, radio=RadioSpec(tx_j_per_bit=tx, rx_j_per_bit=rx))
    devs = (DeviceSpec("m", (VariantSlot(0.0, 0, 0.01),), role="master"),
            DeviceSpec("w", (VariantSlot(0.0, 0, 0.01),), link=link, reply_bytes=20))
    spec = SimSpec(devs, WorkloadSpec("periodic", rate_hz=5.0, n_requests=40, deadline_s=0.5, input_bytes=1000),
                   seed=2)
    cols = E.device_energy(spec, _frame(run(spec, "loop")), 1000, np.arange(40) * 0.2)
    bits_in, bits_out = 40 * 1000 * 8, 40 * 20 * 8
    assert cols["energy_radio_j"][1] == pytest.approx(bits_in * rx + bits_out * tx, rel=1e-12)
    assert cols["energy_radio_j"][0] == pytest.approx(bits_in * tx + bits_out * rx, rel=1e-12)
    assert cols["energy_compute_j"].sum() == 0.0   # no power block: no compute or idle energy
    # given as power: J/bit = W / bandwidth (1 Mbit/s)
    assert RadioSpec(tx_w=1.2, rx_w=0.3).j_per_bit("tx", 1e6) == pytest.approx(1.2e-6)


def test_radio_tail_is_cut_short_by_the_next_input():
    """Inputs every 2 s with an 11.576 s tail at 1.06 W: each tail but the last lasts 2 s."""
    arrivals = np.arange(10) * 2.0
    tail = E.tail_energy(arrivals, 1.06, 11.576)
    assert tail.sum() == pytest.approx(1.06 * (9 * 2.0 + 11.576))
    assert E.tail_energy(np.arange(5) * 20.0, 1.06, 11.576).sum() == pytest.approx(5 * 1.06 * 11.576)


def test_per_request_energy_is_responders_compute_plus_bytes_at_both_ends():
    tx, rx = 300e-9, 100e-9
    link = LinkSpec(0.002, 1e6, radio=RadioSpec(tx_j_per_bit=tx, rx_j_per_bit=rx))
    devs = (DeviceSpec("m", (VariantSlot(0.0, 0, 0.01),), role="master", power=PowerSpec(1.0, 5.0)),
            DeviceSpec("a", (VariantSlot(0.0, 1, 0.02),), link=link, power=PowerSpec(1.0, 10.0)))
    spec = SimSpec(devs, WorkloadSpec("periodic", rate_hz=5.0, n_requests=3, deadline_s=0.5), seed=0)
    meter = E.EnergyMeter(spec)
    rows = pd.DataFrame({"arrival_s": [0.0, 0.2, 0.4], "correct_top1": [True, False, True],
                         "responders": pd.Categorical(["m,a", "m", ""]),
                         "bytes_down": [1000, 1000, 1000], "bytes_up": [10, 0, 0]})
    got = meter.annotate(rows)["energy_j"].to_numpy()
    want = [0.01 * 5.0 + 0.02 * 10.0 + 8 * 1010 * (tx + rx), 0.01 * 5.0 + 8 * 1000 * (tx + rx),
            8 * 1000 * (tx + rx)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def _battery_world(seed, battery_wh=0.01):
    """One worker, Poisson 20 Hz, exponential compute of mean 20 ms (utilisation 0.4), 2 W idle,
    8 W busy: expected mean power 2 + 0.4 * 6 = 4.4 W; 0.01 Wh = 36 J last 36 / 4.4 = 8.18 s."""
    devs = (DeviceSpec("m", (VariantSlot(0.0, 0, 0.001),), role="master"),
            DeviceSpec("w", (VariantSlot(0.0, 0, 0.02),), service_dist="exponential", jitter_cv=1.0,
                       link=LinkSpec(0.0, math.inf), power=PowerSpec(2.0, 8.0), battery_wh=battery_wh))
    return SimSpec(devs, WorkloadSpec("poisson", rate_hz=20.0, duration_s=12.0, deadline_s=0.5), seed=seed)


def test_battery_depletion_is_a_crash_at_capacity_over_mean_power():
    want_t = 0.01 * 3600 / (2.0 + 20.0 * 0.02 * (8.0 - 2.0))
    spec = E.with_batteries(_battery_world(0))
    av = spec.devices[1].availability
    assert av.kind == "crash" and av.crash_at_s == pytest.approx(want_t, rel=1e-12)
    assert spec.devices[0].availability.kind == "always"   # no battery: unchanged
    # an earlier crash wins
    early = E.with_batteries(SimSpec((spec.devices[0], DeviceSpec(
        "w", (VariantSlot(0.0, 0, 0.02),), link=LinkSpec(0.0, math.inf), power=PowerSpec(2.0, 8.0), battery_wh=0.01,
        availability=Availability(kind="crash", crash_at_s=1.0))), spec.workload))
    assert early.devices[1].availability.crash_at_s == 1.0


def test_battery_life_matches_capacity_over_measured_mean_power_over_replications():
    """Over 30 replications, capacity / (the simulated mean power up to the depletion) has a 99 %
    interval that holds the depletion time; after it the device serves nothing (it is down)."""
    want_t = 0.01 * 3600 / 4.4
    lives = []
    for seed in range(30):
        spec = E.with_batteries(_battery_world(seed))
        res = run(spec, "fast")
        frame = _frame(res)
        cols = E.device_energy(spec, frame, 0, res.arrival)
        available = float(frame["available_s"][1])
        assert available == pytest.approx(want_t, rel=1e-9)          # up until the battery is empty
        served = res.outcome[:, 1] == 0
        assert res.reply_at[served, 1].max() <= want_t + 1e-9        # nothing served after it
        assert (res.outcome[res.arrival > want_t, 1] == 2).all()      # inputs after it: device down
        lives.append(0.01 * 3600 / ((cols["energy_compute_j"][1] + cols["energy_idle_j"][1]) / available))
    lives = np.array(lives)
    half = 2.576 * lives.std(ddof=1) / np.sqrt(len(lives))
    assert abs(lives.mean() - want_t) <= half + 1e-9, (lives.mean(), half, want_t)


def test_battery_without_power_or_with_cycle_stealing_is_refused(tmp_path):
    from vip_ray.scenario import ScenarioError, load_scenario

    base = "tests/data/three_devices.yaml"
    with pytest.raises(ScenarioError, match="battery_wh"):
        load_scenario(base, ["devices.1.battery_wh=5"])
    with pytest.raises(ScenarioError, match="battery_wh"):
        load_scenario(base, ["devices.1.battery_wh=5", "devices.1.power={idle_w: 1, busy_w: 2}",
                             "devices.1.availability={kind: onoff, busy_mean_s: 1, free_mean_s: 1}"])
    sc = load_scenario(base, ["devices.1.battery_wh=5", "devices.1.power={idle_w: 1, busy_w: 2}"])
    assert sc.devices[1].battery_wh == 5.0


def test_catalog_profiles_carry_power_and_radio():
    from vip_ray.scenario import load_scenario

    sc = load_scenario("scenarios/smart_home.yaml")
    pi = next(d for d in sc.devices if d.profile == "raspberry_pi4")
    assert (pi.power.idle_w, pi.power.busy_w) == (2.7, 6.4)
    assert pi.link.radio.tx_nj_per_bit == 283.17


@pytest.fixture(scope="module")
def run_dir(small_pool, tmp_path_factory):
    from vip_ray.experiment.run import run_scenario

    sets = [f"pool.root={small_pool.parent}", "pool.name=small", "devices.0.power={idle_w: 1.0, busy_w: 3.0}",
            "devices.1.power={idle_w: 2.0, busy_w: 9.0}",
            "network.radio={tx_nj_per_bit: 400, rx_nj_per_bit: 100}"]
    return run_scenario("tests/data/three_devices.yaml", overrides=sets, out=tmp_path_factory.mktemp("e") / "run",
                        log=lambda s: None, plots=False)


def test_run_writes_energy_per_device_request_and_correct_answer(run_dir):
    dev = pd.read_parquet(run_dir / "devices.parquet")
    req = pd.read_parquet(run_dir / "requests.parquet")
    summary = json.loads((run_dir / "summary.json").read_text())
    for c in E.DEVICE_ENERGY_COLUMNS:
        assert c in dev.columns
    # the master and "fast" have power; "slow" has none: its compute and idle energy are 0
    np.testing.assert_allclose(dev["energy_compute_j"], dev["busy_s"] * dev["device"].map(
        {"master": 3.0, "fast": 9.0, "slow": 0.0}), rtol=1e-12)
    np.testing.assert_allclose(dev["energy_idle_j"], (dev["available_s"] - dev["busy_s"]) * dev["device"].map(
        {"master": 1.0, "fast": 2.0, "slow": 0.0}), rtol=1e-12)
    assert (dev.query("device == 'slow'")["energy_radio_j"] > 0).all()
    assert "energy_j" in req.columns and (req["energy_j"] > 0).all()
    m = summary["metrics"]
    total = dev.groupby("replication")["energy_j"].sum().to_numpy()
    n = req.groupby("replication").size().to_numpy()
    correct = req.groupby("replication")["correct_top1"].sum().to_numpy()
    np.testing.assert_allclose(m["energy_per_request_j"]["per_replication"], total / n, rtol=1e-9)
    np.testing.assert_allclose(m["energy_per_correct_j"]["per_replication"], total / correct, rtol=1e-9)


def test_pareto_front_keeps_the_points_no_other_beats():
    from vip_ray.experiment.energy_plots import pareto_front

    cost = np.array([1.0, 2.0, 3.0, 2.5, 0.5])
    gain = np.array([0.5, 0.8, 0.9, 0.7, 0.4])
    # (2.5, 0.7) is beaten by (2.0, 0.8); the rest trade energy for accuracy
    assert pareto_front(cost, gain).tolist() == [4, 0, 1, 2]


def test_compare_figure_has_the_energy_pareto_and_parts_panels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vip_ray.experiment.compare import compare_figure

    rows = []
    for i, s in enumerate(("vp", "vip")):
        for n in range(2):
            rows.append({"strategy": s, "condition": f"failed={n}", "failed_devices": n, "replication": 0,
                         "requests": 10, "answered": 1.0, "deadline_met": 1.0,
                         "accuracy_top1": 0.9 - 0.1 * n - 0.05 * i,
                         "accuracy_topM": 1.0, "latency_p50_ms": 10.0, "latency_p99_ms": 20.0,
                         "bytes_per_request": 100.0, "macs_per_device": 1e6, "macs_total": 3e6, "devices_used": 3,
                         "energy_per_request_j": 1.0 + i, "energy_per_correct_j": (1.0 + i) / (0.9 - 0.1 * n),
                         "energy_compute_per_request_j": 0.5, "energy_radio_per_request_j": 0.3 + i,
                         "energy_idle_per_request_j": 0.2})
    fig = compare_figure(pd.DataFrame(rows), title="t")
    pareto, parts = fig.axes[3], fig.axes[7]
    assert "energy per correct answer" in pareto.get_ylabel()
    assert len(pareto.collections) == 2                    # one scatter per strategy
    heights = [p.get_height() for p in parts.patches]      # compute, radio, idle stacked per strategy
    np.testing.assert_allclose(heights, [0.5, 0.5, 0.3, 1.3, 0.2, 0.2])
    plt.close(fig)


def test_run_writes_jobs_and_the_breakdown(run_dir):
    from vip_ray.core.breakdown import BREAKDOWN_COLUMNS, JOB_COLUMNS

    req = pd.read_parquet(run_dir / "requests.parquet")
    jobs = pd.read_parquet(run_dir / "jobs.parquet")
    assert list(jobs.columns) == list(JOB_COLUMNS)
    assert len(jobs) == len(req) * 3                  # every (request, device) job of both replications
    ans = req["answered"].to_numpy()
    total = req[list(BREAKDOWN_COLUMNS)].to_numpy()[ans].sum(axis=1)
    np.testing.assert_allclose(total, req["latency_s"].to_numpy()[ans], rtol=0, atol=1e-9)
    # the decisive reply is one of the jobs: its reply time is the finish less the wait
    y = (req["finish_s"] - req["t_wait_s"]).to_numpy()[ans]
    replies = jobs.pivot_table(index=["replication", "request_id"], columns="device", values="reply_at_s",
                               observed=True).to_numpy()[ans]
    assert np.isclose(replies, y[:, None], rtol=0, atol=1e-12).any(axis=1).all()
