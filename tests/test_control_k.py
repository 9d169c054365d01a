"""``control.adaptive_k``: the master picks each device's top-k from the up-link bandwidth it
measures (vip_ray.control.topk) — hand-worked k choices, the up-link time a smaller k saves on an
exact timeline, predictions equal to a numpy top-k aggregation worked in the test, the margin
rule with a k per device — and the environment's energy term on a tiny episode."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from vip_ray.control.topk import choose_k
from vip_ray.core.aggregation import AggregationSpec, topk_dense

MS = 1e-3
#: a master and two workers (tests/data/three_devices.yaml) on the shipped default pool (10 classes);
#: ``slow`` behind a 2 kbit/s up-link, periodic 1 request/s, 10-byte inputs, deadline 1 s
TINY = ["pool.name=default", "devices.2.link={bandwidth_mbps: 0.002}", "workload.arrival=periodic",
        "workload.rate_hz=null", "workload.fps=1", "workload.requests=40", "workload.input_bytes=10",
        "workload.deadline_ms=1000", "seeds.replications=1"]
ADAPTIVE = ["control.adaptive_k=true", "control.k_budget=0.01"]


def test_k_is_the_largest_whose_reply_serialises_within_the_budget():
    """C = 10, 4-byte floats + 1-byte indices: h(1) = 1 B, h(k) = min(5k, 40) B. Budget 0.1 × 50 ms
    = 5 ms. At 8 kbit/s 5 ms carry 40 bits = 5 B: only h(1) fits → 1. At 32 kbit/s 20 B: h(4) = 20
    → 4. At 80 kbit/s 50 B: every k up to 10 (h(10) = 40) → 10. At 1 kbit/s 5 bits: nothing fits
    → k_min (2 here). No link (inf): k_max."""
    bw = np.array([8e3, 32e3, 80e3, np.inf])
    assert choose_k(bw, deadline_s=0.05, budget=0.1, k_min=1, k_max=10, num_classes=10).tolist() == [1, 4, 10, 10]
    assert choose_k(np.array([1e3]), deadline_s=0.05, budget=0.1, k_min=2, k_max=10, num_classes=10).tolist() == [2]
    assert choose_k(bw, deadline_s=0.05, budget=0.1, k_min=1, k_max=3, num_classes=10).tolist() == [1, 3, 3, 3]


def test_a_k_per_column_decompresses_each_column_as_its_own_k():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(6), size=(5, 3))            # (B, V, C)
    dense = topk_dense(probs, (1, 3, None))
    for v, k in enumerate((1, 3, None)):
        np.testing.assert_array_equal(dense[:, v], topk_dense(probs[:, v:v + 1], k)[:, 0])
    # k = 1: only the index travels, a one-hot; k = 3: the three largest values, zeros elsewhere
    np.testing.assert_array_equal(dense[:, 0], np.eye(6)[probs[:, 0].argmax(axis=1)])
    top3 = np.sort(probs[:, 1], axis=1)[:, -3:]
    np.testing.assert_array_equal(np.sort(dense[:, 1], axis=1)[:, -3:], top3)
    assert (np.sort(dense[:, 1], axis=1)[:, :3] == 0).all()
    np.testing.assert_array_equal(dense[:, 2], probs[:, 2])


def _deploy(*sets):
    from vip_ray.experiment.run import checked_strategy, context, open_pool
    from vip_ray.scenario import load_scenario

    f = "tests/data/three_devices.yaml"
    sc = load_scenario(f, [*TINY, *sets])
    st = checked_strategy(sc, f, "reference")
    ctx = context(sc, open_pool(sc, lambda s: None), file=f, log=lambda s: None)
    st.prepare(ctx)
    return st.deploy(ctx, sc.seeds.base)


def test_a_smaller_k_shortens_the_slow_uplink_by_the_bytes_it_saves():
    """Budget 0.01 × 1 s = 10 ms. ``fast`` (10 Mbit/s): h(2) = 10 B = 8 µs fits → k 2. ``slow``
    (2 kbit/s): h(2) = 80 bits takes 40 ms, h(1) = 8 bits 4 ms → k 1. The master has no link: k 2.
    One request a second never queues on an up-link, so each of slow's replies arrives
    (80 − 8) bits / 2000 bit/s = 36 ms earlier, fast's and the master's at the same time; slow
    sends 9 bytes less per request."""
    from vip_ray.sim import run

    static, adaptive = _deploy(), _deploy(*ADAPTIVE)
    assert adaptive.aggregation.k_device == (2, 2, 1)
    assert adaptive.meta["k_by_device"] == {"master": 2, "fast": 2, "slow": 1}
    assert [d.reply_bytes for d in adaptive.world.devices][1:] == [10, 1]
    a, b = run(static.world, "reference"), run(adaptive.world, "reference")
    assert np.isfinite(a.reply_at).all()
    np.testing.assert_allclose(a.reply_at[:, 2] - b.reply_at[:, 2], 0.036, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(a.reply_at[:, :2], b.reply_at[:, :2])
    np.testing.assert_array_equal(a.bytes_up - b.bytes_up, 9)


def _numpy_vp(probs, variant, use, ks, rho, width, alpha, rho_max, width_min):
    """VP's aggregation worked request by request: each used reply's top-k (values, or a one-hot
    for k = 1) scattered into C, softmaxed, times (ρ/max ρ)·(d/min d)^α, summed, softmaxed."""
    out = np.full((len(probs), probs.shape[-1]), np.nan)
    for i in range(len(probs)):
        total = np.zeros(probs.shape[-1])
        for d in np.flatnonzero(use[i]):
            p = probs[i, d]
            top = np.argsort(-p, kind="stable")[:ks[d]]
            x = np.zeros_like(p)
            x[top] = 1.0 if ks[d] == 1 else p[top]
            e = np.exp(x - x.max())
            v = variant[i, d]
            total += e / e.sum() * (rho[v] / rho_max) * (width[v] / width_min) ** alpha
        if use[i].any():
            e = np.exp(total - total.max())
            out[i] = e / e.sum()
    return out


def test_predictions_are_the_top_k_aggregation_with_each_devices_own_k():
    from vip_ray.core.master import request_table
    from vip_ray.core.tables import sample_rng
    from vip_ray.sim import run

    dep = _deploy(*ADAPTIVE)
    res = run(dep.world, "reference")
    table = request_table(res, dep, replication=0, sample_rng=sample_rng(dep.seed))
    samples = sample_rng(dep.seed).integers(0, len(dep.labels), size=len(res.arrival))
    names = [d.name for d in dep.world.devices]
    use = np.array([[n in str(r).split(",") for n in names] for r in table["responders"]])
    assert use.all()                                    # every reply in time (deadline 1 s)
    rho = [float(v.input_size) for v in dep.variants]
    width = [float(v.width) for v in dep.variants]
    placed = sorted({s.variant for d in dep.world.devices for s in d.slots if s.placed})
    probs = dep.probs[res.variant, samples[:, None]]
    want = _numpy_vp(probs, res.variant, use, (2, 2, 1), rho, width, 1.0, max(rho[v] for v in placed),
                     min(width[v] for v in placed))
    got = dep.aggregation(probs, res.variant, use)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(table["prediction"].to_numpy(), want.argmax(axis=1))
    # the same replies at k 2 everywhere score otherwise: slow's k changed the aggregation
    k2 = _numpy_vp(probs, res.variant, use, (2, 2, 2), rho, width, 1.0, max(rho[v] for v in placed),
                   min(width[v] for v in placed))
    assert not np.allclose(k2, want)


def test_margin_rule_with_a_k_per_device_decides_as_the_compiled_one_and_keeps_the_answer():
    """Random timelines, a k per device (1, 3, all): the numpy and the numba rule agree; and with
    scale 1 an early answer's top-1 is the one all the replies give (the bound holds for any k)."""
    from vip_ray.control.margin import MarginRule, early_answers
    from vip_ray.control.margin_jit import early_answers_jit

    rng = np.random.default_rng(5)
    r, d, c, v, n = 600, 3, 6, 4, 40
    probs = rng.dirichlet(np.ones(c) * 0.3, size=(v, n))
    agg = AggregationSpec("vp", 2, 1.0, tuple(rng.uniform(20, 40, v)), tuple(rng.uniform(0.3, 1.0, v)), 40.0, 0.3,
                          num_classes=c, k_device=(1, 3, None))
    rule = MarginRule(agg, probs)
    reply = np.round(rng.exponential(4.0, (r, d)), 0) * MS
    timing = SimpleNamespace(arrival=np.zeros(r), reply_at=reply, variant=rng.integers(0, v, (r, d)))
    responded = reply <= 10 * MS
    waits = np.ones((r, d), dtype=bool)
    finish = np.where(responded.all(axis=1), reply.max(axis=1), 10 * MS)
    samples = rng.integers(0, n, r)
    f1, u1 = early_answers(rule.rows(timing), finish, responded, waits, rule, samples)
    f2, u2 = early_answers_jit(rule.rows(timing), finish, responded, waits, rule, samples)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(u1, u2)
    early = f1 < finish
    assert early.sum() > 50
    bank = probs[timing.variant, samples[:, None]]                       # (R, D, C)
    full = agg(bank, timing.variant, responded)
    part = agg(bank, timing.variant, u1)
    np.testing.assert_array_equal(part[early].argmax(axis=1), full[early].argmax(axis=1))


def test_adaptive_k_runs_end_to_end_with_anytime_and_is_in_the_summary(tmp_path):
    """End to end (a run directory): the summary names each device's k; anytime on top keeps every
    prediction and answers no later."""
    import pandas as pd

    from vip_ray.experiment.run import run_scenario

    def run_(name, *sets):
        out = run_scenario("tests/data/three_devices.yaml", overrides=[*TINY, *ADAPTIVE, *sets],
                           out=tmp_path / name, plots=False, log=lambda s: None)
        return pd.read_parquet(out / "requests.parquet"), json.loads((out / "summary.json").read_text())

    plain, summary = run_("k")
    assert summary["k_by_device"] == {"master": 2, "fast": 2, "slow": 1}
    early, _ = run_("k_anytime", "control.anytime=true")
    np.testing.assert_array_equal(early["prediction"], plain["prediction"])
    assert (early["finish_s"].to_numpy() <= plain["finish_s"].to_numpy() + 1e-15).all()


@pytest.mark.parametrize("sets, words", [
    (["control.adaptive_k=true", "strategy.aggregator=vip"], ["control.adaptive_k", "'vp'", "'vip'"]),
    (["control.adaptive_k=true", "control.k_min=3", "control.k_max=2"], ["control.k_min", "k_max (2)"]),
    (["control.adaptive_k=true", "control.k_budget=0"], ["control.k_budget", "must be > 0"]),
    (["control.adaptive_k=true"], ["control.adaptive_k", "one master", "masters", "without adaptive_k"]),
])
def test_bad_adaptive_k_input_is_one_line_and_exit_2(tmp_path, capsys, sets, words):
    from vip_ray.cli import main

    file = "scenarios/smart_city.yaml" if "masters" in words else "scenarios/smart_home.yaml"
    argv = ["run", file, "--out", str(tmp_path / "x")]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and file in err, err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------ energy reward

#: the tiny episode: master 3 W busy, fast 9 W busy, slow no power model; 400 + 100 nJ/bit radios
POWER = ["devices.0.power={idle_w: 1.0, busy_w: 3.0}", "devices.1.power={idle_w: 2.0, busy_w: 9.0}",
         "network.radio={tx_nj_per_bit: 400, rx_nj_per_bit: 100}", "workload.requests=12"]


def test_env_energy_term_is_the_mean_request_energy_over_the_normaliser(tmp_path):
    """One epoch holds the whole 12-request episode. A request's energy, worked here from the
    run's table: each responder's compute (its variant's MACs / its MAC/s × its busy power; slow
    has none) + its bytes (down + up) × (400 + 100) nJ/bit. Reward = accuracy within the
    deadline − 0.5 × mean latency / deadline − 0.3 × mean energy / 0.01 J. The default
    normaliser: every device's compute for one job + one input (10 B) and one reply (10 B, 1 B)
    on each of the two links."""
    from vip_ray.control.env import ControlEnv
    from vip_ray.experiment.run import run_scenario
    from vip_ray import analysis

    sets = [*TINY, *ADAPTIVE, *POWER]
    table = analysis.load(run_scenario("tests/data/three_devices.yaml", overrides=sets, out=tmp_path / "r",
                                       plots=False, log=lambda s: None))
    env = ControlEnv("tests/data/three_devices.yaml", overrides=sets, interval_s=1e3, latency_weight=0.5,
                     energy_weight=0.3, energy_norm_j=0.01)
    dep = env.strategy.deploy(env.ctx, 3)
    speed = {"master": 1e9, "fast": 4e9, "slow": 0.5e9}
    busy = {"master": 3.0, "fast": 9.0, "slow": 0.0}
    macs = {d.name: dep.variants[d.slots[0].variant].macs for d in dep.world.devices}
    job = {n: macs[n] / speed[n] * busy[n] for n in speed}
    compute = np.array([sum(job[n] for n in str(r).split(",")) for r in table["responders"]])
    energy = compute + 8 * (table["bytes_down"] + table["bytes_up"]).to_numpy() * 500e-9
    ok = (table["correct_top1"] & table["deadline_met"]).to_numpy()
    lat = np.minimum(table["latency_s"].to_numpy(), 1.0)
    env.reset(seed=3)
    _, reward, done, _, info = env.step(np.ones(3, dtype=np.int8))
    assert done and info["requests"] == 12
    assert info["energy_j"] == pytest.approx(energy.mean(), rel=1e-12)
    assert reward == pytest.approx(ok.mean() - 0.5 * lat.mean() - 0.3 * energy.mean() / 0.01, rel=1e-12, abs=1e-12)
    ref = sum(job.values()) + 8 * (10 + 10 + 10 + 1) * 500e-9
    assert ControlEnv("tests/data/three_devices.yaml", overrides=sets, energy_weight=1.0).energy_norm_j == \
        pytest.approx(ref, rel=1e-12)
    assert math.isfinite(ref)


def test_env_energy_weight_without_an_energy_model_is_refused():
    from vip_ray.control.env import ControlEnv

    with pytest.raises(ValueError, match="energy_weight: .* has no energy model"):
        ControlEnv("tests/data/three_devices.yaml", overrides=TINY, energy_weight=0.5)
