"""The strategy contract's promise: every registered strategy runs on every engine family it
declares (``Strategy.engines``), and where it declares both, the live Serve engine and the
simulator give the same predictions for the same responders on the same seed — fan-outs, the
chain (mp: real slices, activations hop to hop) and the end–cloud pipelines (real head, real
quantized tensors, real tail) alike, into tables with the same columns."""
import shutil

import numpy as np
import pandas as pd
import pytest

from vip_ray import analysis
from vip_ray.core.engine import FAMILIES
from vip_ray.experiment.run import context, replicate
from vip_ray.pool import Pool
from vip_ray.scenario import load_scenario
from vip_ray.strategies import STRATEGIES, get_strategy

SCENARIO = "tests/data/serve_devices.yaml"   # master + two workers, always up, emulated delays 40–60 ms
END_CLOUD = ("coach", "neurosurgeon", "dads", "spinn", "jps")
CASES = [(name, family) for name in STRATEGIES.names() for family in get_strategy(name).engines]


def test_every_registered_strategy_declares_a_shape_and_known_engines():
    for name in STRATEGIES.names():
        cls = get_strategy(name)
        assert cls.kind in ("fanout", "chain", "pipeline") and cls.name == name
        assert cls.engines and set(cls.engines) <= set(FAMILIES), (name, cls.engines)
    # the fan-outs, the chain (mp) and the end–cloud pipelines all run live
    assert {n for n, f in CASES if f == "serve"} == set(STRATEGIES.names())
    assert {"cp", "single", "vip", "vp", "mp", *END_CLOUD} <= set(STRATEGIES.names())


@pytest.fixture(scope="module")
def root(small_pool, small_cp_pool, tmp_path_factory):
    """One pool store holding the small variant pool and the small class-parallel pool."""
    root = tmp_path_factory.mktemp("engines")
    shutil.copytree(small_pool, root / "small")
    shutil.copytree(small_cp_pool[1], root / "small-cp")
    return root


def overrides(root, strategy):
    sets = [f"pool.root={root}", "pool.name=small", "workload.requests=30", "workload.rate_hz=4", f"strategy.name={strategy}",
            "strategy.options.single.model=vp_v3", "strategy.options.mp.model=vp_v3",
            "strategy.options.cp.pool=small-cp"]
    if strategy in END_CLOUD:
        sets.append(f"strategy.options.{strategy}={{model: vp_v3, calibration_samples: 120}}")
    if strategy == "mp":   # an energy model: every device 6 W busy, every radio 300 + 100 nJ a bit; and
        # jittered compute, so that a request's own work differs from the devices' mean service times
        sets += [f"devices.{d}.power={{idle_w: 1, busy_w: 6}}" for d in range(3)]
        sets += [f"devices.{d}.jitter_cv=0.3" for d in range(3)]
        sets.append("network.radio={tx_nj_per_bit: 300, rx_nj_per_bit: 100}")
    return sets


def run_on(engine, root, strategy, out):
    sc = load_scenario(SCENARIO, overrides(root, strategy))
    strat = get_strategy(strategy).from_scenario(sc)
    out.mkdir()
    summary = replicate(engine, strat, context(sc, Pool.open("small", root), file=SCENARIO, log=lambda s: None), out)
    return summary, analysis.load(out), pd.read_parquet(out / "devices.parquet")


@pytest.fixture(scope="module")
def sim_runs(root, tmp_path_factory):
    from vip_ray.core.engine import make_engine

    cache = {}

    def get(strategy):
        if strategy not in cache:
            cache[strategy] = run_on(make_engine("fast"), root, strategy, tmp_path_factory.mktemp(f"sim-{strategy}") / "o")
        return cache[strategy]
    return get


@pytest.mark.parametrize("strategy,family", CASES, ids=[f"{s}-{f}" for s, f in CASES])
def test_every_strategy_runs_on_every_engine_it_declares(strategy, family, root, sim_runs, tmp_path):
    summary, req, devices = sim_runs(strategy)
    assert len(req) == 30 and set(req["strategy"]) == {strategy} and req["answered"].any()
    assert summary["strategy"] == strategy
    if family == "sim":
        assert set(req["engine"]) == {"sim"}
        return
    from vip_ray.serve.engine import ServeEngine

    with ServeEngine(options=None, local_testing=True, log=lambda s: None) as engine:
        live_summary, live, live_devices = run_on(engine, root, strategy, tmp_path / "live")
    assert set(live["engine"]) == {"serve"} and live_summary["engine"] == "serve"
    # the same tables: columns, their order, and one device row per device / stage, in order
    assert list(live.columns) == list(req.columns)
    assert list(live_devices.columns) == list(devices.columns)
    assert list(live_devices["device"]) == list(devices["device"])
    np.testing.assert_array_equal(live["arrival_s"], req["arrival_s"])
    np.testing.assert_array_equal(live["sample"], req["sample"])
    assert (live["answered"].to_numpy() == req["answered"].to_numpy()).mean() >= 0.8
    both = live["answered"].to_numpy() & req["answered"].to_numpy()
    same = both & (live["responders"].astype(str).to_numpy() == req["responders"].astype(str).to_numpy())
    assert same.sum() >= 0.8 * both.sum() > 0, (same.sum(), both.sum())
    # the live devices really ran the variants on the real images; their logits equal the bank's
    # up to float noise, so the answer is the simulator's wherever the same devices answered
    agree = live["prediction"].to_numpy()[same] == req["prediction"].to_numpy()[same]
    assert agree.mean() >= 0.97, agree.mean()
    kind = get_strategy(strategy).kind
    if kind == "chain":
        # mp's default chain: the master, then the workers fastest first (fast 45 ms before slow 60 ms)
        assert set(live["responders"].astype(str)[live["answered"]]) == {"master,fast,slow"}
        # a request's energy is its own work: its slices' compute at 6 W, and every byte it put on a
        # link at both of the link's ends (each byte sent up or down: 300 + 100 nJ a bit)
        ok = req["answered"].to_numpy()
        want = 6.0 * req["t_compute_s"].to_numpy() + 8 * 400e-9 * (req["bytes_down"] + req["bytes_up"]).to_numpy()
        np.testing.assert_allclose(req["energy_j"].to_numpy()[ok], want[ok], rtol=1e-9)
        assert (want[ok] > 0).all()
        # live, from its emulated hops: the simulator's where the same requests were answered
        np.testing.assert_allclose(live["energy_j"].to_numpy()[same], req["energy_j"].to_numpy()[same], rtol=1e-9)
    if kind != "fanout":
        # the wire carried what the plan sends (the same cut tensors, the same bit widths)
        rows = same & (live["bits"].to_numpy() == req["bits"].to_numpy()) if "bits" in req.columns else same
        for col in ("bytes_up", "bytes_down"):
            np.testing.assert_array_equal(live[col].to_numpy()[rows], req[col].to_numpy()[rows])
    if kind == "pipeline":
        for col in ("early_exit", "partition"):
            assert (live[col].astype(str).to_numpy()[same] == req[col].astype(str).to_numpy()[same]).mean() >= 0.8
