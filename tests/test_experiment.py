"""Scenario + real pool → simulation → tables: predictions from the bank, bytes, degradation, run dirs."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from vip_ray import analysis
from vip_ray.core.aggregation import reply_bytes, softmax
from vip_ray.cli import main
from vip_ray.core.results import ResultExists
from vip_ray.experiment.run import run_scenario
from vip_ray.experiment.sweep import run_sweep
from vip_ray.pool import Pool
from vip_ray.scenario import ScenarioError

SCENARIO = "tests/data/three_devices.yaml"


@pytest.fixture(scope="module")
def sets(small_pool):
    return [f"pool.root={small_pool.parent}", "pool.name=small"]


@pytest.fixture(scope="module")
def run_dir(sets, tmp_path_factory):
    return run_scenario(SCENARIO, overrides=sets, out=tmp_path_factory.mktemp("r") / "run", log=lambda s: None)


def test_the_session_pool_is_really_trained(small_pool):
    assert all(m.accuracy > 0.7 for m in Pool.load(small_pool).members)


def test_run_directory_contents_and_config(run_dir, small_pool):
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "accuracy_vs_responders.png", "availability_timeline.png", "config.yaml", "devices.parquet",
        "jobs.parquet", "latency_breakdown.png", "latency_cdf.png", "requests.parquet", "summary.json"]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["seeds"] == [3, 4] and cfg["pool"]["fingerprint"] == Pool.load(small_pool).manifest.data["fingerprint"]
    assert {"python", "numpy", "simpy", "vip_ray"} <= set(cfg["versions"])
    assert cfg["scenario"]["workload"]["deadline_ms"] == 200
    req = analysis.load(run_dir)
    assert len(req) == 800 and set(req["replication"]) == {0, 1}
    dev = analysis.load(run_dir, "devices")
    assert list(dev["device"][:3]) == ["master", "fast", "slow"]


def test_predictions_are_the_vp_aggregate_of_the_bank(run_dir, small_pool):
    """Everyone answers in time here, so each prediction is VP's aggregate of all three variants."""
    pool = Pool.load(small_pool)
    req = analysis.load(run_dir)
    assert req["answered"].all() and (req["n_responders"] == 3).all()
    dev = analysis.load(run_dir, "devices")
    ids = list(dev[dev["replication"] == 0]["variant"])
    recs = [pool.manifest.member(i) for i in ids]
    probs = softmax(pool.logits(ids).astype(np.float64), axis=-1)[:, req["sample"].to_numpy()].transpose(1, 0, 2)
    # VP eq. 1 by numpy: keep each reply's top-2, scatter, softmax, weigh by (ρ/max ρ)·(d/min d), sum, argmax
    top2 = np.argsort(-probs, axis=-1, kind="stable")[..., :2]
    kept = np.zeros_like(probs)
    np.put_along_axis(kept, top2, np.take_along_axis(probs, top2, -1), -1)
    rho, width = np.array([r.input_size for r in recs], float), np.array([r.width for r in recs], float)
    w = rho / rho.max() * width / width.min()
    expected = (np.exp(kept) / np.exp(kept).sum(-1, keepdims=True) * w[None, :, None]).sum(1).argmax(1)
    np.testing.assert_array_equal(req["prediction"].to_numpy(), expected)
    assert req["correct_top1"].mean() == pytest.approx((expected == pool.labels[req["sample"]]).mean())


def test_bytes_on_the_wire_follow_h_k(run_dir, small_pool):
    req = analysis.load(run_dir)
    n_classes = Pool.load(small_pool).num_classes
    assert (req["bytes_up"] == 2 * reply_bytes(2, n_classes)).all()      # two networked workers, h(2) = 10
    assert (req["bytes_down"] == 2 * 64).all()                           # 8x8 digits, one copy per link


def test_capacity_placement_puts_the_best_variant_on_the_fastest_device(run_dir, small_pool):
    pool = Pool.load(small_pool)
    dev = analysis.load(run_dir, "devices")
    dev = dev[dev["replication"] == 0].set_index("device")
    acc = {m.id: m.accuracy for m in pool.members}
    assert acc[dev.loc["fast", "variant"]] == max(acc.values())


def test_same_seed_same_tables(run_dir, sets, tmp_path):
    again = run_scenario(SCENARIO, overrides=sets, out=tmp_path / "again", plots=False, log=lambda s: None)
    pd.testing.assert_frame_equal(analysis.load(run_dir), analysis.load(again))


def test_graceful_degradation_and_answer_with_n_minus_1_failed(sets, tmp_path):
    out = run_sweep(SCENARIO, ["failed_devices=0..2"], overrides=sets + ["seeds.replications=1"],
                    out=tmp_path / "sweep", log=lambda s: None)
    t = analysis.load(out).sort_values("failed_devices")
    assert list(t["failed_devices"]) == [0, 1, 2]
    assert (t["answered"] == 1.0).all()                        # the master's own variant still answers
    assert list(t["responders_mean"]) == [3.0, 2.0, 1.0]
    acc = t["accuracy_top1"].to_numpy()
    assert acc[0] >= acc[1] >= acc[2]


def test_existing_out_and_bad_input_write_nothing(run_dir, sets, tmp_path, capsys):
    before = (run_dir / "requests.parquet").read_bytes()
    with pytest.raises(ResultExists, match="already exists; pick another --out"):
        run_scenario(SCENARIO, overrides=sets, out=run_dir, log=lambda s: None)
    assert (run_dir / "requests.parquet").read_bytes() == before
    with pytest.raises(ScenarioError, match="workload.arrival"):
        run_scenario(SCENARIO, overrides=sets + ["workload.arrival=bursty"], out=tmp_path / "x", log=lambda s: None)
    assert not any(tmp_path.iterdir())
    assert main(["run", SCENARIO, "--out", str(tmp_path / "y"), "--set", "strategy.k=0", *sum(
        (["--set", s] for s in sets), [])]) == 2
    err = capsys.readouterr().err
    assert "strategy.k" in err and "Traceback" not in err and not (tmp_path / "y").exists()


def test_cli_run_prints_summary(sets, tmp_path, capsys):
    args = ["run", SCENARIO, "--out", str(tmp_path / "cli"), "--set", "seeds.replications=1"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert "accuracy_top1" in out and summary["metrics"]["answered"]["mean"] == 1.0


def test_missing_pool_with_build_overrides_is_trained_on_first_use(ray_session, tmp_path):
    sets = [f"pool.root={tmp_path}/pools", "pool.name=built", "seeds.replications=1", "workload.requests=50",
            "pool.build=[data=digits,'shape.segments=[1]','family.baselines=[]',"
            "'family.phases=[{name:s,epochs:1,lr:3e-3}]',tune.verbose=0," f"tune.storage={tmp_path}/tune]"]
    out = run_scenario(SCENARIO, overrides=sets, out=tmp_path / "run", plots=False, log=lambda s: None)
    pool = Pool.open("built", tmp_path / "pools")
    assert pool.manifest.ids() == ["vp_v1"] and pool.manifest.data["name"] == "digits"
    assert len(analysis.load(out)) == 50


def test_many_devices_many_chunks_keep_one_table_schema(sets, small_pool, tmp_path):
    """Over 127 distinct responder sets across chunks and replications still write one table."""
    from vip_ray.core.engine import make_engine
    from vip_ray.experiment.run import context, replicate
    from vip_ray.scenario import load_scenario
    from vip_ray.strategies import get_strategy

    sc = load_scenario(SCENARIO, [*sets, "devices.2.count=9", "workload.requests=3000", "workload.deadline_ms=40",
                                  "devices.2.availability={kind: onoff, busy_mean_s: 0.2, free_mean_s: 0.3, mode: drop}"])
    out = tmp_path / "many"
    out.mkdir()
    strategy = get_strategy(sc.strategy.name).from_scenario(sc)
    replicate(make_engine("fast"), strategy, context(sc, Pool.load(small_pool), file="x", log=print), out,
              chunk_requests=500)
    req = analysis.load(out)
    assert len(req) == 3000 * 2 and req["responders"].nunique() > 127


def test_dynamic_placement_moves_the_best_variant_off_a_crashed_device(sets, small_pool):
    from vip_ray.experiment.run import context
    from vip_ray.scenario import load_scenario
    from vip_ray.strategies import get_strategy

    pool = Pool.load(small_pool)
    crash = "devices.1.availability={kind: crash, at_s: 5.0}"  # 'fast' holds the best variant, then crashes

    def deploy(extra):
        sc = load_scenario(SCENARIO, [*sets, crash, *extra])
        return get_strategy("vp").from_scenario(sc).deploy(context(sc, pool, file="x", log=print), 0)

    static, dynamic = deploy([]), deploy(["placement.dynamic=true"])
    slots = lambda dep, i: dep.world.devices[i].slots  # noqa: E731
    best = slots(static, 1)[0].variant
    assert static.variants[best].accuracy == max(v.accuracy for v in static.variants)
    assert len(slots(static, 1)) == 1 and len(slots(static, 2)) == 1
    # at the crash (5 s) the best variant moves to a device that is still up (master or slow)
    assert any((s.start_s, s.variant) == (5.0, best) for i in (0, 2) for s in slots(dynamic, i))
    assert [s.variant for s in slots(dynamic, 1)] == [best, -1]    # it ran on 'fast' until then, then nothing


def test_bad_placement_and_grid_input_are_clear(sets, tmp_path):
    with pytest.raises(ScenarioError, match="placement.policy: unknown placement policy 'best'; allowed:"):
        run_scenario(SCENARIO, overrides=[*sets, "placement.policy=best"], out=tmp_path / "p", log=lambda s: None)
    with pytest.raises(ScenarioError, match="'0..x' is not a range like 0..4"):
        run_sweep(SCENARIO, ["failed_devices=0..x"], overrides=sets, out=tmp_path / "s", log=lambda s: None)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["smart_home", "homogeneous_office", "cycle_stealing", "degrading_network"])
def test_every_shipped_scenario_runs(name, sets, tmp_path):
    """The shipped files, as shipped, on the session's small real pool (their own pools take minutes to train)."""
    out = run_scenario(f"scenarios/{name}.yaml", overrides=[*sets, "pool.build=null", "workload.requests=300",
                                                            "workload.duration_s=null", "seeds.replications=1"],
                       out=tmp_path / name, plots=False, log=lambda s: None)
    req = analysis.load(out)
    assert len(req) == 300 and req["answered"].mean() > 0.9 and req["correct_top1"].mean() > 0.7
