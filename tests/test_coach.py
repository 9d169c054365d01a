"""COACH and its end–cloud baselines: quantization, the DAG → chain view, the offline
search against exhaustive search, the online component's equations, the SimPy pipeline timeline,
and the registered strategies end to end on the session's real pool."""
import hashlib
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from vip_ray.coach.baselines import dads
from vip_ray.coach.blocks import Chain
from vip_ray.coach.offline import CostModel, coach_search, exhaustive_search, min_bits
from vip_ray.coach.online import OnlinePolicy, SemanticCache, calibrate_policy, separability
from vip_ray.sim.pipeline import Decision, simulate_pipeline
from vip_ray.coach.profile import profile_torchvision, trace_dag
from vip_ray.coach.quant import FP32, HEADER_BYTES, fake_quantize, quantize, step_size, wire_bytes
from vip_ray.coach.frames import frame_samples
from vip_ray.core.world import LinkSpec


# --- quantization -------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [2, 3, 4, 8, 16])
def test_quantize_dequantize_error_is_within_one_step(bits):
    g = torch.Generator().manual_seed(bits)
    x = torch.cat([torch.randn(4, 8, 5, 5, generator=g) * 3, torch.relu(torch.randn(4, 8, 5, 5, generator=g))])
    q, scale, zp = quantize(x, bits)
    assert q.min() >= 0 and q.max() <= 2**bits - 1 and torch.equal(q, q.round())
    err = (fake_quantize(x, bits) - x).abs().amax(dim=(1, 2, 3))
    assert (err <= step_size(x, bits) + 1e-6).all()
    assert (err <= scale / 2 + 1e-5).all()          # round-to-nearest: half a step in fact
    if bits >= 8:                                    # and the error shrinks with the bits
        assert err.max() < (fake_quantize(x, 2) - x).abs().max() / 10
    assert fake_quantize(torch.zeros(2, 3), bits).abs().max() == 0     # zero is exact, no NaN
    assert fake_quantize(x, FP32) is x


def test_wire_bytes():
    assert wire_bytes(1000, 4) == 500 + HEADER_BYTES and wire_bytes(3, 3) == 2 + HEADER_BYTES
    assert wire_bytes(1000, FP32) == 4000
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\] or 32"):
        wire_bytes(10, 1)


# --- profile and chain --------------------------------------------------------------------------

def test_resnet101_profile_and_virtual_blocks():
    prof = profile_torchvision("resnet101")
    assert abs(prof.macs - 7.8e9) / 7.8e9 < 0.01          # torchvision's 7.8 GMACs at 224 px
    chain = Chain(prof)
    virtual = [b for b in chain.blocks if b.virtual]
    assert len(virtual) == 33                               # one per bottleneck
    downsample = [b for b in virtual if all(b.branches)]
    assert len(downsample) == 4 and all(sorted(map(len, b.branches)) == [2, 8] for b in downsample)
    assert all(sorted(map(len, b.branches)) == [0, 8] for b in virtual if b not in downsample)
    # every single-tensor cut sends exactly one tensor; inside-block cuts send one per branch end
    assert all(len(c.tensors) == 1 for c in chain.boundary_cuts()[:-1]) and chain.boundary_cuts()[-1].tensors == ()
    assert chain.exhaustive_size() == len(chain.all_cuts()) == 410
    with pytest.raises(ValueError, match="not a cut"):
        end = np.zeros(chain.n_layers(), dtype=bool)
        end[[0, 5]] = True
        chain.cut_from_end(end, "bad")


# --- offline search -----------------------------------------------------------------------------

def _chain_net(n: int) -> nn.Module:
    layers = []
    for i in range(n):
        layers += [nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


class _Res(nn.Module):
    def __init__(self, c, down):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.down = nn.Conv2d(c, c, 1) if down else None

    def forward(self, x):
        return torch.relu(self.b(torch.relu(self.a(x))) + (self.down(x) if self.down is not None else x))


def _cost(prof, rng, bw):
    chain = Chain(prof)
    work = prof.work()
    work[0] = 0
    te = work * rng.uniform(0.5, 2.0, len(work)) / 1e8
    tc = work * rng.uniform(0.5, 2.0, len(work)) / 4e9
    return CostModel(chain, te, tc, bw)


def _rule(seed):
    """A monotone eq. 1: each partition accepts from its own (seeded) minimum width on, some never."""
    cache = {}

    def accept(cut, bits):
        if cut.key not in cache:
            r = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(cut.key).digest()[:4], "little")])
            cache[cut.key] = int(r.integers(2, 18))           # 17 = nothing up to 16 bits
        return bits >= cache[cut.key]
    return accept


@pytest.mark.parametrize("seed", range(6))
def test_offline_search_finds_the_exhaustive_optimum(seed):
    rng = np.random.default_rng(seed)
    nets = [_chain_net(3), _chain_net(6), nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _Res(4, False), _Res(4, True),
                                                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))]
    for net in nets:
        prof = trace_dag(net, (3, 16, 16))
        for bw in (1e5, 1e6, 2e7):
            cost = _cost(prof, rng, bw)
            accept = _rule(seed)
            t_max = rng.choice([math.inf, 0.01])
            ours = coach_search(cost, accept, t_max=t_max)
            ref = exhaustive_search(cost, accept, t_max=t_max)
            assert ours.best.feasible == ref.best.feasible
            key = (lambda c: c.objective) if ref.best.feasible else (lambda c: c.times.latency)
            assert key(ours.best) == pytest.approx(key(ref.best), rel=1e-9, abs=1e-12)
            assert ours.evaluated + ours.pruned <= ref.evaluated + ref.space
            assert ours.probes <= ref.probes


@pytest.mark.parametrize("seed", range(3))
def test_offline_search_on_resnet101_is_cheap_and_exact(seed):
    """On ResNet-101's 33 residual blocks (two branches each) the divide and conquer meets the
    exhaustive joint search's optimum with a few percent of its accuracy probes. (Not a theorem:
    the branch descent is a heuristic; GoogLeNet's four-branch blocks can leave a gap — see the
    benchmark.)"""
    prof = profile_torchvision("resnet101")
    cost = _cost(prof, np.random.default_rng(seed), 20e6)
    ours, ref = coach_search(cost, _rule(seed)), exhaustive_search(cost, _rule(seed), scan_bits=True)
    assert ours.best.objective == pytest.approx(ref.best.objective)
    assert ref.probes == 15 * sum(1 for c in Chain(prof).all_cuts() if cost.plan(c).quantizable)
    assert ours.probes < ref.probes / 20 and ours.seconds < 10


@pytest.mark.parametrize("threshold", [2, 3, 9, 15, 16, 17])
def test_dichotomous_search_matches_a_linear_scan(threshold):
    asked = []

    def accept(cut, b):
        asked.append(b)
        return b >= threshold
    got = min_bits(accept, None)
    assert got == (threshold if threshold <= 16 else FP32)
    assert len(asked) <= 4                         # ⌈log2(15 widths + fp32)⌉


def test_stage_times_and_bubbles_follow_eq_2_to_6():
    prof = trace_dag(_chain_net(3), (3, 8, 8))
    chain = Chain(prof)
    te = np.r_[0.0, np.full(chain.n_layers() - 1, 0.004)]
    tc = te / 10
    cost = CostModel(chain, te, tc, 1e6)
    cut = chain.boundary_cuts()[2]                 # after the first conv's ReLU
    plan = cost.plan(cut)
    t = cost.times(plan, 4)
    n_end = cut.n_end
    assert t.t_end == pytest.approx(0.004 * n_end) and t.t_cloud == pytest.approx(tc[n_end + 1:].sum())
    assert t.t_tx == pytest.approx(8 * wire_bytes(4 * 8 * 8, 4) / 1e6)
    assert t.t_tx_par == 0 and t.t_cloud_par == 0                 # one tensor: no layer parallelism
    m = max(t.t_end, t.t_tx, t.t_cloud)
    assert t.objective == pytest.approx(abs(t.t_end - t.t_cloud) + abs(t.t_tx - m) + m)


def test_dads_min_cut_is_the_latency_optimum_of_the_dag():
    for net in (_chain_net(4), nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _Res(4, True), _Res(4, False),
                                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))):
        prof = trace_dag(net, (3, 16, 16))
        for bw in (1e5, 3e6, 1e8):
            cost = _cost(prof, np.random.default_rng(int(bw)), bw)
            cut, t, mode = dads(cost)
            best = min(cost.times(cost.plan(c), FP32).latency for c in cost.chain.all_cuts())
            assert mode == "light" and t.latency == pytest.approx(best, rel=1e-6)


# --- online component ---------------------------------------------------------------------------

def test_semantic_centre_update_is_eq_7():
    cache = SemanticCache(3, 2)
    cache.warm(np.array([[1.0, 0.0], [3.0, 2.0]]), np.array([1, 1]))
    assert np.allclose(cache.centres[1], [2.0, 1.0]) and cache.counts[1] == 2
    cache.update(1, np.array([5.0, 4.0]))          # (2·[2, 1] + [5, 4]) / 3
    assert np.allclose(cache.centres[1], [3.0, 2.0]) and cache.counts[1] == 3
    assert np.allclose(cache.centres[0], 0) and cache.counts[0] == 0
    capped = SemanticCache(1, 1, max_count=2)
    for v in (1.0, 2.0, 3.0, 4.0):
        capped.update(0, np.array([v]))
    assert capped.counts[0] == 2 and capped.centres[0, 0] == pytest.approx(((1.5 * 2 + 3) / 3 * 2 + 4) / 3)


def test_similarity_and_separability_are_eq_8_and_9():
    cache = SemanticCache(3, 2)
    cache.centres[:] = [[1, 0], [1, 1], [0, 1]]
    t = cache.similarities(np.array([2.0, 0.0]))
    assert np.allclose(t, [1.0, 1 / math.sqrt(2), 0.0])
    t = np.array([0.9, 0.6, 0.3])
    expected = math.sqrt(0.81 + 0.36 + 0.09) * (0.9 - 0.6) * 0.9 / 0.6
    assert separability(t) == pytest.approx(expected)
    assert np.allclose(separability(np.stack([t, [0.5, 0.5, 0.1]])), [expected, 0.0])
    assert separability(np.array([0.7, 0.0, 0.0])) == math.inf


def test_eq_11_balances_the_link_against_the_slowest_compute_stage():
    policy = OnlinePolicy(math.inf, [(1.0, 3), (0.5, 6)], 8, (2, 3, 4, 6, 8, 12, 16))
    assert [policy.required_bits(s) for s in (2.0, 0.7, 0.1)] == [3, 6, 8]
    from vip_ray.coach.online import balance_cost
    # 10 ms of end compute; the link takes 1.5 ms per bit: 6 bits (9 ms) is the closest below, 8 (12 ms) above
    assert policy.choose_bits(2, lambda b: balance_cost(0.010, 0.001, 0.0015 * b)) == 6
    assert policy.choose_bits(8, lambda b: balance_cost(0.010, 0.001, 0.0015 * b)) == 8   # never below Q_r


def test_calibrated_exits_keep_the_loss_within_eps():
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.integers(0, 5, n)
    s = rng.random(n)
    exit_pred = np.where(s > 0.6, labels, (labels + 1) % 5)        # the cache is right iff S is high
    cloud = {b: labels.copy() for b in (2, 4, 8)}
    cloud[2][s < 0.8] = 0
    pol = calibrate_policy(s, exit_pred, labels, cloud, 8, (2, 4, 8), eps=0.01)
    exits = s > pol.s_ext
    # half of ε·n = 2 mistakes for the exits: every task above 0.6 and the two just below it
    assert exits.sum() == (s > 0.6).sum() + 2 and (exit_pred[exits] != labels[exits]).sum() == 2
    bits = np.array([pol.required_bits(v) for v in s])
    online_ok = np.where(exits, exit_pred == labels, np.choose(np.searchsorted([2, 4, 8], bits), [cloud[2], cloud[4],
                                                                                                 cloud[8]]) == labels)
    assert 1.0 - online_ok.mean() <= 0.01 + 1e-9                    # the whole online budget: ε
    assert pol.calibration["online_accuracy"] == pytest.approx(online_ok.mean())
    assert (bits[~exits] <= 4).mean() > 0.9                         # 4 bits lose nothing here: most drop to it


# --- the pipeline -------------------------------------------------------------------------------

def test_pipeline_timeline_is_exact_on_a_three_layer_chain():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    chain = Chain(trace_dag(net, (3, 8, 8)))
    te, tc = np.array([0.0, 0.010, 0.002, 0.020]), np.array([0.0, 0.001, 0.0005, 0.002])
    cost = CostModel(chain, te, tc, 1e6)
    plan = cost.plan(chain.boundary_cut(1))        # conv on the end; relu + conv on the cloud
    assert plan.end_s == (0.010, 0.0) and plan.cloud_s == pytest.approx((0.0025,))
    link = LinkSpec(rtt_s=0.002, bandwidth_bps=1e6)
    arrivals = np.array([0.0, 0.002, 0.004, 0.030])
    res = simulate_pipeline(plan, arrivals, link, lambda i, now, bw, p: Decision(False, 8), result_bytes=40)
    r = res.records
    tx = 8 * (4 * 8 * 8 + 8) / 1e6                 # 264 bytes at 1 Mbit/s = 2.112 ms
    down = 8 * 40 / 1e6
    end_done = [0.010, 0.020, 0.030, 0.040]        # the end device is the bottleneck: tasks queue
    expected = []
    link_free = down_free = cloud_free = 0.0
    for e in end_done:
        s = max(e, link_free)
        link_free = s + tx
        c0 = max(link_free + 0.001, cloud_free)
        cloud_free = c0 + 0.0025
        d0 = max(cloud_free, down_free)
        down_free = d0 + down
        expected.append(down_free + 0.001)
    assert np.allclose(r["end_done_s"], end_done) and np.allclose(r["finish_s"], expected, atol=1e-12)
    assert np.allclose(r["end_start_s"] - arrivals, [0, 0.008, 0.016, 0.0])
    assert res.busy_s["end"] == pytest.approx(0.040) and res.busy_s["link"] == pytest.approx(4 * tx)
    assert np.allclose(r["t_tx_s"], tx) and (r["bits"] == 8).all() and (r["bytes_up"] == 264).all()


def test_bandwidth_steps_rerate_a_transfer_and_early_exits_skip_the_cloud():
    chain = Chain(trace_dag(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), (3, 8, 8)))
    cost = CostModel(chain, np.array([0.0, 0.001, 0.001]), np.zeros(3), 1e6)
    plan = cost.plan(chain.boundary_cut(1))
    link = LinkSpec(rtt_s=0.0, bandwidth_bps=1e6, bandwidth_trace=((0.002, 0.5e6),))
    nbytes = wire_bytes(256, 16)                   # 520 bytes = 4.16 ms at 1 Mbit/s
    res = simulate_pipeline(plan, np.array([0.0, 0.0]), link,
                            lambda i, now, bw, p: Decision(i == 1, 16), result_bytes=4)
    r = res.records
    # 1 ms compute, 1 ms at 1 Mbit/s (1000 bits), the remaining 3160 bits at 0.5 Mbit/s
    assert r["tx_done_s"][0] == pytest.approx(0.002 + (8 * nbytes - 1000) / 0.5e6)
    assert r["early_exit"][1] and r["finish_s"][1] == pytest.approx(0.002) and r["bytes_up"][1] == 0


def test_frames_correlation():
    labels = np.repeat(np.arange(10), 50)
    low = frame_samples(labels, 500, np.random.default_rng([3, 1]))
    assert np.array_equal(low, np.random.default_rng([3, 1]).integers(0, 500, 500))
    high = frame_samples(labels, 2000, np.random.default_rng(0), run_length_mean=30, repeat_prob=0.5)
    same_class = (labels[high][1:] == labels[high][:-1]).mean()
    repeats = (high[1:] == high[:-1]).mean()
    assert same_class > 0.95 and 0.45 < repeats < 0.55
    assert (labels[low][1:] == labels[low][:-1]).mean() < 0.2


# --- the registered strategies on a real pool -------------------------------------------------

END_CLOUD = ["coach", "neurosurgeon", "dads", "spinn", "jps"]


@pytest.fixture(scope="module")
def ec_sets(small_pool):
    opts = [f"strategy.options.{s}={{model: vp_v3, calibration_samples: 120}}" for s in END_CLOUD]
    return [f"pool.root={small_pool.parent}", "pool.name=small", *opts]


@pytest.fixture(scope="module")
def ec_compare(ec_sets, tmp_path_factory):
    from vip_ray.experiment.compare import run_compare
    out = tmp_path_factory.mktemp("ec") / "cmp"
    return run_compare("scenarios/end_cloud_vp.yaml", ["vp", *END_CLOUD],
                       overrides=[*ec_sets, "workload.requests=200", "devices.3.link.bandwidth_trace=[[0, 20], [10, 2]]"],
                       out=out, failed=[0, 1], steal=None, log=lambda s: None)


def test_end_cloud_strategies_run_in_compare_with_real_answers(ec_compare, small_pool):
    from vip_ray import analysis
    from vip_ray.pool import Pool
    table = pd.read_parquet(ec_compare / "compare.parquet")
    assert set(table["strategy"]) == {"vp", *END_CLOUD}
    pool = Pool.load(small_pool)
    bank = pool.logits(["vp_v3"])[0]
    for s in END_CLOUD:
        req = analysis.load(ec_compare / "points" / s / "failed=0")
        assert len(req) == 400 and req["answered"].all()
        assert {"early_exit", "bits", "partition", "t_end_s", "t_tx_s", "t_cloud_s"} <= set(req.columns)
        # frames come from the evaluation part of the held-out split, answers from the real model
        fp = req[(req["bits"] == 32) | (req["bits"] == 0) & ~req["early_exit"]]
        assert (fp["prediction"].to_numpy() == bank[fp["sample"].to_numpy()].argmax(1)).all()
        assert req["correct_top1"].mean() > 0.6
        devices = pd.read_parquet(ec_compare / "points" / s / "failed=0" / "devices.parquet")
        assert list(devices["role"][:3]) == ["end", "link", "cloud"]
        assert (devices["bubble_s"] >= -1e-9).all() and (devices["utilization"] <= 1 + 1e-9).all()
    coach = analysis.load(ec_compare / "points" / "coach" / "failed=0")
    sent = coach[~coach["early_exit"] & (coach["bytes_up"] > 0)]
    assert (sent["bits"].between(2, 16) | (sent["bits"] == 8)).all()
    # failed=1 crashes the cloud (the most capable worker) at t = 0: everything runs on the end device
    for s in END_CLOUD:
        down = analysis.load(ec_compare / "points" / s / "failed=1")
        assert (down["bytes_up"] == 0).all() and (down["partition"] == "local (all end)").all()
    ec = pd.read_csv(ec_compare / "end_cloud.csv")
    assert set(ec["strategy"]) == set(END_CLOUD) and len(ec) == 2 * len(END_CLOUD)
    assert {"latency_mean_ms", "throughput_per_s", "exit_ratio", "kb_per_task", "bubble_link_s"} <= set(ec.columns)
    phases = pd.read_csv(ec_compare / "end_cloud_phases.csv")
    assert set(phases["mbps"]) == {20, 2} and (ec_compare / "end_cloud.png").stat().st_size > 0


def test_end_cloud_same_seed_same_tables_and_clear_errors(ec_sets, tmp_path):
    from vip_ray.experiment.run import run_scenario
    from vip_ray.scenario import ScenarioError
    sets = [*ec_sets, "workload.requests=120", "seeds.replications=1", "strategy.name=coach",
            "workload.frames.correlation=high"]
    a = run_scenario("scenarios/end_cloud_vp.yaml", overrides=sets, out=tmp_path / "a", plots=False, log=lambda s: None)
    b = run_scenario("scenarios/end_cloud_vp.yaml", overrides=sets, out=tmp_path / "b", plots=False, log=lambda s: None)
    pd.testing.assert_frame_equal(pd.read_parquet(a / "requests.parquet"), pd.read_parquet(b / "requests.parquet"))
    with pytest.raises(ScenarioError, match=r"strategy\.options\.coach\.online_bits"):
        run_scenario("scenarios/end_cloud_vp.yaml", overrides=[*sets, "strategy.options.coach.online_bits=[1]"],
                     out=tmp_path / "c", log=lambda s: None)
    with pytest.raises(ScenarioError, match=r"strategy\.options\.spinn\.cloud_device: 'moon'.*allowed: tx2, pi, cloud"):
        run_scenario("scenarios/end_cloud_vp.yaml", overrides=[*sets, "strategy.name=spinn",
                                                                "strategy.options.spinn.cloud_device=moon"],
                     out=tmp_path / "d", log=lambda s: None)
    with pytest.raises(ScenarioError, match=r"workload\.frames\.correlation: invalid value 'wild'; allowed: low, medium, high"):
        run_scenario("scenarios/end_cloud_vp.yaml", overrides=[*sets, "workload.frames.correlation=wild"],
                     out=tmp_path / "e", log=lambda s: None)
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_coach_exits_only_above_s_ext_and_split_runner_matches_the_bank(small_pool):
    from vip_ray.coach.calibrate import EndCloudModel
    from vip_ray.pool import Pool
    pool = Pool.load(small_pool)
    model = EndCloudModel(pool, "vp_v3", calibration_samples=120)
    full = model.full_cut()
    assert np.allclose(model.logits(full, FP32, "evaluation"), pool.logits(["vp_v3"])[0][model.evaluation.index],
                       atol=1e-4)
    cut = model.chain.boundary_cuts()[len(model.chain.boundaries) // 2]
    acc = [model.accuracy(cut, b) for b in (2, 16)]
    assert acc[1] >= acc[0] and acc[1] == pytest.approx(model.accuracy(full, FP32), abs=0.02)
    feats = model.features(cut, "evaluation")
    cache = SemanticCache(pool.num_classes, feats.shape[1]).warm(model.features(cut, "calibration"),
                                                                  model.calibration.y)
    s_all = separability(cache.similarities_batch(feats))
    s_ext = float(np.quantile(s_all, 0.5))
    policy = OnlinePolicy(s_ext, [], 8, (8,))
    exited, seen = [], []
    for f in feats:
        t = cache.similarities(f)
        s = separability(t)
        seen.append(s)
        if policy.exits(s):
            exited.append(s)
            cache.update(int(np.argmax(t)), f)
    seen = np.array(seen)
    assert len(exited) > 0 and min(exited) > s_ext and len(exited) == int((seen > s_ext).sum())


def test_multi_tensor_cut_sends_early_or_holds_for_the_decision():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _Res(4, False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 10))
    chain = Chain(trace_dag(net, (3, 8, 8)))
    block = next(b for b in chain.blocks if b.virtual)
    cut = chain.inside_cut(block, tuple(len(br) for br in block.branches))   # the block's branches on the end
    assert len(cut.tensors) == 2                                              # block input + main branch
    te = np.r_[0.0, np.full(chain.n_layers() - 1, 0.001)]
    cost = CostModel(chain, te, np.zeros(chain.n_layers()), 1e6)
    plan = cost.plan(cut)
    t = cost.times(plan, 8)
    assert t.t_tx_par > 0 and t.t_tx_par + t.t_cloud_par <= t.t_max_stage      # eq. 4 with layer parallelism
    link = LinkSpec(rtt_s=0.0, bandwidth_bps=1e6)
    early = simulate_pipeline(plan, np.zeros(1), link, lambda i, now, bw, p: Decision(False, 8), result_bytes=4,
                              early_bits=8)
    held = simulate_pipeline(plan, np.zeros(1), link, lambda i, now, bw, p: Decision(False, 8), result_bytes=4,
                             hold=True)
    gone = simulate_pipeline(plan, np.zeros(1), link, lambda i, now, bw, p: Decision(True, 0), result_bytes=4,
                             hold=True)
    assert early.records["tx_start_s"][0] == pytest.approx(plan.end_s[0])   # left while the branch computed
    assert held.records["tx_start_s"][0] == pytest.approx(plan.t_end)       # waited for the decision
    assert held.records["finish_s"][0] > early.records["finish_s"][0]
    assert gone.records["bytes_up"][0] == 0 and early.records["bytes_up"][0] == sum(plan.msg_bytes(8))


def test_plan_bandwidth_is_the_link_at_t0_or_the_lowest_of_its_trace():
    from vip_ray.coach.planners import plan_bandwidth_bps
    drops = LinkSpec(rtt_s=0.0, bandwidth_bps=20e6, bandwidth_trace=((0.0, 20e6), (10.0, 10e6), (20.0, 5e6)))
    rises = LinkSpec(rtt_s=0.0, bandwidth_bps=9e6, bandwidth_trace=((0.0, 5e6), (10.0, 20e6)))   # t = 0 step wins
    later = LinkSpec(rtt_s=0.0, bandwidth_bps=8e6, bandwidth_trace=((5.0, 2e6), (9.0, 30e6)))    # base until t = 5
    assert [plan_bandwidth_bps(k, "initial") for k in (drops, rises, later)] == [20e6, 5e6, 8e6]
    assert [plan_bandwidth_bps(k, "lowest") for k in (drops, rises, later)] == [5e6, 5e6, 2e6]
    from pydantic import ValidationError

    from vip_ray.coach.planners import CoachOptions
    with pytest.raises(ValidationError, match="'initial' or 'lowest'"):   # refused where a scenario sets it
        CoachOptions(plan_bandwidth="mean")


def test_coach_lowest_reading_plans_a_drop_as_a_static_link_at_its_floor(ec_sets):
    """plan_bandwidth=lowest on a 20 -> 2 Mbps trace makes the offline plan that the paper's
    reading (initial) makes on a link at 2 Mbps throughout; initial on the trace plans for 20."""
    from vip_ray.experiment.run import context, open_pool
    from vip_ray.scenario import load_scenario
    from vip_ray.strategies import get_strategy, with_strategy
    path = "scenarios/end_cloud_vp.yaml"

    def planned(*sets):
        sc = with_strategy(load_scenario(path, [*ec_sets, "workload.requests=20", *sets]), "coach")
        strat = get_strategy("coach").from_scenario(sc, path)
        strat.prepare(context(sc, open_pool(sc, lambda s: None), file=path, log=lambda s: None))
        return strat.planned.meta
    trace = "devices.3.link.bandwidth_trace=[[0, 20], [10, 2]]"
    low = planned(trace, "strategy.options.coach.plan_bandwidth=lowest")
    static = planned("devices.3.link.bandwidth_trace=null", "devices.3.link.bandwidth_mbps=2")
    first = planned(trace)
    assert (low["plan_bandwidth_mbps"], static["plan_bandwidth_mbps"], first["plan_bandwidth_mbps"]) == (2, 2, 20)
    assert (low["partition"], low["bits"]) == (static["partition"], static["bits"])
    assert first["plan_bandwidth"] == "initial" and low["plan_bandwidth"] == "lowest"
