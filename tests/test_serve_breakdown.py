"""Where a live fan-out's latency and energy went (issue 15): the Serve engine's emulated devices
record each job's stage times, its jobs table carries them, and its requests table has the
simulator's breakdown columns and per-request energy, computed by the same code
(``vip_ray.core.breakdown``, ``vip_ray.core.energy``) — on a scenario both engines agree on
(three devices always up, no loss, emulated delays of 40–60 ms, X = 3)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from vip_ray import analysis
from vip_ray.core.breakdown import BREAKDOWN_COLUMNS
from vip_ray.core.tables import Outcome
from vip_ray.experiment.run import run_scenario

from test_serve import DEVICES, deployment, emulation

pytestmark = pytest.mark.ray
# power blocks and a radio (energy only: no effect on any time), for the per-request energy
POWER_W = {"master": 3.0, "fast": 9.0, "slow": 4.0}
ENERGY = [*(f"devices.{i}.power={{idle_w: 1.0, busy_w: {w}}}" for i, w in enumerate(POWER_W.values())),
          "network.radio={tx_nj_per_bit: 400, rx_nj_per_bit: 100}"]
EXTRA = ["workload.requests=12", *ENERGY]
STAGES = (("input_at_s", "ready_at"), ("start_s", "start_at"), ("end_s", "end_at"), ("paused_s", "paused_s"),
          ("reply_at_s", "reply_at"))


@pytest.fixture(scope="module")
def sets(small_pool):
    return [f"pool.root={small_pool.parent}", "pool.name=small"]


@pytest.fixture(scope="module")
def live(sets, small_pool):
    """One dilated live replay (local testing: the real app in this process) and the simulator's
    reference run and tables of the same scenario and seed."""
    from vip_ray.pool import Pool
    from vip_ray.serve.app import ServeEmulation
    from vip_ray.serve.engine import bank_inputs, replay_tables
    from vip_ray.sim import run

    pool = Pool.load(small_pool)
    images = bank_inputs(pool)
    ref = run(deployment(DEVICES, sets, pool, EXTRA).world, "reference")
    cfg, weights = emulation(DEVICES, sets, pool, images, extra=EXTRA)
    cfg = replace(cfg, dilation=3.0)   # the host's forward passes fit inside the emulated device times
    with ServeEmulation(cfg, weights, local_testing=True) as emu:
        replay = emu.replicate(cfg.base_seed, images=images)
    req, _, timing, jobs, _ = replay_tables(cfg, replay, pool.labels, replication=0)
    return cfg, ref, req, timing, jobs


def test_live_jobs_carry_the_simulators_stage_times(live):
    """Every live job's input at the device, service start and end, time paused and reply at the
    master equal the simulator's reference engine's for the same job, exactly: the emulated
    devices compute these instants on the emulated timeline with the simulator's floats in the
    simulator's order (a late wake-up of the harness delays only the message), so no tolerance
    is needed; the devices are always up, so no job is paused and every one completes."""
    cfg, ref, _, _, jobs = live
    assert len(jobs) == ref.outcome.size
    for d, name in enumerate(cfg.device_names):
        j = jobs[jobs["device"] == name]
        np.testing.assert_array_equal(j["request_id"], np.arange(len(ref.arrival)))
        np.testing.assert_array_equal(j["outcome"], ref.outcome[:, d])
        for col, field in STAGES:
            np.testing.assert_array_equal(j[col].to_numpy(), getattr(ref, field)[:, d], err_msg=f"{name} {col}")
    assert (ref.outcome == Outcome.REPLIED).all() and (ref.paused_s == 0).all()
    # the stages are real, ordered instants: input at the master at once, at a worker after the
    # link's transfer and RTT/2; a queue (some jobs wait); compute of the device's emulated delay
    # (40 / 45 / 60 ms, no jitter in this scenario)
    down = jobs["input_at_s"].to_numpy() - ref.arrival[jobs["request_id"]]
    at_master = (jobs["device"] == "master").to_numpy()
    assert (down[at_master] == 0).all() and (down[~at_master] > 0.002).all()   # RTT/2 = 2 ms
    assert ((jobs["start_s"] > jobs["input_at_s"]).any() and (jobs["start_s"] >= jobs["input_at_s"]).all())
    delay = jobs["device"].astype(str).map({"master": 0.040, "fast": 0.045, "slow": 0.060}).to_numpy()
    np.testing.assert_allclose(jobs["end_s"] - jobs["start_s"], delay, rtol=0, atol=1e-12)


def test_live_breakdown_is_the_simulators_and_sums_to_the_measured_latency(live, sets, tmp_path):
    """The live requests table's breakdown: the seven columns sum to the measured ``latency_s``
    (1e-9 s); where the same devices answered, the emulated stages (down, queue, compute, paused,
    up) and the decisive device are the simulator's exactly (same stage times, same code); the
    wait and the master's own time together are the simulator's wait plus the harness overhead
    (measured − emulated finish, ``serve_timing.parquet``), the overhead beyond the emulated answer
    instant being ``t_aggregate_s`` (never negative)."""
    _, ref, req, timing, _ = live
    sim = analysis.load(run_scenario(DEVICES, overrides=[*sets, *EXTRA], out=tmp_path / "sim", plots=False,
                                     log=lambda s: None))
    ok = req["answered"].to_numpy()
    assert ok.sum() >= 10
    parts = req[list(BREAKDOWN_COLUMNS)].to_numpy()
    assert not np.isnan(parts[ok]).any() and np.isnan(parts[~ok]).all()
    np.testing.assert_allclose(parts[ok].sum(axis=1), req["latency_s"].to_numpy()[ok], rtol=0, atol=1e-9)

    same = ok & (req["responders"].astype(str).to_numpy() == sim["responders"].astype(str).to_numpy())
    assert same.sum() >= 8, same.sum()
    for col in ("t_down_s", "t_queue_s", "t_compute_s", "t_paused_s", "t_up_s"):
        np.testing.assert_array_equal(req[col].to_numpy()[same], sim[col].to_numpy()[same], err_msg=col)
    assert (req["decisive_device"].astype(str)[same] == sim["decisive_device"].astype(str)[same]).all()
    # worked out here from the reference run: the decisive job (the last used reply) and its uplink
    names = list(ref.device_names)
    for i in np.flatnonzero(same):
        used = [names.index(n) for n in str(req["responders"].iloc[i]).split(",")]
        k = max(used, key=lambda c: ref.reply_at[i, c])
        assert req["decisive_device"].iloc[i] == names[k]
        assert req["t_up_s"].iloc[i] == ref.reply_at[i, k] - ref.end_at[i, k]
        assert req["t_down_s"].iloc[i] == ref.ready_at[i, k] - ref.arrival[i]
    overhead = (timing["finish_s"] - timing["emulated_finish_s"]).to_numpy()
    agg = req["t_aggregate_s"].to_numpy()
    assert (agg[ok] >= 0).all()
    np.testing.assert_allclose(agg[ok], np.maximum(overhead[ok], 0.0), rtol=0, atol=1e-9)
    np.testing.assert_allclose((req["t_wait_s"] + req["t_aggregate_s"]).to_numpy()[same],
                               sim["t_wait_s"].to_numpy()[same] + overhead[same], rtol=0, atol=1e-9)


def test_live_energy_per_request_is_the_simulators(live, sets, tmp_path):
    """``energy_j`` of the live requests: where the same devices answered, the simulator's exactly
    (the same jobs' emulated times, the same code); and worked out by hand: each used device's
    emulated delay (40 / 45 / 60 ms, no jitter) at its busy power, plus, both workers being sent
    every input and replying, their inputs and replies at 400 + 100 nJ/bit."""
    cfg, ref, req, _, _ = live
    sim = analysis.load(run_scenario(DEVICES, overrides=[*sets, *EXTRA], out=tmp_path / "sim", plots=False,
                                     log=lambda s: None))
    same = req["answered"].to_numpy() & (req["responders"].astype(str).to_numpy()
                                         == sim["responders"].astype(str).to_numpy())
    assert same.sum() >= 8
    np.testing.assert_array_equal(req["energy_j"].to_numpy()[same], sim["energy_j"].to_numpy()[same])
    delay = {"master": 0.040, "fast": 0.045, "slow": 0.060}
    j = 500e-9
    radio = sum(8 * (cfg.workload.input_bytes + d.reply_bytes) * j for d in cfg.devices if d.link is not None)
    assert (ref.outcome == Outcome.REPLIED).all()
    for i in np.flatnonzero(req["answered"].to_numpy()):
        used = str(req["responders"].iloc[i]).split(",")
        want = sum(delay[n] * POWER_W[n] for n in used) + radio
        assert req["energy_j"].iloc[i] == pytest.approx(want, rel=1e-9), i
