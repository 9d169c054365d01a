"""Multi-master worlds (issue 17.2): several masters multicasting their own requests to their own
subsets of shared devices. Exact timelines worked by hand; every kernel that runs them is held to
the reference; bad worlds refused."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vip_ray.core.tables import Outcome
from vip_ray.core.world import (
    Availability,
    DeviceSpec,
    LinkSpec,
    MasterSpec,
    SimSpec,
    VariantSlot,
    WorkloadSpec,
    cells,
    merged_requests,
)
from vip_ray.sim.engine import MULTI_MASTER_ENGINES, run, run_chunks

INF = math.inf
DEADLINE, IN_BYTES = 5.0, 100


def _wl(times=(), **kw):
    if times:
        return WorkloadSpec("trace", times=times, deadline_s=DEADLINE, input_bytes=IN_BYTES)
    return WorkloadSpec(deadline_s=DEADLINE, input_bytes=IN_BYTES, **kw)


def _dev(name, service_s, **kw):
    # 8000 bit/s: a 100-byte input takes 0.1 s to send; rtt 0.2: 0.1 each way; empty replies
    link = LinkSpec(rtt_s=0.2, bandwidth_bps=8000.0, loss=kw.pop("loss", 0.0))
    return DeviceSpec(name, (VariantSlot(0.0, 0, service_s),), link=link, reply_bytes=kw.pop("reply_bytes", 0), **kw)


def two_masters(shared=False):
    """Master A (requests at 0 and 0.5 s) reaches d; master B (one request at 0.05 s) reaches d and e.
    d computes 1 s per job, e 0.5 s."""
    return SimSpec(devices=(_dev("d", 1.0), _dev("e", 0.5)), workload=_wl(arrival="trace", times=(0.0,)),
                   shared_medium=shared,
                   masters=(MasterSpec("A", _wl((0.0, 0.5)), (0,)), MasterSpec("B", _wl((0.05,)), (0, 1))))


def test_two_masters_share_one_device_fifo():
    """By hand. Merged requests: A0 at 0, B0 at 0.05, A1 at 0.5.
    d's downlink (FIFO): A0 0 → 0.1, B0 waits for it: 0.1 → 0.2, A1 0.5 → 0.6; + 0.1 propagation:
    at d 0.2, 0.3, 0.7. d's queue (FIFO, 1 s each): A0 0.2 → 1.2, B0 1.2 → 2.2, A1 2.2 → 3.2;
    replies + 0.1: 1.3, 2.3, 3.3. e sees B0 only: 0.05 → 0.15, at e 0.25, done 0.75, reply 0.85."""
    _, owner, _ = merged_requests(two_masters())
    assert owner.tolist() == [0, 1, 0]
    expect = np.array([[1.3, INF], [2.3, 0.85], [3.3, INF]])
    for engine in MULTI_MASTER_ENGINES:
        res = run(two_masters(), engine)
        np.testing.assert_allclose(res.arrival, [0.0, 0.05, 0.5], rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.reply_at, expect, rtol=0, atol=1e-9, err_msg=engine)
        assert res.outcome[:, 1].tolist() == [Outcome.NOT_SENT, Outcome.REPLIED, Outcome.NOT_SENT], engine
        assert res.bytes_down.tolist() == [100, 200, 100], engine   # one input per reached device
        assert res.device_stats["jobs"].tolist() == [3, 1], engine


def test_two_masters_contend_on_the_shared_medium():
    """By hand, shared medium: one FIFO for every master's inputs: A0 0 → 0.1, B0 0.1 → 0.2 (it
    waits behind A's input although e is not A's), A1 0.5 → 0.6. d's times as on its own link;
    e: B0 at 0.3, done 0.8, reply 0.9. One transmission per request."""
    expect = np.array([[1.3, INF], [2.3, 0.9], [3.3, INF]])
    for engine in MULTI_MASTER_ENGINES:
        res = run(two_masters(shared=True), engine)
        np.testing.assert_allclose(res.reply_at, expect, rtol=0, atol=1e-9, err_msg=engine)
        assert res.bytes_down.tolist() == [100, 100, 100], engine


def _random_world(seed, shared):
    """Three masters (Poisson), five devices with jitter, stragglers, loss and cycle stealing."""
    devs = []
    for i in range(5):
        av = Availability("onoff", busy_mean_s=0.4, free_mean_s=2.0, mode="drop" if i == 3 else "resume") \
            if i % 2 else Availability()
        devs.append(_dev(f"dev{i}", 0.02 + 0.01 * i, service_dist="lognormal", jitter_cv=0.3,
                         straggler_prob=0.05, straggler_factor=4.0, availability=av, loss=0.02 * (i % 3),
                         reply_bytes=10, drop_expired=i == 4))
    masters = (MasterSpec("m0", _wl(arrival="poisson", rate_hz=8.0, duration_s=20.0), (0, 1, 2)),
               MasterSpec("m1", _wl(arrival="poisson", rate_hz=5.0, n_requests=90), (1, 3)),
               MasterSpec("m2", _wl(arrival="periodic", rate_hz=4.0, duration_s=15.0), (2, 3, 4)))
    return SimSpec(devices=tuple(devs), workload=_wl(arrival="trace", times=(0.0,)), shared_medium=shared,
                   seed=seed, masters=masters)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("seed", [0, 7])
def test_kernels_equal_reference_on_multi_master(seed, shared):
    spec = _random_world(seed, shared)
    ref = run(spec, "reference")
    assert len(ref.arrival) > 200 and (ref.outcome == Outcome.NOT_SENT).any()
    for engine in ("loop", "fast", "jit"):
        for chunk in (None, 37):  # chunking must not change a thing
            got = run(spec, engine) if chunk is None else \
                __import__("vip_ray.sim.result", fromlist=["concat_results"]).concat_results(
                    list(run_chunks(spec, engine, chunk_requests=chunk)))
            for f in ("arrival", "reply_at", "variant", "outcome", "bytes_down", "bytes_up"):
                np.testing.assert_array_equal(getattr(got, f), getattr(ref, f), err_msg=f"{engine} {chunk} {f}")
            for k in ("jobs", "served", "preempted", "dropped", "lost_down", "lost_up", "skipped"):
                np.testing.assert_array_equal(got.device_stats[k], ref.device_stats[k], err_msg=f"{engine} {k}")


def test_each_master_draws_its_own_arrivals():
    """Master m's Poisson gaps come from its own stream: the same workload on two masters gives
    two different streams, and a master's arrivals do not depend on the others'."""
    spec = _random_world(3, False)
    _, owner, _ = merged_requests(spec)
    t = run(spec, "loop").arrival
    alone = SimSpec(devices=spec.devices, workload=spec.workload, seed=3, masters=spec.masters[:1] + (
        MasterSpec("m1", spec.masters[1].workload, (1, 2, 3, 4)),))
    _, owner2, _ = merged_requests(alone)
    t2 = run(alone, "loop").arrival
    np.testing.assert_array_equal(t[owner == 0], t2[owner2 == 0])
    assert (owner == 2).sum() == 60   # periodic 4 Hz for 15 s, first at 0


def test_cells_split_independent_neighbourhoods():
    a, b = _dev("a", 0.1), _dev("b", 0.1)
    c = _dev("c", 0.1)
    spec = SimSpec(devices=(a, b, c), workload=_wl(arrival="trace", times=(0.0,)), masters=(
        MasterSpec("u0", _wl((0.0,)), (0, 2)), MasterSpec("u1", _wl((1.0,)), (1,)), MasterSpec("u2", _wl((2.0,)), (2,))))
    got = [(devs, [m.name for m in cell.masters], [m.reaches for m in cell.masters]) for devs, cell in cells(spec)]
    assert got == [([0, 2], ["u0", "u2"], [(0, 1), (1,)]), ([1], ["u1"], [(0,)])]


@pytest.mark.parametrize("bad, message", [
    ({"masters": (MasterSpec("A", _wl((0.0,)), (0, 5)),)}, "out of range"),
    ({"masters": (MasterSpec("A", _wl((0.0,)), (0,)), MasterSpec("A", _wl((0.0,)), (1,)))}, "duplicate master"),
    ({"masters": (MasterSpec("d", _wl((0.0,)), (0, 1)),)}, "also a device"),
    ({"masters": (MasterSpec("A", _wl((0.0,)), (0,)),)}, "reached by no master"),
])
def test_bad_worlds_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        SimSpec(devices=(_dev("d", 1.0), _dev("e", 0.5)), workload=_wl(arrival="trace", times=(0.0,)), **bad)


@pytest.mark.parametrize("engine", ["numpy"])
def test_single_master_kernels_refuse(engine):
    with pytest.raises(ValueError, match="single-master worlds only"):
        run(two_masters(), engine)


# ------------------------------------------------------------------ the scenario: masters:

CITY = "scenarios/smart_city.yaml"
NO_POOL = ["--set", "pool.name=no-such-pool-guard"]
REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_city_scales_by_one_key():
    from vip_ray.scenario import load_scenario

    s = load_scenario(REPO / CITY, ["masters.neighbourhoods=3"])
    assert len(s.devices) == 30 and len(s.masters.users) == 24          # 10 devices and 8 users each
    assert [d.name for d in s.devices[10:13]] == ["n1.lamp-0", "n1.lamp-1", "n1.lamp-2"]
    assert {d.role for d in s.devices} == {"worker"} and s.devices[10].group == "lamp"
    resident = next(u for u in s.masters.users if u.name == "n2.resident-3")
    # reaches: group tv (4 devices) + lamp-0, lamp-1, cabinet-0, in device order
    assert resident.reaches == ["n2.lamp-0", "n2.lamp-1", "n2.cabinet-0", "n2.tv-0", "n2.tv-1", "n2.tv-2", "n2.tv-3"]
    again = type(s).model_validate(s.resolved())                        # the resolved form re-validates as is
    assert again == s


def test_city_world_and_cells():
    """Through the scenario → world translation: users become MasterSpecs reaching their device
    indices, and every neighbourhood is one cell."""
    from types import SimpleNamespace

    from vip_ray.scenario import load_scenario
    from vip_ray.scenario.world import masters, workload

    s = load_scenario(REPO / CITY, ["masters.neighbourhoods=2"])
    app = workload(s, 784)
    devices = [SimpleNamespace(name=d.name) for d in s.devices]
    ms = masters(s, devices, app)
    assert [m.name for m in ms[:2]] == ["n0.pedestrian-0", "n0.pedestrian-1"]
    assert ms[8].reaches == (10, 11, 12, 13, 14, 15)                   # n1.pedestrian-0: lamps + cabinets
    assert ms[0].workload.rate_hz == 0.2 and ms[0].workload.duration_s == 600


@pytest.mark.parametrize("args, line", [
    (["--set", "masters.users.0.reaches=[lamp, tram]"],
     "masters.users[0].reaches[1]: no device or group 'tram' in the neighbourhood"),
    (["--set", "masters.users.1.name=lamp-0", "--set", "masters.users.1.count=1"],
     "masters.users[1].name: user name 'lamp-0' is also a device's name"),
    (["--set", "masters.users.1.name=pedestrian"], "masters.users[1].name: user name 'pedestrian-0' is also another user's"),
    (["--set", "devices.0.role=master", "--set", "devices.0.count=1"], "devices[0].role: device 'lamp' has role master"),
    (["--set", "masters.neighbourhoods=0"], "masters.neighbourhoods"),
    (["--engine", "serve"], ("masters: strategy 'vp' on the serve engine runs one master; with several masters it "
                             "runs on the sim engine only")),
    (["--set", "sim_engine=numpy"], "sim_engine: 'numpy' runs one master"),
    (["--set", "strategy.name=single"], "masters: strategy 'single' on the sim engine runs one master"),
])
def test_bad_city_is_one_line_exit_2(args, line, tmp_path, capsys, monkeypatch):
    from vip_ray.cli import main

    monkeypatch.chdir(REPO)
    assert main(["run", CITY, *args, "--out", str(tmp_path / "out"), *NO_POOL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert line in err, err
    assert "no-such-pool-guard" not in err                                # refused before the pool


def test_city_run_tables(tmp_path, monkeypatch):
    """`vip-sim run` on two neighbourhoods for one simulated minute: the tables agree with the
    scenario's reach lists and with each other (checked here with pandas, not the product's code)."""
    import json

    import pandas as pd

    from vip_ray.cli import main
    from vip_ray.scenario import load_scenario

    monkeypatch.chdir(REPO)
    sets = ["masters.neighbourhoods=2", "workload.duration_s=60"]
    out = tmp_path / "run"
    assert main(["run", CITY, *[a for s in sets for a in ("--set", s)], "--out", str(out)]) == 0
    req = pd.read_parquet(out / "requests.parquet")
    dev = pd.read_parquet(out / "devices.parquet").set_index("device")
    summary = json.loads((out / "summary.json").read_text())
    sc = load_scenario(CITY, sets)
    users = {u.name: u.reaches for u in sc.masters.users}
    assert sorted(req["request_id"]) == list(range(len(req))) and set(req["master"]) <= set(users)
    assert summary["cells"] == 2 and len(dev) == 20
    # every device got one job per request of a user reaching it (less the inputs lost on the way)
    sent = {d.name: 0 for d in sc.devices}
    for name, n in req["master"].value_counts().items():
        for d in users[name]:
            sent[d] += n
    assert all(dev.loc[d, "jobs"] + dev.loc[d, "lost_down"] == n for d, n in sent.items()), sent
    # responders are devices the request's master reaches
    ok = [set(filter(None, str(r).split(","))) <= set(users[m]) for r, m in zip(req["responders"], req["master"])]
    assert all(ok)
    # per-master summary = the request rows grouped by master
    g = req.groupby("master", observed=True)
    for name, fig in summary["masters"].items():
        rows = g.get_group(name)
        assert fig["requests"] == len(rows)
        assert fig["deadline_met"] == pytest.approx(rows["deadline_met"].mean())
        assert fig["accuracy_top1"] == pytest.approx(rows["correct_top1"].mean())


def test_city_tables_equal_on_every_kernel(tmp_path, monkeypatch):
    """The whole product path (cells, tables many cells at a time) gives the same tables on the
    reference, loop and jit kernels."""
    import pandas as pd

    from vip_ray.cli import main

    monkeypatch.chdir(REPO)
    tables = {}
    for kernel in ("reference", "loop", "jit"):
        out = tmp_path / kernel
        assert main(["run", CITY, "--set", "masters.neighbourhoods=3", "--set", "workload.duration_s=60",
                     "--set", f"sim_engine={kernel}", "--out", str(out)]) == 0
        tables[kernel] = (pd.read_parquet(out / "requests.parquet").drop(columns=["engine"]),
                          pd.read_parquet(out / "devices.parquet"))
    ref_rows, ref_devices = tables["reference"]
    assert len(ref_rows) > 200
    for kernel in ("loop", "jit"):
        pd.testing.assert_frame_equal(tables[kernel][0], ref_rows)
        pd.testing.assert_frame_equal(tables[kernel][1], ref_devices)
