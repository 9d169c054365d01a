"""Online controllers at the master (vip_ray.control): the anytime margin rule and the reactive
policy's wait decisions on hand-worked timelines, static bit for bit today's master, and the
scenario key's bad input."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from vip_ray.control import POLICIES, controller
from vip_ray.control.margin import MarginRule, early_answers
from vip_ray.control.reactive import device_state
from vip_ray.core.aggregation import AggregationSpec
from vip_ray.core.tables import Outcome

MS = 1e-3


def _timing(reply_ms, variant=None):
    reply = np.asarray(reply_ms, dtype=float) * MS
    r, d = reply.shape
    return SimpleNamespace(arrival=np.zeros(r), reply_at=reply,
                           variant=np.zeros((r, d), dtype=np.int64) if variant is None else np.asarray(variant),
                           outcome=np.where(np.isfinite(reply), Outcome.REPLIED, Outcome.CRASHED))


def _answer(timing, probs, agg, deadline_ms=10.0, **kw):
    due = timing.arrival + deadline_ms * MS
    responded = timing.reply_at <= due[:, None]
    waits = np.ones_like(responded)
    finish = np.where(responded.all(axis=1), timing.reply_at.max(axis=1), due)
    # the bank (V, N, C): device j of request i runs variant j on sample i
    timing.variant = np.broadcast_to(np.arange(probs.shape[1]), probs.shape[:2])
    rule = MarginRule(agg, np.ascontiguousarray(probs.transpose(1, 0, 2)))
    return early_answers(timing, finish, responded, waits, rule, np.arange(len(probs)), **kw)


VIP = SimpleNamespace(name="vip")


def test_vip_margin_answers_early_only_when_the_missing_replies_cannot_overturn_it():
    """VIP sums probabilities: a missing reply moves a class over another by at most 1.
    Request 0: after d0 (1 ms) the margin is 0.9 − 0.05 = 0.85 < 2 (two out); after d1 (2 ms)
    [1.7, 0.15, 0.15]: 1.55 > 1 (one out) → answered at 2 ms with d0, d1 (d2 would give [1.7,
    1.15, 0.15]: class 0 still). Request 1: after d0 [0.6, 0.4]: 0.2 < 2; after d1 [0.9, 1.1]:
    0.2 < 1 — and d2 does overturn class 0's lead at d0 — so it waits for d2 (3 ms)."""
    probs = np.array([[[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.0, 1.0, 0.0]],
                      [[0.6, 0.4, 0.0], [0.3, 0.7, 0.0], [0.2, 0.8, 0.0]]])
    t = _timing([[1, 2, 3], [1, 2, 3]])
    finish, used = _answer(t, probs, VIP)
    np.testing.assert_allclose(finish, [2 * MS, 3 * MS], rtol=0, atol=1e-15)
    assert used.tolist() == [[True, True, False], [True, True, True]]


def test_vip_margin_counts_a_silent_device_it_still_waits_for():
    """d2 never replies (crashed, still waited for): request 0 has margin 1.55 after d1 > 1 →
    answered at 2 ms instead of the 10 ms deadline; request 1, d1 replying (0.5, 0.5, 0): the sum
    is [1.4, 0.55, 0.05], margin 0.85 < 1 (d2's swing) → it waits until the deadline."""
    probs = np.array([[[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.0, 1.0, 0.0]],
                      [[0.9, 0.05, 0.05], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0]]])
    t = _timing([[1, 2, np.inf], [1, 2, np.inf]])
    finish, used = _answer(t, probs, VIP)
    np.testing.assert_allclose(finish, [2 * MS, 10 * MS], rtol=0, atol=1e-15)
    assert used.tolist() == [[True, True, False], [True, True, False]]


def test_vp_top1_replies_swing_by_e_minus_1_over_e_plus_c_minus_1():
    """VP with k = 1 and equal eq. 1 weights (1): each reply contributes softmax(one-hot) — e/Z on
    its class, 1/Z elsewhere, Z = e + C − 1 — so its swing is s = (e − 1)/Z. C = 3, three devices.
    Request 0 (votes 0, 0, 1): after two replies the margin is 2s > s (one out) → early at 2 ms.
    Request 1 (votes 0, 1, 1): margin 0 after two → it waits for the third (3 ms).
    With ``anytime_scale`` 0.4 both go after the first reply already (s > 0.4 · 2s): request 1 then
    answers class 0 where waiting gives class 1 — the risk a scale below 1 takes."""
    agg = AggregationSpec("vp", 1, 1.0, (28.0,) * 3, (0.35,) * 3, 28.0, 0.35, num_classes=3)
    eye = np.eye(3) * 0.9 + 0.05
    probs = np.stack([eye[[0, 0, 1]], eye[[0, 1, 1]]])
    t = _timing([[1, 2, 3], [1, 2, 3]])
    finish, used = _answer(t, probs, agg)
    np.testing.assert_allclose(finish, [2 * MS, 3 * MS], rtol=0, atol=1e-15)
    assert used.tolist() == [[True, True, False], [True, True, True]]
    s = (math.e - 1) / (math.e + 2)
    assert s > 0.4 * 2 * s
    finish, used = _answer(t, probs, agg, scale=0.4)
    np.testing.assert_allclose(finish, [1 * MS, 1 * MS], rtol=0, atol=1e-15)
    assert used.tolist() == [[True, False, False], [True, False, False]]
    finish, _ = _answer(t, probs, agg, min_replies=3)          # no early answer before three replies
    np.testing.assert_allclose(finish, [3 * MS, 3 * MS], rtol=0, atol=1e-15)


def _state(arrival, reply, expected=None, *, misses=2, alpha=0.2, slow_s=1e9, deadline=0.5, carry=None, cut=None):
    arrival = np.asarray(arrival, dtype=float)
    reply = np.asarray(reply, dtype=float)
    exp = np.ones(len(arrival), dtype=bool) if expected is None else np.asarray(expected)
    return device_state(arrival, arrival + deadline, reply, exp, carry, misses=misses, alpha=alpha,
                        slow_s=slow_s, cut=float(arrival[-1]) if cut is None else cut)


def test_reactive_stops_waiting_after_missed_timeouts_and_returns_when_the_device_answers():
    """Requests every 1 s, deadline 0.5 s, misses 2. The device replies in 0.1 s to requests 0–2,
    not at all to 3–6 (down), then to 7 in 0.1 s again. Timeouts at 3.5 and 4.5 s: from 4.5 s on
    the master stops waiting (requests 5, 6, 7 leave after it); request 4 left at 4 s after one
    timeout only. The reply of request 7 arrives at 7.1 s: request 8 waits for it again."""
    t = np.arange(10.0)
    reply = np.where((t >= 3) & (t <= 6), np.inf, t + 0.1)
    stop, _ = _state(t, reply)
    assert stop.tolist() == [False] * 5 + [True] * 3 + [False] * 2


def test_reactive_late_reply_is_a_ping_answer_and_feeds_the_latency_ewma():
    """alpha 0.5, slow above 0.3 s, misses 100 (health out of play). Latencies 0.1 (reply at
    0.1 s), 0.9 (late: reply at 1.9 s), 0.05 (at 2.05 s), 0.1: EWMA 0.1 → 0.5 after 1.9 s → 0.275
    after 2.05 s. Request 2 (leaves at 2 s) sees 0.5 > 0.3: not waited for; request 3 sees 0.275."""
    t = np.arange(4.0)
    reply = t + np.array([0.1, 0.9, 0.05, 0.1])
    stop, carry = _state(t, reply, misses=100, alpha=0.5, slow_s=0.3)
    assert stop.tolist() == [False, False, True, False]
    assert carry[1] == pytest.approx(0.275)          # the state as the last request left (3 s) ...
    assert carry[2][0].tolist() == [3.1]             # ... and the reply still to come, for the next chunk


def test_reactive_state_runs_on_across_chunks():
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 50, 400))
    reply = np.where(rng.random(400) < 0.3, np.inf, t + rng.exponential(0.3, 400))
    whole, _ = _state(t, reply, alpha=0.3, slow_s=0.4)
    a, carry = _state(t[:170], reply[:170], alpha=0.3, slow_s=0.4)
    b, _ = _state(t[170:], reply[170:], alpha=0.3, slow_s=0.4, carry=carry)
    assert whole.any() and not whole.all()
    assert np.concatenate([a, b]).tolist() == whole.tolist()


def test_static_without_anytime_is_todays_master():
    from vip_ray.scenario.schema.control import CONTROL_MODELS

    assert controller(CONTROL_MODELS["static"]()) is None        # dep.control None: the unchanged code path
    assert controller(CONTROL_MODELS["static"](anytime=True)) is not None
    # the built-ins (a learned policy registered at run time joins them: the worked example's test)
    assert {"anytime", "bandit", "learned", "oracle", "reactive", "static"} <= set(POLICIES.names())


def _run(tmp_path, name, *sets):
    from vip_ray import analysis
    from vip_ray.experiment.run import run_scenario

    out = run_scenario("scenarios/smart_home.yaml", overrides=[
        "seeds.replications=1", "workload.requests=1500", *sets], out=tmp_path / name, plots=False, log=lambda s: None)
    return analysis.load(out)


def test_policies_on_smart_home_keep_the_answer_and_cut_the_wait(tmp_path):
    """Same seed: ``static`` equals a run without the key; ``anytime`` (scale 1) gives every request
    the prediction waiting would give, never later, some earlier; ``reactive`` never waits longer
    than the deadline and waits less than ``static`` in total (1,500 requests: 150 s, the TV is busy
    from about 90 s)."""
    base = _run(tmp_path, "none")
    static = _run(tmp_path, "static", "control.policy=static")
    cols = ["finish_s", "latency_s", "prediction", "responders", "correct_top1"]
    assert base[cols].equals(static[cols])
    any_ = _run(tmp_path, "anytime", "control.policy=anytime")
    assert (any_["prediction"].to_numpy() == static["prediction"].to_numpy()).all()
    assert (any_["finish_s"].to_numpy() <= static["finish_s"].to_numpy() + 1e-15).all()
    assert (any_["finish_s"].to_numpy() < static["finish_s"].to_numpy() - 1e-6).sum() > 100
    react = _run(tmp_path, "reactive", "control.policy=reactive")
    assert react["latency_s"].max() <= 0.05 + 1e-12
    assert react["latency_s"].sum() < static["latency_s"].sum()


@pytest.mark.parametrize("sets, words", [
    (["control.policy=nope"], ["control.policy", "unknown policy 'nope'",
                               "anytime, bandit, learned, oracle, reactive, static"]),
    (["control.misses=3"], ["control.misses", "unknown key 'misses'", "allowed: anytime, anytime_scale, "
                            "min_replies, adaptive_k, k_budget, k_min, k_max, policy"]),
    (["control.policy=reactive", "control.ewma_alpha=0"], ["control.ewma_alpha", "must be > 0"]),
    (["control.policy=oracle", "engine=serve"], ["control.policy", "'oracle'", "simulator only"]),
    (["control.policy=anytime", "strategy.aggregator=majority"], ["control.anytime", "vp, vip", "'majority'"]),
    (["control.policy=reactive", "strategy.name=mp"], ["control.policy", "fan-out"]),
    (["control.policy=bandit", "engine=serve"], ["control.policy", "'bandit' runs on the sim engine only"]),
    (["control.policy=reactive", "control.redeploy=true", "engine=serve"],
     ["control.redeploy", "simulator only", "redeploy: false"]),
    (["control.policy=static", "control.anytime=true", "strategy.name=mp"], ["control.policy", "fan-out"]),
])
def test_bad_control_input_is_one_line_and_exit_2(tmp_path, capsys, sets, words):
    from vip_ray.cli import main

    argv = ["run", "scenarios/smart_home.yaml", "--out", str(tmp_path / "x")]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "smart_home.yaml" in err
    for w in words:
        assert w in err
    assert not (tmp_path / "x").exists()


def test_cli_lists_the_policies(capsys):
    from vip_ray.cli import main

    assert main(["policies", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"anytime", "bandit", "learned", "oracle", "reactive", "static"} <= set(listed)
    assert listed["oracle"]["master_visible"] is False
    assert [n for n in ("anytime", "bandit", "learned", "oracle", "reactive", "static")
            if "serve" in listed[n]["engines"]] == ["anytime", "learned", "reactive", "static"]


def test_reactive_redeployment_costs_the_weights_transfer_and_the_load_on_the_targets_timeline():
    """Requests every 0.1 s, deadline 50 ms; worker ``a`` (variant 2, accuracy .95) crashes at
    1.0 s; worker ``b`` runs variant 1 (.91). misses 2: timeouts at 1.05 and 1.15 s, so from the
    request at 1.2 s the master waits no more for ``a``; 0.25 s later (the request at 1.5 s) the
    policy copies variant 2 to ``b``: 100,000 B · 8 / 8 Mbit/s = 0.1 s + RTT 2 ms + load 0.2 s =
    0.302 s without a variant on ``b``'s timeline (its jobs UNPLACED), then variant 2."""
    from vip_ray.control.reactive import Reactive
    from vip_ray.core.deployment import FanOut
    from vip_ray.core.world import Availability, DeviceSpec, LinkSpec, SimSpec, VariantSlot, WorkloadSpec
    from vip_ray.scenario.schema.control import CONTROL_MODELS
    from vip_ray.sim import run

    link = LinkSpec(rtt_s=0.002, bandwidth_bps=8e6)
    world = SimSpec(devices=(
        DeviceSpec("m", (VariantSlot(0.0, 0, 0.01),), role="master"),
        DeviceSpec("a", (VariantSlot(0.0, 2, 0.01),), link=link,
                   availability=Availability(kind="crash", crash_at_s=1.0)),
        DeviceSpec("b", (VariantSlot(0.0, 1, 0.01),), link=link)),
        workload=WorkloadSpec(arrival="periodic", rate_hz=10, n_requests=30, deadline_s=0.05))
    variants = [SimpleNamespace(id=f"v{i}", accuracy=acc, bytes=100_000) for i, acc in enumerate((0.90, 0.91, 0.95))]
    policy = Reactive(CONTROL_MODELS["reactive"](misses=2, redeploy=True, redeploy_after_s=0.25, load_s=0.2))
    policy.service_s = np.full((3, 3), 0.01)
    dep = FanOut(strategy="vp", scenario="hand", seed=0, pool=None, top_m=1, world=world, variants=tuple(variants))
    runs = []
    planned = policy.plan_world(dep, lambda w: runs.append(run(w, "reference")) or runs[-1])
    arrival = runs[0].arrival
    b = planned.world.devices[2]
    assert [(s.start_s, s.variant) for s in b.slots[:2]] == [(0.0, 1), (arrival[15], -1)]
    assert b.slots[2].variant == 2
    assert b.slots[2].start_s - arrival[15] == pytest.approx(0.1 + 0.002 + 0.2, abs=1e-12)
    assert planned.meta["redeployments"] == 1 and policy.moves[0]["to"] == "b"
    res = run(planned.world, "reference")
    assert (res.outcome[15:18, 2] == Outcome.UNPLACED).all()
    assert (res.outcome[19:, 2] == Outcome.REPLIED).all() and (res.variant[19:, 2] == 2).all()
    assert (res.outcome[:15, 2] == Outcome.REPLIED).all() and (res.variant[:15, 2] == 1).all()


def test_bandit_tries_the_untried_variant_then_keeps_the_better_one():
    """One worker, variants 0 (accuracy .9) and 1 (.5), both in time; exploration 0, no latency
    term, epochs of 1 s. Epoch 1 runs variant 0 (reward .9); variant 1 is untried (UCB +inf): it
    is deployed at 1 s — 10,000 B · 8 / 8 Mbit/s = 10 ms + RTT 2 ms, no load time — and earns at
    most .5; at 2 s variant 0 (.9) comes back, and stays (its mean beats .5 from then on)."""
    from vip_ray.control.bandit import Bandit
    from vip_ray.core.deployment import FanOut
    from vip_ray.core.world import DeviceSpec, LinkSpec, SimSpec, VariantSlot, WorkloadSpec
    from vip_ray.scenario.schema.control import CONTROL_MODELS
    from vip_ray.sim import run

    link = LinkSpec(rtt_s=0.002, bandwidth_bps=8e6)
    world = SimSpec(devices=(DeviceSpec("m", (VariantSlot(0.0, 0, 0.01),), role="master"),
                             DeviceSpec("w", (VariantSlot(0.0, 0, 0.01),), link=link)),
                    workload=WorkloadSpec(arrival="periodic", rate_hz=10, n_requests=45, deadline_s=0.05))
    variants = tuple(SimpleNamespace(id=f"v{i}", accuracy=a, bytes=10_000) for i, a in enumerate((0.9, 0.5)))
    policy = Bandit(CONTROL_MODELS["bandit"](exploration=0.0, latency_weight=0.0, interval_s=1.0, load_s=0.0))
    policy.service_s = np.full((2, 2), 0.01)
    dep = FanOut(strategy="vp", scenario="hand", seed=0, pool=None, top_m=1, world=world, variants=variants)
    planned = policy.plan_world(dep, lambda w: run(w, "reference"))
    assert [(m["at_s"], m["variant"]) for m in policy.moves] == [(1.0, "v1"), (2.0, "v0")]
    assert policy.moves[0]["cost_s"] == pytest.approx(0.012, abs=1e-12)
    slots = [(s.start_s, s.variant) for s in planned.world.devices[1].slots]
    assert slots == [(0.0, 0), (1.0, -1), (pytest.approx(1.012), 1), (2.0, -1), (pytest.approx(2.012), 0)]


def test_env_waiting_for_everyone_replays_the_static_master(tmp_path):
    """``ControlEnv`` with every device waited for, epoch by epoch, gives the rewards that the
    static run's request table gives (accuracy within the deadline − λ · mean latency / deadline
    per 20 s of arrivals), and observations in [0, 1]."""
    from vip_ray.control.env import ControlEnv

    sets = ["workload.requests=600"]
    static = _run(tmp_path, "static", "workload.requests=600")
    env = ControlEnv("scenarios/smart_home.yaml", overrides=sets, interval_s=20.0, latency_weight=0.5)
    obs, _ = env.reset(seed=0)
    rewards, done = [], False
    while not done:
        obs, r, done, trunc, info = env.step(np.ones(env.n_devices, dtype=np.int8))
        assert obs.shape == (env.n_devices, 3) and (obs >= 0).all() and (obs <= 1).all() and not trunc
        rewards.append(r)
    epoch = np.floor(static["arrival_s"].to_numpy() / 20.0).astype(int)
    ok = (static["correct_top1"] & static["deadline_met"]).to_numpy()
    lat = np.minimum(static["latency_s"].to_numpy(), 0.05) / 0.05
    want = [ok[epoch == e].mean() - 0.5 * lat[epoch == e].mean() for e in range(epoch.max() + 1)]
    np.testing.assert_allclose(rewards, want, rtol=0, atol=1e-12)


def test_env_passes_gymnasiums_checker():
    gymnasium = pytest.importorskip("gymnasium")
    from gymnasium.utils.env_checker import check_env

    from vip_ray.control.env import ControlEnv

    check_env(ControlEnv("scenarios/smart_home.yaml", overrides=["workload.requests=300"], interval_s=10.0),
              skip_render_check=True)
    assert gymnasium.__version__


def test_compiled_margin_rule_decides_as_the_numpy_one():
    """Random timelines (ties in reply times, silent devices, both aggregators, scales, minimum
    replies): the numba loop and the vectorised numpy rule give the same finish times and replies."""
    from vip_ray.control.margin_jit import early_answers_jit

    rng = np.random.default_rng(7)
    early = 0
    for case in range(12):
        r, d, c, v, n = 400, int(rng.integers(1, 7)), int(rng.integers(1, 12)), 4, 50
        probs = rng.dirichlet(np.ones(c) * 0.3, size=(v, n))
        agg = VIP if case % 2 else AggregationSpec("vp", int(rng.integers(1, c + 1)), 1.0,
                                                    tuple(rng.uniform(20, 40, v)), tuple(rng.uniform(0.3, 1.0, v)),
                                                    40.0, 0.3, num_classes=c)
        rule = MarginRule(agg, probs)
        reply = np.round(rng.exponential(4.0, (r, d)), 0) * MS          # rounded: ties in reply times
        reply[rng.random((r, d)) < 0.2] = np.inf
        timing = SimpleNamespace(arrival=np.zeros(r), reply_at=reply, variant=rng.integers(-1, v, (r, d)))
        due = np.full(r, 10 * MS)
        responded = reply <= due[:, None]
        waits = rng.random((r, d)) < 0.9
        finish = np.where((responded | ~waits).all(axis=1), np.where(waits, reply, -np.inf).max(axis=1, initial=0), due)
        samples = rng.integers(0, n, r)
        kw = dict(scale=float(rng.choice([1.0, 0.5, 0.0])), min_replies=int(rng.integers(1, 3)))
        f1, u1 = early_answers(timing, finish, responded, waits, rule, samples, **kw)
        f2, u2 = early_answers_jit(timing, finish, responded, waits, rule, samples, **kw)
        early += int((f1 < finish).sum())
        np.testing.assert_array_equal(f1, f2)
        np.testing.assert_array_equal(u1, u2)
    assert early > 100          # the rule decided often enough for the comparison to mean something


def test_oracle_is_the_scheduled_replacement():
    """cycle_stealing with placement.dynamic off: ``oracle`` deploys exactly the timelines that
    ``placement.dynamic: true`` (re-placement at the scheduled availability changes) gives, and
    they differ from static's (the TV's busy trace unplaces it)."""
    from vip_ray.experiment.run import checked_strategy, context, open_pool
    from vip_ray.scenario import load_scenario

    def world(*sets):
        f = "scenarios/cycle_stealing.yaml"
        sc = load_scenario(f, ["placement.dynamic=false", *sets])
        st = checked_strategy(sc, f, "fast")
        ctx = context(sc, open_pool(sc, lambda s: None), file=f, log=lambda s: None)
        st.prepare(ctx)
        return st.deploy(ctx, 0).world.devices

    oracle, dynamic, static = world("control.policy=oracle"), world("placement.dynamic=true"), world()
    assert [d.slots for d in oracle] == [d.slots for d in dynamic]
    assert [d.slots for d in oracle] != [d.slots for d in static]
    tv = next(d for d in oracle if d.name == "tv")
    assert any(not s.placed for s in tv.slots)


@pytest.mark.parametrize("alpha, slow_s, misses", [(0.3, 0.4, 2), (0.5, 0.3, 1), (0.2, np.inf, 3)])
def test_compiled_reactive_scan_decides_as_the_numpy_one(alpha, slow_s, misses):
    """Random replies, late replies and silences, in two chunks: the numba walk and the numpy
    scan give the same wait decisions and the same carry."""
    rng = np.random.default_rng(11)
    t = np.sort(rng.uniform(0, 60, 3000))
    reply = np.where(rng.random(3000) < 0.25, np.inf, t + rng.exponential(0.3, 3000))
    expected = rng.random(3000) < 0.95
    outs = []
    for compiled in (True, False):
        kw = dict(misses=misses, alpha=alpha, slow_s=slow_s, compiled=compiled)
        a, carry = device_state(t[:1700], t[:1700] + 0.5, reply[:1700], expected[:1700], None,
                                cut=float(t[1699]), **kw)
        b, carry2 = device_state(t[1700:], t[1700:] + 0.5, reply[1700:], expected[1700:], carry,
                                 cut=float(t[-1]), **kw)
        outs.append((np.concatenate([a, b]), carry[:2], carry2[:2], len(carry[2][0])))
    assert outs[0][0].any() and not outs[0][0].all()
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    assert outs[0][1:] == outs[1][1:]


def test_compare_policies_writes_one_row_per_policy_and_replication(tmp_path, capsys):
    import pandas as pd

    from vip_ray.cli import main
    from vip_ray.experiment.policies import POLICY_COLUMNS

    out = tmp_path / "cmp"
    assert main(["compare", "scenarios/smart_home.yaml", "--policies", "static,reactive+anytime", "--requests", "300",
                 "--set", "seeds.replications=2", "--out", str(out)]) == 0
    table = pd.read_parquet(out / "policies.parquet")
    assert list(table.columns) == list(POLICY_COLUMNS)
    assert table[["policy", "replication"]].values.tolist() == [["static", 0], ["static", 1],
                                                               ["reactive+anytime", 0], ["reactive+anytime", 1]]
    s, r = table[table.policy == "static"], table[table.policy == "reactive+anytime"]
    assert (r["latency_p50_ms"].to_numpy() <= s["latency_p50_ms"].to_numpy()).all()
    assert (out / "policies.png").stat().st_size > 0
    for bad, words in (("static,nope", "unknown policy 'nope'"), ("reactive+foo", "only '+anytime'")):
        assert main(["compare", "scenarios/smart_home.yaml", "--policies", bad, "--out", str(tmp_path / "x")]) == 2
        assert words in capsys.readouterr().err


def _epoch_rewards(table, interval_s=20.0, latency_weight=0.5, deadline=0.05):
    """The environment's reward per epoch, worked from a run's request table."""
    epoch = np.floor(table["arrival_s"].to_numpy() / interval_s).astype(int)
    ok = (table["correct_top1"] & table["deadline_met"]).to_numpy()
    lat = np.minimum(table["latency_s"].to_numpy(), deadline) / deadline
    return [ok[epoch == e].mean() - latency_weight * lat[epoch == e].mean() for e in range(epoch.max() + 1)]


def test_env_worked_example_trains_a_policy_and_registers_it(tmp_path):
    """``train_and_register`` trains wait probabilities in the environment, registers them as a
    policy and saves them; ``control: {policy: NAME}`` and ``control: {policy: learned, file: F}``
    then run them through the real master: its table gives the rewards the environment gives
    for the same per-device wait mask, epoch by epoch."""
    from vip_ray.control import POLICIES
    from vip_ray.control.env import ControlEnv, train_and_register
    from vip_ray.control.learned import register_learned

    sets = ["workload.requests=600"]
    env = ControlEnv("scenarios/smart_home.yaml", overrides=sets, interval_s=20.0, latency_weight=0.5)
    names = [d.name for d in env.scenario.devices]
    waits = train_and_register(env, "test_trained_waits", path=tmp_path / "waits.json",
                               iterations=2, population=3, elite=1)
    assert list(waits) == names and all(0.0 <= p <= 1.0 for p in waits.values())
    assert "test_trained_waits" in POLICIES.names()
    # a registered mask that leaves the busy TV out, so the decision shows in the table
    register_learned("test_no_tv", {n: 0.0 if n == "tv" else 1.0 for n in names})
    for policy, extra, want in [("test_trained_waits", [], waits),
                                ("learned", [f"control.file={tmp_path / 'waits.json'}"], waits),
                                ("test_no_tv", [], {n: float(n != "tv") for n in names})]:
        table = _run(tmp_path, policy, *sets, f"control.policy={policy}", *extra)
        mask = np.array([want[n] >= 0.5 for n in names], dtype=np.int8)
        env.reset(seed=0)
        rewards, done = [], False
        while not done:
            _, r, done, _, _ = env.step(mask)
            rewards.append(r)
        np.testing.assert_allclose(rewards, _epoch_rewards(table), rtol=0, atol=1e-12)
        if policy == "test_no_tv":
            assert not table["responders"].astype(str).str.contains("tv").all()
            assert table["latency_s"].max() < 0.05


def test_learned_policy_without_a_readable_file_is_one_line_and_exit_2(tmp_path, capsys):
    from vip_ray.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text('{"waits": {"tv": 2}}')
    for path, words in [(tmp_path / "missing.json", ["control.file", "missing.json", "not a readable JSON"]),
                        (bad, ["control.file", "bad.json", "probabilities in [0, 1]"])]:
        code = main(["run", "scenarios/smart_home.yaml", "--set", "control.policy=learned",
                     "--set", f"control.file={path}", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and all(w in err[0] for w in words), err


def test_compare_policies_counts_each_replications_own_redeployments(tmp_path):
    """reactive with redeploy moves variants a different number of times per replication: each
    row carries its own replication's count, the one a run of that seed alone reports (the
    summary kept only the last replication's before)."""
    import json

    import pandas as pd

    from vip_ray.cli import main

    sets = ["--set", "workload.requests=3000", "--set", "workload.duration_s=null", "--set", "placement.dynamic=false",
            "--set", "control.redeploy=true"]
    out = tmp_path / "cmp"
    assert main(["compare", "scenarios/cycle_stealing.yaml", "--policies", "reactive", *sets,
                 "--set", "seeds.replications=2", "--out", str(out)]) == 0
    rows = pd.read_parquet(out / "policies.parquet").sort_values("replication")["redeployments"].tolist()
    alone = []
    for rep in (0, 1):
        run = tmp_path / f"r{rep}"
        assert main(["run", "scenarios/cycle_stealing.yaml", "--set", "control.policy=reactive", *sets,
                     "--set", f"seeds.base={rep}", "--set", "seeds.replications=1", "--out", str(run)]) == 0
        alone.append(json.loads((run / "summary.json").read_text())["redeployments"])
    assert rows == alone and len(set(rows)) == 2    # cycle_stealing's seeds start at 0
