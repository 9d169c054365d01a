"""The latency breakdown of requests.parquet and the per-job table jobs.parquet: on the random
specs that prove the engines identical, the breakdown sums to latency_s in every engine; exact
hand-worked timelines for each stage."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from vip_ray.core.aggregation import AggregationSpec
from vip_ray.core.breakdown import BREAKDOWN_COLUMNS, JOB_COLUMNS, JobsTable
from vip_ray.core.deployment import FanOut
from vip_ray.core.master import request_table
from vip_ray.core.tables import Outcome, sample_rng
from vip_ray.core.world import Availability, DeviceSpec, LinkSpec, SimSpec, VariantSlot, WorkloadSpec
from vip_ray.sim import run
from tests.test_sim_engine import rand_spec

ENGINES = ("reference", "loop", "numpy", "jit")
N_VARIANTS, N_SAMPLES, N_CLASSES = 7, 20, 4


def fanout(spec: SimSpec, fallback: str | None = None) -> FanOut:
    """A fan-out deployment of ``spec`` with a random prediction bank (7 variants: every index the
    random specs place)."""
    rng = np.random.default_rng(0)
    variants = tuple(SimpleNamespace(id=f"v{i}", input_size=32, width=0.35, macs=1000) for i in range(N_VARIANTS))
    probs = rng.dirichlet(np.ones(N_CLASSES), size=(N_VARIANTS, N_SAMPLES))
    if fallback is not None:
        from dataclasses import replace
        spec = replace(spec, workload=replace(spec.workload, fallback=fallback))
    pool = SimpleNamespace(labels=rng.integers(0, N_CLASSES, N_SAMPLES))
    return FanOut(strategy="vip", scenario="t", seed=spec.seed, pool=pool,
                  top_m=2, world=spec, variants=variants, probs=probs,
                  aggregation=AggregationSpec.build("vip", None, 1.0, variants, list(range(N_VARIANTS)),
                                                    num_classes=N_CLASSES))


def rows_of(spec, engine, fallback=None):
    dep = fanout(spec, fallback)
    return request_table(run(dep.world, engine), dep, replication=0, sample_rng=sample_rng(dep.seed))


@pytest.mark.parametrize("ties", [False, True], ids=["continuous", "ties"])
@pytest.mark.parametrize("seed", range(12))
def test_breakdown_sums_to_latency_in_every_engine(seed, ties):
    spec = rand_spec(seed, ties=ties)
    fallback = ("none", "local", "best_effort")[seed % 3]
    ref = None
    for engine in ENGINES:
        rows = rows_of(spec, engine, fallback)
        parts = rows[list(BREAKDOWN_COLUMNS)].to_numpy()
        ans = rows["answered"].to_numpy()
        total = parts[ans].sum(axis=1)
        np.testing.assert_allclose(total, rows["latency_s"].to_numpy()[ans], rtol=0, atol=1e-9, err_msg=engine)
        assert np.isnan(parts[~ans]).all()
        assert (parts[ans] >= -1e-9).all(), engine                  # no stage takes negative time
        if ref is None:
            ref = parts
        else:   # the engines agree on every stage, bit for bit
            np.testing.assert_array_equal(parts, ref, err_msg=engine)


def test_breakdown_of_a_hand_worked_timeline():
    """One worker on a 1 Mbit/s link (rtt 20 ms), 1,250-byte inputs (10 ms on the wire), 100 ms
    compute, an owner who takes the device over [0.15, 0.25) (resume), 125-byte replies (1 ms); the
    master's own variant takes 50 ms. Requests at 0 and 0.05, deadline 1 s.

    request 0: at the worker 0.01 + 0.01 = 0.02, computes 0.02 -> 0.12, reply 0.12 + 0.001 + 0.01 = 0.131.
    request 1: sent 0.05, at the worker 0.07, queued to 0.12, computes 0.12 -> 0.15, paused to 0.25,
    computes the remaining 0.07 s: ends 0.32, reply 0.331, latency 0.281. The master's own replies
    (0.05, 0.10) come earlier: the worker's is the decisive one."""
    master = DeviceSpec("m", (VariantSlot(0.0, 0, 0.05),), role="master")
    worker = DeviceSpec("w", (VariantSlot(0.0, 1, 0.1),), link=LinkSpec(0.02, 1e6), reply_bytes=125,
                        availability=Availability("trace", intervals=((0.15, 0.25),), mode="resume"))
    spec = SimSpec((master, worker), WorkloadSpec("trace", times=(0.0, 0.05), deadline_s=1.0, input_bytes=1250))
    for engine in ENGINES:
        rows = rows_of(spec, engine)
        b = rows[list(BREAKDOWN_COLUMNS)].to_numpy()
        # decisive job: the worker's reply (the last one the master used)
        np.testing.assert_allclose(b[0], [0.02, 0.0, 0.1, 0.0, 0.011, 0.0, 0.0], atol=1e-12, err_msg=engine)
        np.testing.assert_allclose(b[1], [0.02, 0.05, 0.1, 0.1, 0.011, 0.0, 0.0], atol=1e-12, err_msg=engine)
        np.testing.assert_allclose(rows["latency_s"], [0.131, 0.281], atol=1e-12)


def test_waiting_for_the_deadline_is_t_wait():
    """The worker crashes at 0: the master (no heartbeat) waits to the 0.5 s deadline with its own
    reply at 0.05 in hand: t_wait = 0.45."""
    master = DeviceSpec("m", (VariantSlot(0.0, 0, 0.05),), role="master")
    worker = DeviceSpec("w", (VariantSlot(0.0, 1, 0.1),), link=LinkSpec(0.0, math.inf),
                        availability=Availability("crash", crash_at_s=0.0))
    spec = SimSpec((master, worker), WorkloadSpec("trace", times=(0.0,), deadline_s=0.5))
    for engine in ENGINES:
        b = rows_of(spec, engine)[list(BREAKDOWN_COLUMNS)].to_numpy()[0]
        np.testing.assert_allclose(b, [0.0, 0.0, 0.05, 0.0, 0.0, 0.45, 0.0], atol=1e-12, err_msg=engine)


def test_jobs_table_has_every_job_and_its_stages():
    spec = rand_spec(3, n_dev=3, n_req=50)
    res = run(spec, "loop")
    t = JobsTable(0, [d.name for d in spec.devices])
    t.add(res)
    f = t.frame()
    assert list(f.columns) == list(JOB_COLUMNS)
    assert len(f) == 50 * 3
    served = f["outcome"].isin([Outcome.REPLIED, Outcome.LOST_UP]).to_numpy()
    # a served job: at the device, then started, then ended, in that order
    assert (f["input_at_s"][served] <= f["start_s"][served]).all()
    assert (f["start_s"][served] + f["paused_s"][served] <= f["end_s"][served] + 1e-12).all()
    replied = f["outcome"].to_numpy() == Outcome.REPLIED
    assert (f["end_s"][replied] <= f["reply_at_s"][replied]).all()
    np.testing.assert_array_equal(f["reply_at_s"].to_numpy().reshape(50, 3), res.reply_at)


def test_decisive_device_is_the_last_used_reply():
    master = DeviceSpec("m", (VariantSlot(0.0, 0, 0.05),), role="master")
    worker = DeviceSpec("w", (VariantSlot(0.0, 1, 0.1),), link=LinkSpec(0.0, math.inf))
    spec = SimSpec((master, worker), WorkloadSpec("trace", times=(0.0, 1.0), deadline_s=0.5))
    rows = rows_of(spec, "loop")
    assert list(rows["decisive_device"].astype(str)) == ["w", "w"]    # 0.1 s after the master's 0.05 s


def test_latency_breakdown_plot_stacks_each_devices_mean_stages(tmp_path):
    import pandas as pd

    from vip_ray.experiment.energy_plots import STAGES, breakdown_by_device, run_breakdown_plot

    cols = [c for c, _ in STAGES]
    req = pd.DataFrame({"decisive_device": pd.Categorical(["a", "b", "a", None], categories=["a", "b"]),
                        **{c: [0.001 * (j + 1), 0.002, 0.003 * (j + 1), np.nan] for j, c in enumerate(cols)}})
    names, means, counts = breakdown_by_device(req)
    assert names == ["a", "b"] and counts.tolist() == [2, 1]
    np.testing.assert_allclose(means[0], [2.0 * (j + 1) for j in range(len(cols))])   # ms: (1 + 3) / 2 x (j + 1)
    np.testing.assert_allclose(means[1], [2.0] * len(cols))
    req.to_parquet(tmp_path / "requests.parquet")
    from vip_ray.experiment.plots import new_figure

    [png] = run_breakdown_plot(tmp_path, new_figure)
    assert png.name == "latency_breakdown.png" and png.stat().st_size > 0


def test_breakdown_plot_of_a_city_lumps_the_devices_that_decided_least(monkeypatch):
    """Past MAX_DEVICE_BARS (here 3) the devices that decided fewest requests share one bar whose
    means are over their requests: d0 decided 3 requests, d1 2, d2 and d3 one each."""
    import pandas as pd

    from vip_ray.experiment import energy_plots
    from vip_ray.experiment.energy_plots import STAGES, breakdown_by_device

    monkeypatch.setattr(energy_plots, "MAX_DEVICE_BARS", 3)
    cols = [c for c, _ in STAGES]
    dev = ["d0", "d0", "d0", "d1", "d1", "d2", "d3"]
    down = [0.001, 0.002, 0.003, 0.004, 0.006, 0.010, 0.020]
    req = pd.DataFrame({"decisive_device": pd.Categorical(dev), **{c: 0.0 for c in cols}})
    req["t_down_s"] = down
    names, means, counts = breakdown_by_device(req)
    assert names == ["d0", "d1", "other 2 devices"] and counts.tolist() == [3, 2, 2]
    np.testing.assert_allclose(means[:, 0], [2.0, 5.0, 15.0])     # ms: (1+2+3)/3, (4+6)/2, (10+20)/2
    np.testing.assert_allclose(means[:, 1:], 0.0)


def test_chain_breakdown_of_a_hand_worked_timeline():
    """mp: master (10 ms) -> worker over 1 Mbit/s, rtt 2 ms; 1,000-byte activation (8 ms + 1 ms),
    5 ms on the worker, 10-byte reply (0.08 ms + 1 ms). Request 1 (at 5 ms) queues 5 ms at the
    master and nowhere else. Request 0: 0 + 10 ms compute, 9 ms down, 5 ms compute, 1.08 ms up."""
    from vip_ray.sim.chain import ChainSpec, run_chain

    def d(name, svc, link=None, availability=Availability()):
        return DeviceSpec(name, (VariantSlot(0.0, 0, svc),), link=link, availability=availability)

    link = LinkSpec(0.002, 1e6)
    spec = ChainSpec(devices=(d("m", 0.010), d("w", 0.005, link)), stages=(0, 1), stage_bytes=(100, 1000),
                     out_bytes=10, master=0,
                     workload=WorkloadSpec("periodic", rate_hz=200, n_requests=2, deadline_s=1.0, input_bytes=100))
    res = run_chain(spec)
    cols = list(BREAKDOWN_COLUMNS)
    want0 = dict(t_down_s=0.009, t_queue_s=0.0, t_compute_s=0.015, t_paused_s=0.0, t_up_s=0.00108)
    want1 = dict(want0, t_queue_s=0.005)
    for i, want in enumerate((want0, want1)):
        np.testing.assert_allclose(res.stages[i], [want.get(c, 0.0) for c in cols], atol=1e-12)
        assert res.stages[i].sum() == pytest.approx(res.finish[i] - res.arrival[i], abs=1e-12)
    # preempted at the worker: waits for the owner (queue) until 0.5, then computes
    busy = Availability("trace", intervals=((0.0, 0.5),), mode="resume")
    spec = ChainSpec(devices=(d("m", 0.0), d("w", 0.01, LinkSpec(0.0, 1e9), busy)), stages=(0, 1),
                     stage_bytes=(1, 1), out_bytes=1, master=0,
                     workload=WorkloadSpec("periodic", rate_hz=10, n_requests=1, deadline_s=1.0, input_bytes=1))
    res = run_chain(spec)
    b = dict(zip(cols, res.stages[0]))
    assert b["t_queue_s"] == pytest.approx(0.5 - 8e-9, abs=1e-9) and b["t_compute_s"] == pytest.approx(0.01)
    assert res.stages[0].sum() == pytest.approx(res.finish[0] - res.arrival[0], abs=1e-12)


def test_end_cloud_breakdown_of_a_hand_worked_timeline():
    """COACH's pipeline (the exact timeline of tests/test_coach.py): 10 ms on the end device, 264
    bytes up at 1 Mbit/s (2.112 ms) + 1 ms, 2.5 ms on the cloud, 40 bytes down (0.32 ms) + 1 ms;
    the end device is the bottleneck (task 1 queues 8 ms there). An early exit is all end device."""
    import torch.nn as nn

    from vip_ray.coach.blocks import Chain as Dag
    from vip_ray.coach.offline import CostModel
    from vip_ray.coach.profile import trace_dag
    from vip_ray.sim.pipeline import Decision
    from vip_ray.core.endcloud import breakdown as endcloud_breakdown
    from vip_ray.sim.pipeline import simulate_pipeline

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    dag = Dag(trace_dag(net, (3, 8, 8)))
    cost = CostModel(dag, np.array([0.0, 0.010, 0.002, 0.020]), np.array([0.0, 0.001, 0.0005, 0.002]), 1e6)
    plan = cost.plan(dag.boundary_cut(1))
    res = simulate_pipeline(plan, np.array([0.0, 0.002, 0.1]), LinkSpec(rtt_s=0.002, bandwidth_bps=1e6),
                            lambda i, now, bw, p: Decision(i == 2, 8), result_bytes=40)
    b = endcloud_breakdown(res.records, "end", "cloud")
    got = np.column_stack([b[c] for c in BREAKDOWN_COLUMNS])
    up, down = 0.002112 + 0.001, 0.00032 + 0.001
    np.testing.assert_allclose(got[0], [down, 0.0, 0.0125, 0, up, 0, 0], atol=1e-12)
    np.testing.assert_allclose(got[1], [down, 0.008, 0.0125, 0, up, 0, 0], atol=1e-12)
    np.testing.assert_allclose(got[2], [0, 0, 0.010, 0, 0, 0, 0], atol=1e-12)     # early exit at the end device
    np.testing.assert_allclose(got.sum(axis=1), res.records["finish_s"] - res.records["arrival_s"], atol=1e-12)
    assert list(b["decisive_device"].astype(str)) == ["cloud", "cloud", "end"]


def test_serve_jobs_table_has_the_simulators_columns():
    from vip_ray.serve.engine import jobs_frame

    f = jobs_frame(SimpleNamespace(device_names=["a", "b"]),
                   [(1, 1, 0, 0.5, 2), (0, 0, 0, 0.2, 1), (0, 1, int(Outcome.CRASHED), math.inf, -1)], 0)
    assert list(f.columns) == list(JOB_COLUMNS)
    assert f["request_id"].tolist() == [0, 0, 1] and list(f["device"].astype(str)) == ["a", "b", "b"]
    assert f["reply_at_s"].tolist() == [0.2, math.inf, 0.5] and f["start_s"].isna().all()   # no stage times live


def test_unanswered_requests_write_a_missing_decisive_device():
    """A request nobody answered has no decisive device: the Arrow table carries it as null."""
    from vip_ray.core.tables import requests_arrow

    worker = DeviceSpec("w", (VariantSlot(0.0, 1, 0.1),), link=LinkSpec(0.0, math.inf),
                        availability=Availability("crash", crash_at_s=0.5))
    spec = SimSpec((DeviceSpec("m", (VariantSlot(0.0, -1, 0.0),), role="master"), worker),
                   WorkloadSpec("trace", times=(0.0, 1.0), deadline_s=0.2))
    rows = rows_of(spec, "loop")
    assert rows["answered"].tolist() == [True, False]
    table = requests_arrow(rows)
    assert table.column("decisive_device").to_pylist() == ["w", None]
