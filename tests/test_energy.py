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


def test_on_a_shared_medium_the_master_sends_each_input_once_and_every_worker_hears_it():
    """Wi-Fi multicast: 40 inputs of 1,000 B to two workers on one shared medium (radios 400 / 50
    and 300 / 80 nJ a bit): the master transmits 40 inputs once each, at the costlier radio's 400
    nJ/bit, not once per worker; each worker receives all 40; replies stay per link. Per request:
    the one transmission, both receptions, both replies at both ends."""
    from types import SimpleNamespace

    from vip_ray.core.tables import Outcome as O

    r1, r2 = RadioSpec(tx_j_per_bit=400e-9, rx_j_per_bit=50e-9), RadioSpec(tx_j_per_bit=300e-9, rx_j_per_bit=80e-9)
    devs = (DeviceSpec("m", (VariantSlot(0.0, 0, 0.01),), role="master"),
            DeviceSpec("a", (VariantSlot(0.0, 0, 0.01),), link=LinkSpec(0.002, 2e6, radio=r1), reply_bytes=20),
            DeviceSpec("b", (VariantSlot(0.0, 0, 0.01),), link=LinkSpec(0.002, 1e6, radio=r2), reply_bytes=30))
    spec = SimSpec(devs, WorkloadSpec("periodic", rate_hz=5.0, n_requests=40, deadline_s=0.5, input_bytes=1000),
                   shared_medium=True, seed=2)
    cols = E.device_energy(spec, _frame(run(spec, "loop")), 1000, np.arange(40) * 0.2)
    bits_in = 40 * 1000 * 8
    assert cols["energy_radio_j"][0] == pytest.approx(
        bits_in * 400e-9 + 40 * 20 * 8 * 50e-9 + 40 * 30 * 8 * 80e-9, rel=1e-12)
    assert cols["energy_radio_j"][1] == pytest.approx(bits_in * 50e-9 + 40 * 20 * 8 * 400e-9, rel=1e-12)
    assert cols["energy_radio_j"][2] == pytest.approx(bits_in * 80e-9 + 40 * 30 * 8 * 300e-9, rel=1e-12)
    timing = SimpleNamespace(outcome=np.array([[O.REPLIED, O.REPLIED, O.REPLIED]], dtype=np.int8),
                             reply_at=np.zeros((1, 3)))
    use = np.array([[False, True, True]])
    got = E.request_energy([(devs, 1000, 1)], timing, use, shared_medium=True)
    want = 8000 * 400e-9 + 8000 * (50e-9 + 80e-9) + 160 * (400e-9 + 50e-9) + 240 * (300e-9 + 80e-9)
    np.testing.assert_allclose(got, [want], rtol=1e-12)
    # switched (one unicast per worker): each input at both ends of each link
    switched = 8000 * (450e-9 + 380e-9) + 160 * 450e-9 + 240 * 380e-9
    np.testing.assert_allclose(E.request_energy([(devs, 1000, 1)], timing, use), [switched], rtol=1e-12)
    # the master's expected radio power (for its battery): 5 inputs a second sent once, replies received
    assert E.mean_power(devs[0], 5.0, 1000, [(d.link, d.reply_bytes) for d in devs[1:]], 400e-9) == pytest.approx(
        5 * (8000 * 400e-9 + 160 * 50e-9 + 240 * 80e-9), rel=1e-12)


def test_radio_tail_is_cut_short_by_the_next_input():
    """Inputs every 2 s with an 11.576 s tail at 1.06 W: each tail but the last lasts 2 s."""
    arrivals = np.arange(10) * 2.0
    tail = E.tail_energy(arrivals, 1.06, 11.576)
    assert tail.sum() == pytest.approx(1.06 * (9 * 2.0 + 11.576))
    assert E.tail_energy(np.arange(5) * 20.0, 1.06, 11.576).sum() == pytest.approx(5 * 1.06 * 11.576)


def test_per_request_energy_is_each_used_jobs_own_compute_plus_its_bits_at_both_ends():
    """Two requests over a master (busy 5 W), worker ``a`` (10 W, 10-byte replies) and worker ``b``
    (no power block, 20-byte replies), both on a link at 300 + 100 nJ/bit, 1,000-byte inputs.
    Request 0 uses the master's job (10 ms) and a's (30 ms from start to end, 10 ms of it paused:
    20 ms of compute); b's reply was lost on the uplink (sent: its bits count, nobody used it).
    Request 1 uses the master's 12 ms; a's input was lost on the way (a's radio listened), b was
    never sent it (another master's device)."""
    from types import SimpleNamespace

    from vip_ray.core.tables import Outcome as O

    tx, rx = 300e-9, 100e-9
    link = LinkSpec(0.002, 1e6, radio=RadioSpec(tx_j_per_bit=tx, rx_j_per_bit=rx))
    devs = (DeviceSpec("m", (VariantSlot(0.0, 0, 0.5),), role="master", power=PowerSpec(1.0, 5.0)),
            DeviceSpec("a", (VariantSlot(0.0, 1, 0.5),), link=link, reply_bytes=10, power=PowerSpec(1.0, 10.0)),
            DeviceSpec("b", (VariantSlot(0.0, 2, 0.5),), link=link, reply_bytes=20))
    inf = math.inf
    timing = SimpleNamespace(
        outcome=np.array([[O.REPLIED, O.REPLIED, O.LOST_UP], [O.REPLIED, O.LOST_DOWN, O.NOT_SENT]], dtype=np.int8),
        start_at=np.array([[0.0, 0.02, 0.03], [0.2, inf, inf]]),
        end_at=np.array([[0.01, 0.05, 0.04], [0.212, inf, inf]]),
        paused_s=np.array([[0.0, 0.01, 0.0], [0.0, 0.0, 0.0]]), ready_at=np.zeros((2, 3)), reply_at=np.zeros((2, 3)))
    use = np.array([[True, True, False], [True, False, False]])
    got = E.request_energy([(devs, 1000, 2)], timing, use)
    j = tx + rx
    want = [0.01 * 5.0 + 0.02 * 10.0 + 2 * 8000 * j + (8 * 10 + 8 * 20) * j,
            0.012 * 5.0 + 8000 * j]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # without stage times (an engine that does not record them): the used devices' mean service time
    plain = SimpleNamespace(outcome=timing.outcome, reply_at=timing.reply_at)
    np.testing.assert_allclose(E.request_energy([(devs, 1000, 2)], plain, use),
                               [0.5 * 5 + 0.5 * 10 + 2 * 8000 * j + 240 * j, 0.5 * 5 + 8000 * j], rtol=1e-12)
    # no power or radio anywhere: no figure
    bare = tuple(DeviceSpec(d.name, d.slots, role=d.role, link=LinkSpec(0.002, 1e6) if d.link else None)
                 for d in devs)
    assert np.isnan(E.request_energy([(bare, 1000, 2)], timing, use)).all()


def _with_energy(spec, seed=0):
    """``spec`` with a power block on every device and a radio (no tail) on every link, drawn at random."""
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    devs = []
    for d in spec.devices:
        radio = RadioSpec(tx_j_per_bit=float(rng.uniform(50, 500)) * 1e-9,
                          rx_j_per_bit=float(rng.uniform(20, 200)) * 1e-9)
        devs.append(replace(d, power=PowerSpec(float(rng.uniform(1, 3)), float(rng.uniform(4, 15))),
                            link=None if d.link is None else replace(d.link, radio=radio)))
    return replace(spec, devices=tuple(devs))


@pytest.mark.parametrize("seed", range(6))
def test_per_request_energy_is_the_same_in_every_engine_and_counts_each_job(seed):
    """On the random specs that prove the engines identical (with power and radios added): every
    engine writes the same ``energy_j``, and it is, job by job, the used jobs' end - start - paused
    at busy_w plus every sent input and every sent reply (replied or lost up) at tx + rx J/bit."""
    from tests.test_breakdown import ENGINES, fanout
    from tests.test_sim_engine import rand_spec
    from vip_ray.core.master import request_table
    from vip_ray.core.tables import sample_rng

    spec = _with_energy(rand_spec(seed), seed)
    dep = fanout(spec, ("none", "local", "best_effort")[seed % 3])
    names = [d.name for d in spec.devices]
    first = None
    for engine in ENGINES:
        res = run(dep.world, engine)
        rows = request_table(res, dep, replication=0, sample_rng=sample_rng(dep.seed))
        got = rows["energy_j"].to_numpy()
        if first is None:
            first = got
            want = np.zeros(len(rows))
            for i in range(len(rows)):
                used = [names.index(n) for n in str(rows["responders"].iloc[i]).split(",") if n]
                for d, dev in enumerate(spec.devices):
                    if d in used:
                        want[i] += (res.end_at[i, d] - res.start_at[i, d] - res.paused_s[i, d]) * dev.power.busy_w
                    if dev.link is None or res.outcome[i, d] == 7:     # no link / not sent
                        continue
                    j = dev.link.radio.tx_j_per_bit + dev.link.radio.rx_j_per_bit
                    # on a shared medium the master's transmission is the request's, once (below)
                    want[i] += 8 * spec.workload.input_bytes * (dev.link.radio.rx_j_per_bit if spec.shared_medium else j)
                    if res.outcome[i, d] in (0, 5):                    # a reply left the device
                        want[i] += 8 * dev.reply_bytes * j
                nets = [d for d, dev in enumerate(spec.devices) if dev.link is not None and res.outcome[i, d] != 7]
                if spec.shared_medium and nets:   # one transmission, the costliest radio of the medium
                    want[i] += 8 * spec.workload.input_bytes * max(
                        dev.link.radio.tx_j_per_bit for dev in spec.devices if dev.link is not None)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        else:
            np.testing.assert_array_equal(got, first, err_msg=engine)


def test_per_request_energy_adds_up_to_the_devices_compute_and_radio_when_every_reply_is_used():
    """Always up, lossless, no tail, a deadline nobody misses: every job's work is some request's,
    so the requests' energy adds up to the devices' compute + radio energy (idle is nobody's)."""
    from tests.test_breakdown import ENGINES, fanout
    from vip_ray.core.master import request_table
    from vip_ray.core.tables import sample_rng

    radio = RadioSpec(tx_j_per_bit=283e-9, rx_j_per_bit=137e-9)
    devs = (DeviceSpec("m", (VariantSlot(0.0, 0, 0.01),), role="master", service_dist="exponential", jitter_cv=1.0,
                       power=PowerSpec(2.0, 6.0)),
            DeviceSpec("a", (VariantSlot(0.0, 1, 0.02),), service_dist="lognormal", jitter_cv=0.5,
                       link=LinkSpec(0.004, 5e6, radio=radio), reply_bytes=18, power=PowerSpec(3.0, 9.0)),
            DeviceSpec("b", (VariantSlot(0.0, 2, 0.015),), link=LinkSpec(0.002, 20e6, radio=radio), reply_bytes=18,
                       power=PowerSpec(1.0, 4.0)))
    spec = SimSpec(devs, WorkloadSpec("poisson", rate_hz=20.0, n_requests=400, deadline_s=30.0, input_bytes=3072),
                   seed=4)
    dep = fanout(spec)
    for engine in ENGINES:
        res = run(spec, engine)
        rows = request_table(res, dep, replication=0, sample_rng=sample_rng(dep.seed))
        assert rows["n_responders"].eq(3).all()
        cols = E.device_energy(spec, _frame(res), 3072, res.arrival)
        total = cols["energy_compute_j"].sum() + cols["energy_radio_j"].sum()
        assert rows["energy_j"].sum() == pytest.approx(total, rel=1e-12), engine


def test_chain_request_energy_is_its_slices_compute_and_its_bytes_on_each_link():
    """mp, the hand-worked chain of tests/test_breakdown.py: the master computes 10 ms (6 W), sends
    a 1,000-byte activation to the worker (no power block) over a 400 + 100 nJ/bit link, which
    computes 5 ms and returns 10 bytes: 0.010 * 6 + 8 * 1,010 * 500e-9 J per request."""
    from vip_ray.sim.chain import ChainSpec, run_chain

    radio = RadioSpec(tx_j_per_bit=400e-9, rx_j_per_bit=100e-9)
    devs = (DeviceSpec("m", (VariantSlot(0.0, 0, 0.010),), power=PowerSpec(2.0, 6.0)),
            DeviceSpec("w", (VariantSlot(0.0, 0, 0.005),), link=LinkSpec(0.002, 1e6, radio=radio)))
    spec = ChainSpec(devices=devs, stages=(0, 1), stage_bytes=(100, 1000), out_bytes=10, master=0,
                     workload=WorkloadSpec("periodic", rate_hz=200, n_requests=2, deadline_s=1.0, input_bytes=100))
    res = run_chain(spec)
    np.testing.assert_allclose(res.work, [[0.010, 0.005]] * 2, atol=1e-15)
    np.testing.assert_array_equal(res.link_bytes, [[0, 1010]] * 2)
    got = E.chain_energy(devs, res.work, res.link_bytes, np.array([True, False]))
    np.testing.assert_allclose(got, [0.010 * 6 + 8 * 1010 * 500e-9, 8 * 1010 * 500e-9], rtol=1e-12)


def _end_cloud_timeline():
    """COACH's pipeline, the exact timeline of tests/test_breakdown.py: 10 ms on the end device,
    264 bytes up at 1 Mbit/s, 2.5 ms on the cloud, 40 bytes down; tasks at 0, 2 ms and 100 ms, the
    last exits early (all on the end device, nothing sent)."""
    import torch.nn as nn

    from vip_ray.coach.blocks import Chain as Dag
    from vip_ray.coach.offline import CostModel
    from vip_ray.coach.profile import trace_dag
    from vip_ray.sim.pipeline import Decision, simulate_pipeline

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    dag = Dag(trace_dag(net, (3, 8, 8)))
    cost = CostModel(dag, np.array([0.0, 0.010, 0.002, 0.020]), np.array([0.0, 0.001, 0.0005, 0.002]), 1e6)
    return simulate_pipeline(cost.plan(dag.boundary_cut(1)), np.array([0.0, 0.002, 0.1]),
                             LinkSpec(rtt_s=0.002, bandwidth_bps=1e6), lambda i, now, bw, p: Decision(i == 2, 8),
                             result_bytes=40)


def test_end_cloud_energy_of_a_hand_worked_pipeline():
    """The end device (3 W idle, 8 W busy) computes 10 ms per task; the cloud (no power block:
    none reported, as the catalog's cloud GPU) 2.5 ms per task it answers; the link's radio costs
    283 + 137 nJ/bit at each end. Tasks 0 and 1: 0.010 * 8 + 8 * (264 + 40) * 420e-9 J; task 2
    (early exit): 0.010 * 8 J. Over the span 0 .. 0.11 s (task 2 ends at 0.1 + 0.01) the end
    device is busy 30 ms: idle 0.08 s * 3 W."""
    from types import SimpleNamespace

    res = _end_cloud_timeline()
    r = res.records
    tx, rx = 283e-9, 137e-9
    setup = SimpleNamespace(end_power=PowerSpec(3.0, 8.0), cloud_power=None,
                            link=LinkSpec(0.002, 1e6, radio=RadioSpec(tx_j_per_bit=tx, rx_j_per_bit=rx)))
    meter = E.meter_for(SimpleNamespace(setup=setup))
    rows = pd.DataFrame({"arrival_s": r["arrival_s"], "correct_top1": [True, True, False],
                         "t_end_s": r["t_end_s"], "t_cloud_s": r["t_cloud_s"],
                         "bytes_up": r["bytes_up"], "bytes_down": r["bytes_down"]})
    got = meter.annotate(rows)["energy_j"].to_numpy()
    sent = 8 * (264 + 40) * (tx + rx)
    np.testing.assert_allclose(got, [0.010 * 8 + sent, 0.010 * 8 + sent, 0.010 * 8], rtol=1e-12)
    frame = pd.DataFrame({"role": ["end", "link", "cloud"], "busy_s": [0.030, 0.0064, 0.005],
                          "available_s": [0.11, 0.11, 0.11]})
    dev = meter.devices(frame)
    np.testing.assert_allclose(dev["energy_compute_j"], [0.030 * 8, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(dev["energy_idle_j"], [0.08 * 3, 0, 0], rtol=1e-12)
    bits_up, bits_down = 2 * 264 * 8, 2 * 40 * 8
    np.testing.assert_allclose(dev["energy_radio_j"], [bits_up * tx + bits_down * rx, 0, bits_up * rx + bits_down * tx],
                               rtol=1e-12)
    fig = meter.figures()
    assert fig["energy_per_correct_j"] == pytest.approx(dev["energy_j"].sum() / 2, rel=1e-12)
    # the requests' energy is the devices' less idle (no tail here)
    assert got.sum() == pytest.approx((dev["energy_compute_j"] + dev["energy_radio_j"]).sum(), rel=1e-12)


def test_per_request_energy_without_per_job_times_is_responders_compute_plus_bytes_at_both_ends():
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


def test_end_cloud_run_reports_energy_of_the_end_device_its_radio_and_a_cloud_without_power(small_pool, tmp_path):
    """COACH on the end–cloud scenario (Jetson NX end device, 4 W idle / 15 W busy in the catalog;
    a cloud GPU with no power block; Wi-Fi at 283.17 + 137.01 nJ/bit): each task's energy is its
    head on the NX plus its tensors and answer at both ends of the link; the cloud reports no
    compute or idle energy; the summary divides all devices' energy by the tasks."""
    from vip_ray.experiment.run import run_scenario

    sets = [f"pool.root={small_pool.parent}", "pool.name=small", "workload.requests=60", "seeds.replications=1",
            "strategy.name=coach", "strategy.options.coach={model: vp_v3, calibration_samples: 120}"]
    out = run_scenario("scenarios/end_cloud_vp.yaml", overrides=sets, out=tmp_path / "run", plots=False,
                       log=lambda s: None)
    req = pd.read_parquet(out / "requests.parquet")
    dev = pd.read_parquet(out / "devices.parquet")
    j = (283.17 + 137.01) * 1e-9
    want = req["t_end_s"] * 15.0 + 8 * (req["bytes_up"] + req["bytes_down"]) * j
    np.testing.assert_allclose(req["energy_j"], want, rtol=1e-12)
    assert (req["bytes_up"] > 0).any()
    end, link, cloud = (dev.iloc[i] for i in range(3))
    assert end["energy_compute_j"] == pytest.approx(end["busy_s"] * 15.0, rel=1e-12)
    assert end["energy_idle_j"] == pytest.approx((end["available_s"] - end["busy_s"]) * 4.0, rel=1e-12)
    bits_up, bits_down = 8 * req["bytes_up"].sum(), 8 * req["bytes_down"].sum()
    assert end["energy_radio_j"] == pytest.approx(bits_up * 283.17e-9 + bits_down * 137.01e-9, rel=1e-12)
    assert cloud["energy_radio_j"] == pytest.approx(bits_up * 137.01e-9 + bits_down * 283.17e-9, rel=1e-12)
    assert cloud["energy_compute_j"] == cloud["energy_idle_j"] == link["energy_j"] == 0.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["energy_per_request_j"]["mean"] == pytest.approx(dev["energy_j"].sum() / len(req),
                                                                               rel=1e-9)
