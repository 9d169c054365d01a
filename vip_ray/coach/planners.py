"""Each end–cloud strategy's offline choice and per-task decisions, over a :class:`Setup`.

Answers always come from the real model: fp32 plans use the pool's prediction bank; quantized
tensors are really quantized and the cloud half really run (``EndCloudModel.logits``); early
exits answer with the semantic cache (COACH) or a trained exit head (SPINN).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Literal, Optional

import numpy as np
from pydantic import Field, field_validator

from vip_ray.coach import PlanReading
from vip_ray.coach.baselines import dads, jps, neurosurgeon, spinn_candidates
from vip_ray.coach.blocks import Cut
from vip_ray.coach.offline import (DEFAULT_GRID, StagePlan, accept_within, coach_search, exhaustive_search)
from vip_ray.coach.online import Decision, OnlinePolicy, SemanticCache, balance_cost, calibrate_policy, separability
from vip_ray.coach.online import _largest_safe_prefix as largest_safe_prefix
from vip_ray.coach.quant import FP32, MAX_BITS, MIN_BITS
from vip_ray.coach.runner import EndCloudOptions, Outputs, Planned, Setup


def _topm(logits: np.ndarray, m: int) -> np.ndarray:
    return np.argsort(-logits, axis=-1, kind="stable")[..., :m]


def _halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Warm / tune halves of the calibration set (alternate positions: both stay stratified)."""
    idx = np.arange(n)
    return idx[0::2], idx[1::2]


def _answers(st: Setup, samples: np.ndarray, records: dict, plans: list, logits_for: Callable,
             exit_pred: np.ndarray, exit_top: np.ndarray, m: int) -> Outputs:
    """Predictions per task: the exit's where a task exited, else the model's at the task's
    (cut, bits) — one batched lookup per distinct (cut, bits)."""
    n = len(samples)
    pred = np.full(n, -1, dtype=np.int64)
    hit = np.zeros(n, dtype=bool)
    labels = st.pool.labels[samples]
    ex = records["early_exit"]
    pred[ex] = exit_pred[ex]
    hit[ex] = (exit_top[ex] == labels[ex, None]).any(axis=1)
    groups: dict[tuple, list[int]] = {}
    for i in np.flatnonzero(~ex):
        groups.setdefault((plans[i].cut.key, int(records["qbits"][i])), []).append(i)
    by_key = {p.cut.key: p for p in plans if p is not None}
    for (key, bits), idx in groups.items():
        idx = np.asarray(idx)
        logits = logits_for(by_key[key], bits)[samples[idx]]
        top = _topm(logits, m)
        pred[idx] = top[:, 0]
        hit[idx] = (top == labels[idx, None]).any(axis=1)
    where = [plans[i].cut.where if plans[i] is not None else "" for i in range(n)]
    return Outputs(pred, hit, where)


def _scatter_int(model, values: np.ndarray) -> np.ndarray:
    """Integer rows of the evaluation part placed at their bank rows (others -1)."""
    out = np.full((model.n_bank, *values.shape[1:]), -1, dtype=np.int64)
    out[model.evaluation.index] = values
    return out


def _bank_logits(st: Setup) -> np.ndarray:
    return st.pool.logits([st.model.member.id])[0]


def _static(st: Setup, cut: Cut, meta: dict, m: int) -> Planned:
    """A fixed fp32 partition: every task the same; answers from the bank (fp32 = the model)."""
    plan = st.cost.plan(cut)
    bank = _bank_logits(st)

    def factory(samples):
        def decide(i, now, bw, p):
            return Decision(False, FP32)

        def answer(records, plans):
            none = np.zeros(len(samples), dtype=np.int64)
            return _answers(st, samples, records, plans, lambda p, b: bank, none, none[:, None], m)
        return decide, answer

    t = st.cost.times(plan, FP32)
    meta = {**meta, "partition": cut.where, "bits": plan.bits_label(FP32), "t_end_ms": 1e3 * t.t_end,
            "t_tx_ms": 1e3 * t.t_tx, "t_cloud_ms": 1e3 * t.t_cloud, "latency_ms": 1e3 * t.latency,
            "max_stage_ms": 1e3 * t.t_max_stage, "objective_ms": 1e3 * t.objective}
    return Planned(plan, factory, meta)


# ---------------------------------------------------------------------------------------------
# Neurosurgeon, DADS, JPS
# ---------------------------------------------------------------------------------------------


def plan_local(st: Setup, m: int) -> Planned:
    """Everything on the end device (the cloud is down)."""
    chain = st.model.chain
    return _static(st, chain.boundary_cut(chain.n_layers() - 1), {"rule": "cloud down: all on the end device"}, m)


def plan_neurosurgeon(st: Setup, options: EndCloudOptions, m: int, log: Callable[[str], None] = print) -> Planned:
    cut, _ = neurosurgeon(st.cost)
    return _static(st, cut, {"rule": "min latency over the layer chain (fp32)"}, m)


def plan_jps(st: Setup, options: EndCloudOptions, m: int, log: Callable[[str], None] = print) -> Planned:
    cut, _ = jps(st.cost)
    return _static(st, cut, {"rule": "min max(T_e, T_t) over the layer chain (fp32)"}, m)


def plan_dads(st: Setup, options: EndCloudOptions, m: int, log: Callable[[str], None] = print) -> Planned:
    cut, _, mode = dads(st.cost, st.frame_interval_s)
    return _static(st, cut, {"rule": f"DADS minimum s-t cut of the DAG, {mode} load (fp32)", "mode": mode}, m)


# ---------------------------------------------------------------------------------------------
# COACH
# ---------------------------------------------------------------------------------------------

ONLINE_GRID = (2, 3, 4, 5, 6, 8, 12, 16)


class CoachOptions(EndCloudOptions):
    """COACH's options (besides the common ones):

    * ``search`` — ``coach`` (Algorithm 1's divide and conquer) | ``exhaustive`` (every partition).
    * ``online`` — run the online component at all; ``early_exit`` / ``adjust`` switch its two
      halves (semantic-cache exit; per-task bit width). ``online: false`` is Table II's NoAdjust.
    * ``online_bits`` — the widths eq. 11 may pick (each costs one cloud pass over the test split).
    * ``max_count`` — cap on eq. 7's count m_j (null: the plain running mean).
    * ``centre_updates`` — which tasks feed eq. 7: ``all`` (early exits with their own answer and
      the cloud's answers when they return: §III-C, "gradually updated with task features during
      the inference process") or ``exit`` (only early exits, as Algorithm 1, line 23, lists it).
    * ``plan_bandwidth`` — the uplink bandwidth the offline search (eq. 6) is made for:
      ``initial`` (the link's bandwidth at t = 0, the profile P of Algorithm 1, line 2; the plan is
      deployed once and only the online bits follow the bandwidth, §III-C) or ``lowest`` (the
      lowest bandwidth of the link's declared trace: the plan is made for the worst bandwidth the
      deployment expects, and the online component has the slack when it is higher). See
      :func:`plan_bandwidth_bps` and README, Fig. 5: with ``initial`` a plan that already sends at
      few bits has nothing left to adjust when the bandwidth drops.
    """

    search: Literal["coach", "exhaustive"] = "coach"
    online: bool = True
    early_exit: bool = True
    adjust: bool = True
    online_bits: tuple[int, ...] = ONLINE_GRID
    max_count: Optional[int] = Field(default=None, ge=1)
    centre_updates: Literal["all", "exit"] = "all"
    plan_bandwidth: PlanReading = "initial"

    @field_validator("online_bits")
    @classmethod
    def _widths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [b for b in v if not MIN_BITS <= b <= MAX_BITS]
        if bad or not v:
            raise ValueError(f"got {list(v)}; each width must be an integer in [{MIN_BITS}, {MAX_BITS}], at least one")
        return tuple(sorted(set(v)))


def plan_bandwidth_bps(link: Any, reading: PlanReading) -> float:
    """The bandwidth (bit/s) COACH's offline search plans for: the link's at t = 0 (``initial``)
    or the lowest of its step function over the run (``lowest``)."""
    _, rates = link.steps()
    return float(rates[0] if reading == "initial" else min(rates))


def plan_coach(st: Setup, options: CoachOptions, m: int, log: Callable[[str], None] = print) -> Planned:
    model = st.model
    oracle = model.oracle()
    accept = accept_within(oracle, st.eps)
    passes0, fwd0 = model.passes, model.forward_s
    search = coach_search if options.search == "coach" else exhaustive_search
    bw_plan = plan_bandwidth_bps(st.link, options.plan_bandwidth)
    cost = st.cost if bw_plan == st.cost.bandwidth_bps else st.cost_at(bw_plan)
    report = search(cost, accept, t_max=st.deadline_s, bit_grid=DEFAULT_GRID)
    best = report.best
    cut, plan = best.cut, best.plan
    q = best.bits
    meta: dict[str, Any] = {"offline": report.as_dict(), "reference_accuracy": oracle.reference,
                            "plan_bandwidth": options.plan_bandwidth, "plan_bandwidth_mbps": bw_plan / 1e6,
                            "offline_forward_passes": model.passes - passes0,
                            "offline_forward_s": round(model.forward_s - fwd0, 3)}
    log(f"[coach] {report.method} search: {report.evaluated} partitions evaluated, {report.pruned} bounded away, "
        f"{report.probes} accuracy probes, {report.seconds:.1f} s -> {cut.where} at {plan.bits_label(q)} bits "
        f"(planned for {bw_plan / 1e6:g} Mbps, {options.plan_bandwidth})")
    online = options.online and plan.quantizable
    grid = tuple(sorted(set(options.online_bits) | {q})) if q != FP32 else (FP32,)
    policy = OnlinePolicy(math.inf, [], q, (q,))
    warm = tune = None
    if online:
        feats = model.features(cut, "calibration")
        y = model.calibration.y
        warm, tune = _halves(len(y))
        cache = SemanticCache(model.num_classes, feats.shape[1], options.max_count).warm(feats[warm], y[warm])
        sims = cache.similarities_batch(feats[tune])
        s_tune = separability(sims)
        exit_pred = sims.argmax(1)
        others = (q,) * (len(cut.tensors) - 1)
        preds = {b: model.logits(cut, others + (b,), "calibration")[tune].argmax(1) for b in grid}
        policy = calibrate_policy(s_tune, exit_pred, y[tune], preds, q, grid if options.adjust else (q,), st.eps)
        if not options.early_exit:
            policy.s_ext = math.inf
        if not options.adjust:
            policy.s_adj, policy.grid = [], (q,)
        meta["online"] = {"s_ext": policy.s_ext, "s_adj": policy.s_adj, "grid": list(policy.grid),
                          **policy.calibration}
    t = st.cost.times(plan, q)
    meta.update(partition=cut.where, bits=plan.bits_label(q), t_end_ms=1e3 * t.t_end, t_tx_ms=1e3 * t.t_tx,
                t_cloud_ms=1e3 * t.t_cloud, latency_ms=1e3 * t.latency, max_stage_ms=1e3 * t.t_max_stage,
                objective_ms=1e3 * t.objective)
    bank = _bank_logits(st)
    rows: dict[tuple, np.ndarray] = {}

    def logits_for(p: StagePlan, bits: int) -> np.ndarray:
        if not p.quantizable or bits == FP32:
            return bank
        key = (p.cut.key, bits)
        if key not in rows:
            rows[key] = model.bank_rows(model.logits(p.cut, (q,) * (len(p.cut.tensors) - 1) + (bits,)))
        return rows[key]

    def factory(samples):
        n = len(samples)
        exit_pred = np.full(n, -1, dtype=np.int64)
        exit_top = np.full((n, m), -1, dtype=np.int64)
        answered = None
        if not online:
            def decide(i, now, bw, p):
                return Decision(False, q)
        else:
            feats_test = model.bank_rows(model.features(cut))
            cal = model.features(cut, "calibration")
            cache = SemanticCache(model.num_classes, cal.shape[1], options.max_count).warm(
                cal[warm], model.calibration.y[warm])
            fixed = sum(plan.msg_bytes(q)[:-1])

            def decide(i, now, bw, p):
                f = feats_test[samples[i]]
                sims = cache.similarities(f)
                s = separability(sims)
                if policy.exits(s):                        # eq. 10, then eq. 7 on the answer's centre
                    r = int(np.argmax(sims))
                    exit_pred[i] = r
                    exit_top[i] = _topm(sims, m)
                    cache.update(r, f)
                    return Decision(True, 0)
                qr = policy.required_bits(s)
                qc = policy.choose_bits(qr, lambda b: balance_cost(
                    plan.t_end, plan.t_cloud, 8.0 * (fixed + plan.msg_bytes(b)[-1]) / bw))
                return Decision(False, qc)

            if options.centre_updates == "all":
                def answered(i, now, p, decision):       # eq. 7 with the cloud's answer as the label
                    j = samples[i]
                    cache.update(int(np.argmax(logits_for(p, decision.bits)[j])), feats_test[j])

        def answer(records, plans):
            return _answers(st, samples, records, plans, logits_for, exit_pred, exit_top, m)
        return decide, answer, answered

    return Planned(plan, factory, meta, early_bits=q, hold=online)


# ---------------------------------------------------------------------------------------------
# SPINN
# ---------------------------------------------------------------------------------------------


class SpinnOptions(EndCloudOptions):
    """SPINN's options: ``bits`` (its fixed quantization, default 8), ``exits`` (evenly spaced
    exit points, each a candidate split)."""

    bits: int = Field(default=8, ge=MIN_BITS, le=MAX_BITS)
    exits: int = Field(default=8, ge=1, le=32)


def plan_spinn(st: Setup, options: SpinnOptions, m: int, log: Callable[[str], None] = print) -> Planned:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = st.model
    bits = options.bits
    y = model.calibration.y
    warm, tune = _halves(len(y))
    heads: dict[bytes, dict] = {}
    for cut in spinn_candidates(model.chain, options.exits):
        plan = st.cost.plan(cut)
        if not plan.quantizable:
            heads[cut.key] = {"cut": cut, "plan": plan, "exit_rate": 0.0, "head": None, "threshold": math.inf}
            continue
        feats = model.features(cut, "calibration")
        head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=1.0))
        head.fit(feats[warm], y[warm])                     # the exit classifier, trained on the warm half
        proba = head.predict_proba(feats[tune])
        conf, hpred = proba.max(1), head.classes_[proba.argmax(1)]
        cloud = model.logits(cut, bits, "calibration")[tune].argmax(1)
        order = np.argsort(-conf, kind="stable")
        gain = (hpred == y[tune]).astype(int)[order] - (cloud == y[tune]).astype(int)[order]
        k = largest_safe_prefix(gain, st.eps * len(tune))
        # never below the least confident calibration task: nothing that unsure exits unseen
        thr = math.inf if k == 0 else float(conf[order][min(k, len(order) - 1)])
        heads[cut.key] = {"cut": cut, "plan": plan, "exit_rate": k / len(tune), "head": head, "threshold": thr}
    entries = list(heads.values())

    def choose(bw: float) -> dict:
        def expected(e):
            t = st.cost.times(e["plan"], bits, bw)
            return t.t_end + (1.0 - e["exit_rate"]) * (t.t_tx + t.t_cloud)
        return min(entries, key=expected)

    chosen0 = choose(st.cost.bandwidth_bps)
    memo: dict[float, dict] = {}

    def plan_for(i, now, bw):
        if bw not in memo:
            memo[bw] = choose(bw)
        return memo[bw]["plan"]

    meta = {"candidates": [{"partition": e["cut"].where, "exit_rate_calibration": e["exit_rate"],
                            "threshold": e["threshold"]} for e in entries],
            "partition": chosen0["cut"].where, "bits": chosen0["plan"].bits_label(bits)}
    bank = _bank_logits(st)

    def logits_for(p: StagePlan, b: int) -> np.ndarray:
        return bank if not p.quantizable or b == FP32 else model.bank_rows(model.logits(p.cut, b))

    def factory(samples):
        n = len(samples)
        exit_pred = np.full(n, -1, dtype=np.int64)
        exit_top = np.full((n, m), -1, dtype=np.int64)
        test_conf: dict[bytes, tuple] = {}

        def decide(i, now, bw, p):
            e = heads[p.cut.key]
            if e["head"] is None:
                return Decision(False, bits)
            key = e["cut"].key
            if key not in test_conf:
                proba = e["head"].predict_proba(model.features(e["cut"]))
                conf = model.bank_rows(proba.max(1)[:, None])[:, 0]
                top = _scatter_int(model, e["head"].classes_[_topm(proba, m)])
                test_conf[key] = (conf, top)
            conf, top = test_conf[key]
            j = samples[i]
            if conf[j] > e["threshold"]:
                exit_pred[i], exit_top[i] = top[j, 0], top[j]
                return Decision(True, 0)
            return Decision(False, bits)

        def answer(records, plans):
            return _answers(st, samples, records, plans, logits_for, exit_pred, exit_top, m)
        return decide, answer

    return Planned(chosen0["plan"], factory, meta, plan_for=plan_for, early_bits=bits, hold=True)
