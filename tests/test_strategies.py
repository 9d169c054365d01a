"""Strategies (single, mp, cp, vp, vip) on the same scenario, the chain engine, cuts, compare."""
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from vip_ray.core.aggregation import softmax
from vip_ray.experiment.compare import COMPARE_COLUMNS, run_compare
from vip_ray.experiment.run import run_scenario
from vip_ray.strategies import STRATEGIES, get_strategy
from vip_ray.models import build_model
from vip_ray.models.cuts import balanced_cuts, block_profile
from vip_ray.models.profile import count_macs
from vip_ray.pool import Pool
from vip_ray.scenario import ScenarioError, load_scenario
from vip_ray.core import world as S
from vip_ray.sim.chain import ChainSpec, run_chain
from vip_ray.sim.result import Outcome

SCENARIO = "tests/data/three_devices.yaml"
QUIET = dict(log=lambda s: None)


@pytest.fixture(scope="module")
def sets(small_pool):
    return [f"pool.root={small_pool.parent}", "pool.name=small", "strategy.options={single: {model: vp_v3}, "
            "mp: {model: vp_v3}}", "seeds.replications=1", "workload.requests=200"]


# ------------------------------------------------------------------------------------------ cuts

def _brute(macs, speeds, cut_bytes, per_byte):
    best, arg = np.inf, None
    for inner in itertools.combinations(range(1, len(macs)), len(speeds) - 1):
        ends = [*inner, len(macs)]
        starts = [0, *inner]
        t = max(sum(macs[a:e]) / sp + (cut_bytes[a - 1] * pb if j else 0.0)
                for j, (a, e, sp, pb) in enumerate(zip(starts, ends, speeds, per_byte)))
        if t < best - 1e-12:
            best, arg = t, ends
    return best, arg


@pytest.mark.parametrize("seed", range(6))
def test_balanced_cuts_is_the_exhaustive_optimum(seed):
    rng = np.random.default_rng(seed)
    b, n = int(rng.integers(3, 9)), int(rng.integers(1, 4))
    n = min(n, b)
    macs = rng.uniform(1, 10, b).tolist()
    speeds = rng.uniform(1, 3, n).tolist()
    cut_bytes = rng.uniform(0, 5, b).tolist()
    per_byte = [0.0, *rng.uniform(0, 1, n - 1)]
    ends = balanced_cuts(macs, speeds, cut_bytes=cut_bytes, s_per_byte=per_byte)
    best, _ = _brute(macs, speeds, cut_bytes, per_byte)
    starts = [0, *ends[:-1]]
    got = max(sum(macs[a:e]) / sp + (cut_bytes[a - 1] * pb if j else 0.0)
              for j, (a, e, sp, pb) in enumerate(zip(starts, ends, speeds, per_byte)))
    assert ends[-1] == b and got == pytest.approx(best)


def test_cuts_avoid_big_tensors_when_the_network_is_slow():
    # two equal halves either way; the tensor after block 0 is huge, after block 1 tiny
    ends = balanced_cuts([1, 1, 1, 1], [1, 1], cut_bytes=[1000, 1, 1, 1], s_per_byte=[0, 1.0])
    assert ends == [2, 4]


@pytest.mark.parametrize("name", ["mobilenet_v2", "vp_v2"])
def test_block_profile_adds_up_to_the_model(name):
    net = build_model(name, num_classes=7, in_channels=1, input_size=32)
    blocks = block_profile(net, in_channels=1, image_size=28)
    assert sum(b.macs for b in blocks) == count_macs(net)
    assert blocks[0].name == "adapter" and blocks[0].out_shape == (3, 32, 32)
    assert blocks[-1].out_shape == (7,) and blocks[-1].out_bytes("float16") == 14


# ------------------------------------------------------------------------------- chain engine

def _dev(name, service_s, link=None, availability=S.Availability()):
    return S.DeviceSpec(name=name, slots=(S.VariantSlot(0.0, 0, service_s),), link=link, availability=availability)


def test_chain_timeline_is_exact():
    """master (10 ms) → worker over 1 Mbps, RTT 2 ms (5 ms); 1000 B activation, 10 B reply;
    two requests 5 ms apart queue at the master, on the downlink and at the worker."""
    link = S.LinkSpec(rtt_s=0.002, bandwidth_bps=1e6)
    spec = ChainSpec(devices=(_dev("m", 0.010), _dev("w", 0.005, link)), stages=(0, 1), stage_bytes=(100, 1000),
                     out_bytes=10, master=0, workload=S.WorkloadSpec("periodic", rate_hz=200, n_requests=2,
                                                                     deadline_s=1.0, input_bytes=100))
    res = run_chain(spec)
    # r0: compute 0→.010, down 8 ms → .018, +1 ms → .019, serve → .024, up 0.08 ms → .02408, +1 ms
    # r1 (arrives .005): compute .010→.020, down .020→.028, +1 → .029, serve → .034, up, +1
    np.testing.assert_allclose(res.finish, [0.02508, 0.03508], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(res.outcome, [Outcome.REPLIED] * 2)
    np.testing.assert_array_equal(res.bytes_down, [1000, 1000])
    np.testing.assert_array_equal(res.bytes_up, [10, 10])
    assert res.device_stats["busy_s"].tolist() == pytest.approx([0.020, 0.010])


def test_chain_hop_between_two_workers_goes_up_then_down():
    link = S.LinkSpec(rtt_s=0.0, bandwidth_bps=8e3)  # 1 ms per byte
    spec = ChainSpec(devices=(_dev("m", 0.0), _dev("a", 0.0, link), _dev("b", 0.0, link)), stages=(1, 2),
                     stage_bytes=(4, 2), out_bytes=1, master=0,
                     workload=S.WorkloadSpec("periodic", rate_hz=1, n_requests=1, deadline_s=1, input_bytes=4))
    res = run_chain(spec)
    # 4 B down to a, 2 B up from a + 2 B down to b, 1 B up from b: 4 + 2 + 2 + 1 ms
    assert res.finish[0] == pytest.approx(0.009)
    assert (res.bytes_down[0], res.bytes_up[0]) == (6, 3)


@pytest.mark.parametrize("on_failure", ["fail", "stall"])
def test_a_crashed_slice_device_fails_the_request(on_failure):
    link = S.LinkSpec(rtt_s=0.002, bandwidth_bps=1e6)
    spec = ChainSpec(devices=(_dev("m", 0.001), _dev("w", 0.001, link, S.Availability("crash", crash_at_s=0.0))),
                     stages=(0, 1), stage_bytes=(10, 10), out_bytes=10, master=0, on_failure=on_failure,
                     workload=S.WorkloadSpec("periodic", rate_hz=10, n_requests=5, deadline_s=0.1, input_bytes=10))
    res = run_chain(spec)
    assert np.isinf(res.finish).all() and (res.outcome == Outcome.CRASHED).all() and (res.failed_device == 1).all()


def test_a_preempted_slice_resumes_or_stalls_past_the_deadline():
    link = S.LinkSpec(rtt_s=0.0, bandwidth_bps=1e9)
    busy = S.Availability("trace", intervals=((0.0, 0.5),), mode="resume")
    spec = ChainSpec(devices=(_dev("m", 0.0), _dev("w", 0.01, link, busy)), stages=(0, 1), stage_bytes=(1, 1),
                     out_bytes=1, master=0,
                     workload=S.WorkloadSpec("periodic", rate_hz=10, n_requests=1, deadline_s=0.1, input_bytes=1))
    res = run_chain(spec)
    assert res.finish[0] == pytest.approx(0.51, abs=1e-6)  # waits for the owner, then computes


# ---------------------------------------------------------------------------- on a real pool

def test_every_strategy_is_registered_and_unknown_ones_are_refused():
    assert {"single", "mp", "cp", "vp", "vip"} <= set(STRATEGIES)
    with pytest.raises(ScenarioError, match=r"strategy.name: unknown strategy 'sp'; allowed: .*mp.*single"):
        get_strategy("sp", file="x.yaml")


def test_bad_strategy_options_name_the_key_and_the_allowed_values(sets):
    with pytest.raises(ScenarioError) as e:
        run_scenario(SCENARIO, overrides=[*sets, "strategy.name=mp", "strategy.options.mp.on_failure=retry"], **QUIET)
    assert f"{SCENARIO}: strategy.options.mp.on_failure: invalid value 'retry'; allowed: fail, stall" == str(e.value)
    with pytest.raises(ScenarioError, match="strategy.aggregator: 'cp' combines class-group models .* allowed: first, majority, vip, vp"):
        run_scenario(SCENARIO, overrides=[*sets, "strategy.aggregator=cp"], **QUIET)
    with pytest.raises(ScenarioError, match="strategy.options.single.device: no device 'tv'"):
        run_scenario(SCENARIO, overrides=[*sets, "strategy.name=single", "strategy.options.single.device=tv"], **QUIET)


@pytest.mark.parametrize("net", [[], ["network.rtt_ms=0.01", "network.bandwidth_mbps=1000"]])
def test_single_runs_the_model_on_the_lowest_latency_device(sets, small_pool, tmp_path, net):
    pool = Pool.load(small_pool)
    macs = pool.manifest.member("vp_v3").macs
    sc = load_scenario(SCENARIO, [*sets, *net])
    link = sc.device("fast").link
    cost = {"master": macs / 1e9, "slow": np.inf,
            "fast": macs / 4e9 + link.rtt_ms / 1e3 + 8 * (64 + 10) / (link.bandwidth_mbps * 1e6)}
    best = min(cost, key=cost.get)
    assert best == ("master" if not net else "fast")  # both branches of the choice are exercised
    out = run_scenario(SCENARIO, overrides=[*sets, *net, "strategy.name=single"], out=tmp_path / "s", plots=False,
                       **QUIET)
    dev = pd.read_parquet(out / "devices.parquet")
    assert list(dev["device"]) == [best] and list(dev["variant"]) == ["vp_v3"]
    req = pd.read_parquet(out / "requests.parquet")
    assert (req["n_responders"] == 1).all() and req["answered"].all()
    expected = pool.logits(["vp_v3"])[0][req["sample"].to_numpy()].argmax(1)
    np.testing.assert_array_equal(req["prediction"], expected)
    assert (req["bytes_down"] == (0 if best == "master" else 64)).all()  # one input to one device, nobody else


def test_mp_bytes_are_the_activations_at_its_cuts(sets, small_pool, tmp_path):
    out = run_scenario(SCENARIO, overrides=[*sets, "strategy.name=mp"], out=tmp_path / "mp", plots=False, **QUIET)
    summary = json.loads((out / "summary.json").read_text())
    pool = Pool.load(small_pool)
    m = pool.manifest.member("vp_v3")
    blocks = block_profile(build_model(m.model, **m.build), in_channels=1, image_size=8)
    by_name = {b.name: b.out_bytes() for b in blocks}
    cuts = summary["cuts"]
    assert len(cuts) == 2  # three devices, three slices
    table = summary["cut_table"]  # every possible cut, with its tensor's size relative to the input
    assert [c["after_block"] for c in table] == [b.name for b in blocks[:-1]]
    assert [c["ratio_to_input"] for c in table] == [b.out_bytes() / 64 for b in blocks[:-1]]
    for c in cuts:
        assert c["bytes"] == by_name[c["after"].split("..")[1]] and c["ratio_to_input"] == c["bytes"] / 64
    req = pd.read_parquet(out / "requests.parquet")
    # chain master → fast → slow (fastest workers first): cut 1 goes down to fast; cut 2 up from fast,
    # down to slow; the top-2 reply (10 B) up from slow
    assert (req["bytes_down"] == cuts[0]["bytes"] + cuts[1]["bytes"]).all()
    assert (req["bytes_up"] == cuts[1]["bytes"] + 10).all()
    assert req["answered"].all() and (req["n_responders"] == 3).all()
    expected = pool.logits(["vp_v3"])[0][req["sample"].to_numpy()].argmax(1)
    np.testing.assert_array_equal(req["prediction"], expected)
    dev = pd.read_parquet(out / "devices.parquet")
    assert dev["macs_per_request"].sum() == m.macs


def test_mp_fails_when_one_device_is_down_while_vp_answers(sets, tmp_path):
    res = {}
    for s in ("mp", "vp"):
        out = run_scenario(SCENARIO, overrides=[*sets, f"strategy.name={s}"], failed_devices=1, out=tmp_path / s,
                           plots=False, **QUIET)
        res[s] = pd.read_parquet(out / "requests.parquet")
    assert not res["mp"]["answered"].any()
    assert res["vp"]["answered"].all() and res["vp"]["correct_top1"].mean() > 0.5


def test_cp_accuracy_comes_from_its_own_bank_and_needs_every_group(sets, small_pool, small_cp_pool, tmp_path):
    _, cp_path = small_cp_pool
    cp_pool = Pool.load(cp_path)
    assert cp_pool.manifest.data["fingerprint"] == Pool.load(small_pool).manifest.data["fingerprint"]
    cp_sets = [*sets, "strategy.name=cp", f"strategy.options.cp.pool={cp_path}"]
    out = run_scenario(SCENARIO, overrides=cp_sets, out=tmp_path / "cp", plots=False, **QUIET)
    req = pd.read_parquet(out / "requests.parquet")
    assert req["answered"].all() and (req["n_responders"] == 3).all()
    ids = cp_pool.manifest.ids("cp_group")
    probs = softmax(cp_pool.logits(ids).astype(np.float64), axis=-1).transpose(1, 0, 2)[req["sample"].to_numpy()]
    scores = np.full(probs.shape[::2], np.nan)      # (B, C): each class scored by the group that owns it
    for g, mid in enumerate(ids):
        own = list(cp_pool.manifest.member(mid).classes)
        scores[:, own] = probs[:, g, own]
    assert not np.isnan(scores).any()
    expected = scores.argmax(1)
    np.testing.assert_array_equal(req["prediction"], expected)
    dev = pd.read_parquet(out / "devices.parquet")
    sizes = {m.id: len(m.classes) for m in cp_pool.manifest.members}
    remote = dev[dev["role"] != "master"]  # the master's own group answers locally
    assert (req["bytes_up"] == sum(4 * sizes[v] for v in remote["variant"])).all()  # each group's scores, float32
    down = run_scenario(SCENARIO, overrides=cp_sets, failed_devices=1, out=tmp_path / "cp1", plots=False, **QUIET)
    assert not pd.read_parquet(down / "requests.parquet")["answered"].any()
    with pytest.raises(ScenarioError, match="strategy.options.cp.pool: pool 'small' has no class-group members"):
        run_scenario(SCENARIO, overrides=[*sets, "strategy.name=cp", "strategy.options.cp.pool=small"], **QUIET)


def test_compare_table_columns_units_and_degradation(sets, tmp_path):
    out = run_compare(SCENARIO, ["single", "mp", "vp", "vip"], out=tmp_path / "cmp", **QUIET,
                      overrides=[*sets, "strategy.options.single.device=fast"])
    table = pd.read_parquet(out / "compare.parquet")
    assert list(table.columns) == list(COMPARE_COLUMNS)
    conds = ["failed=0", "failed=1", "failed=2", "stealing"]
    assert len(table) == 4 * len(conds) and list(table["condition"][:4]) == conds
    t = table.set_index(["strategy", "condition"])
    # VP and VIP answer even with n-1 workers down; MP needs every slice; single (on 'fast') dies with it
    for s in ("vp", "vip"):
        assert t.loc[(s, "failed=2"), "answered"] == 1.0
    for s in ("mp", "single"):
        assert t.loc[(s, "failed=0"), "answered"] == 1.0 and t.loc[(s, "failed=1"), "answered"] == 0.0
    assert t.loc[("mp", "failed=0"), "devices_used"] == 3 and t.loc[("single", "failed=0"), "devices_used"] == 1
    assert t.loc[("vp", "failed=0"), "macs_per_device"] < t.loc[("single", "failed=0"), "macs_per_device"] or \
        t.loc[("single", "failed=0"), "macs_per_device"] == t.loc[("vp", "failed=0"), "macs_per_device"]
    assert t.loc[("mp", "failed=0"), "bytes_per_request"] > t.loc[("vp", "failed=0"), "bytes_per_request"]
    assert (out / "compare.png").stat().st_size > 10_000
    assert sorted(p.name for p in (out / "points" / "mp").iterdir()) == sorted(conds)
