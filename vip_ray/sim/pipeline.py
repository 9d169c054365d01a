"""The three-stage end–cloud pipeline (COACH Fig. 2) as a SimPy simulation.

Stages are resources, tasks are processes: the end device (FIFO, one task at a time) runs a
task's end segments and hands each crossing tensor to the uplink as soon as it is produced; the
link (``vip_ray.sim.entities.Link``, SimPy ``Cable`` style: FIFO serialisation at the bandwidth in
force — re-rated when a bandwidth trace steps mid-transfer — then rtt/2 propagation; a lost
transmission is sent again) carries it; the cloud (FIFO) runs segment k once message k has
arrived; the answer returns on the downlink. A task that exits early (or a local plan) finishes
on the end device.

When the last crossing tensor is ready, ``decide(task, now, bandwidth, plan)`` is asked for the task's
fate — early exit or the bit width of that tensor — which is where COACH's online component,
SPINN's exit and the fixed-precision baselines differ.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable

import numpy as np
import simpy

from vip_ray.coach.offline import StagePlan
from vip_ray.coach.online import Decision
from vip_ray.coach.quant import FP32
from vip_ray.core import endcloud
from vip_ray.core.world import LinkSpec
from vip_ray.sim.entities.link import Link

Decide = Callable[[int, float, float, StagePlan], Decision]

COLUMNS = ("arrival_s", "end_start_s", "end_done_s", "tx_start_s", "tx_done_s", "cloud_start_s", "cloud_done_s",
           "finish_s", "t_end_s", "t_tx_s", "t_cloud_s", "wait_tx_s", "wait_cloud_s", "bytes_up", "bytes_down", "bits",
           "early_exit")


@dataclass
class PipelineResult:
    """Per-task timings (arrays, task order), per-stage busy times and each task's plan."""

    records: dict[str, np.ndarray]
    busy_s: dict[str, float]
    events: int
    plans: list

    @property
    def span(self) -> tuple[float, float]:
        fin = self.records["finish_s"]
        return float(self.records["arrival_s"].min()), float(np.nanmax(fin))

    def throughput(self, t0: float | None = None, t1: float | None = None) -> float:
        """Tasks finished per second in [t0, t1) (default: first arrival to last finish)."""
        a, b = self.span
        t0 = a if t0 is None else t0
        t1 = b if t1 is None else t1
        fin = self.records["finish_s"]
        n = int(((fin >= t0) & (fin < t1)).sum()) + (int((fin == t1).sum()) if t1 == b else 0)
        return n / (t1 - t0) if t1 > t0 else float("nan")


PlanFor = Callable[[int, float, float], StagePlan]


def simulate_pipeline(plan: StagePlan | PlanFor, arrivals: np.ndarray, link: LinkSpec, decide: Decide, *,
                      result_bytes: int, seed: int = 0, early_bits: int = FP32, hold: bool = False,
                      answered: Callable[[int, float, StagePlan, Decision], None] | None = None) -> PipelineResult:
    """Run every task of ``arrivals`` (seconds, non-decreasing) through the pipeline. ``plan`` is
    one plan for all tasks, or ``plan(task, now, bandwidth)`` choosing a task's plan when the end
    device takes it up (a dynamic split). Tensors produced before the last one (multi-tensor cuts)
    go at ``early_bits``: as soon as they are ready (layer-parallel execution), or, with ``hold``,
    only once the task's decision says it does not exit (COACH's workflow: decide, then send).
    ``answered(task, now, plan, decision)`` is told when a task's answer reaches the end device
    (COACH feeds the cloud's answers back into its semantic cache)."""
    arrivals = np.asarray(arrivals, dtype=np.float64)
    n = len(arrivals)
    env = simpy.Environment()
    end = simpy.PriorityResource(env, capacity=1)
    cloud = simpy.PriorityResource(env, capacity=1)
    wire = Link(env, link)
    times, rates = link.steps()
    rng = np.random.default_rng([seed, 7])
    loss = link.loss
    rec = {c: np.full(n, np.nan) for c in COLUMNS}
    rec["bytes_up"] = np.zeros(n, dtype=np.int64)
    rec["bytes_down"] = np.zeros(n, dtype=np.int64)
    rec["bits"] = np.zeros(n, dtype=np.int64)     # as tables record it (0 nothing sent, 8 raw frame)
    rec["qbits"] = np.zeros(n, dtype=np.int64)    # the width the last crossing tensor was quantized to
    rec["early_exit"] = np.zeros(n, dtype=bool)
    busy = {"end": 0.0, "link": 0.0, "cloud": 0.0, "downlink": 0.0}
    plans: list = [None] * n

    def bandwidth(t: float) -> float:
        return rates[bisect.bisect_right(times, t) - 1]

    def transmit(channel, nbytes: int, i: int, key: str):
        """Serialise (again after a loss), then propagate; returns (serialisation time — the
        stage's busy time —, time queued for the channel). The start of a task's first
        serialisation goes to ``tx_start_s``."""
        spent = queued = 0.0
        while True:
            ready = env.now
            with channel.resource.request(priority=i) as req:
                yield req
                t0 = env.now
                queued += t0 - ready
                if key == "link" and np.isnan(rec["tx_start_s"][i]):
                    rec["tx_start_s"][i] = t0
                yield from channel.serialize(nbytes)
                spent += env.now - t0
            if not (loss and rng.random() < loss):
                break
        busy[key] += spent
        yield from wire.propagate()
        return spent, queued

    def send(i: int, nbytes: int, arrived: simpy.Event):
        spent, queued = yield from transmit(wire.up, nbytes, i, "link")
        rec["t_tx_s"][i] += spent
        rec["wait_tx_s"][i] += queued
        arrived.succeed(env.now)

    def emit(i: int, p: StagePlan, k: int, bits: int, arrived: list) -> None:
        nbytes = p.msg_bytes(bits)[k]
        rec["bytes_up"][i] += nbytes
        env.process(send(i, nbytes, arrived[k]))

    def task(i: int):
        yield env.timeout(arrivals[i])
        rec["arrival_s"][i] = env.now
        rec["t_tx_s"][i] = rec["wait_tx_s"][i] = rec["wait_cloud_s"][i] = 0.0
        decision = Decision(False, 0)
        with end.request(priority=i) as req:
            yield req
            rec["end_start_s"][i] = t0 = env.now
            p = plan(i, env.now, bandwidth(env.now)) if callable(plan) else plan
            plans[i] = p
            n_msgs = len(p.msg_layers)
            arrived = [env.event() for _ in range(n_msgs)]
            held: list[int] = []
            for k in range(n_msgs):
                yield env.timeout(p.end_s[k])
                if k < n_msgs - 1:
                    held.append(k)
                    if not hold:
                        emit(i, p, held.pop(), early_bits, arrived)
                    continue
                decision = decide(i, env.now, bandwidth(env.now), p)
                if decision.exit:
                    break
                for j in held:                     # held tensors leave now, in production order
                    emit(i, p, j, early_bits, arrived)
                emit(i, p, k, decision.bits, arrived)
            if n_msgs == 0:                        # all local: nothing to decide
                decision = Decision(False, FP32)
            if not decision.exit:
                yield env.timeout(p.end_s[-1])
            rec["end_done_s"][i] = env.now
            busy["end"] += env.now - t0
        rec["t_end_s"][i] = env.now - t0
        rec["early_exit"][i] = decision.exit
        rec["bits"][i] = 0 if decision.exit else p.bits_label(decision.bits)
        rec["qbits"][i] = decision.bits
        if decision.exit or n_msgs == 0:
            rec["finish_s"][i] = env.now
            rec["t_cloud_s"][i] = 0.0
            return
        t_cloud = 0.0
        for k in range(n_msgs):
            yield arrived[k]
            ready = env.now
            with cloud.request(priority=i) as req:
                yield req
                rec["wait_cloud_s"][i] += env.now - ready   # queued behind other tasks
                if k == 0:
                    rec["cloud_start_s"][i] = env.now
                c0 = env.now
                yield env.timeout(p.cloud_s[k])
                busy["cloud"] += env.now - c0
                t_cloud += env.now - c0
        rec["tx_done_s"][i] = arrived[-1].value
        rec["cloud_done_s"][i] = env.now
        rec["t_cloud_s"][i] = t_cloud
        yield from transmit(wire.down, result_bytes, i, "downlink")
        rec["bytes_down"][i] = result_bytes
        rec["finish_s"][i] = env.now
        if answered is not None:
            answered(i, env.now, p, decision)

    for i in range(n):
        env.process(task(i))
    steps = 0
    while env.peek() != float("inf"):
        env.step()
        steps += 1
    return PipelineResult(rec, busy, steps, plans)


# ---------------------------------------------------------------------------------------------
# One replication of an end–cloud deployment (vip_ray.core.deployment.Pipeline)
# ---------------------------------------------------------------------------------------------


def replicate_pipeline(dep, *, replication: int, chunk_requests: int):
    """The request table of one seed (in chunks), then ``(device table, meta)``: the arrivals and
    frames of the seed run through the pipeline with the planner's per-task decisions."""
    from vip_ray.coach.runner import plain

    st, planned = dep.setup, dep.planned
    table, devices, meta = _replication(st, planned, dep.arrivals, dep.samples, strategy=dep.strategy,
                                        seed=dep.seed, replication=replication, topm=dep.top_m)
    for a in range(0, max(len(table), 1), chunk_requests):
        yield table.iloc[a:a + chunk_requests].reset_index(drop=True)
    meta = {**meta, "placement": endcloud.placement(st),
            "engine": "end-cloud pipeline (SimPy)", **dep.meta}
    return devices, plain(meta)


def _replication(st, planned, arrivals, samples, *, strategy: str, seed: int, replication: int, topm: int):
    decide, answer, *fed_back = planned.decide_factory(samples)
    res = simulate_pipeline(planned.plan_for or planned.plan, arrivals, st.link, decide,
                            result_bytes=st.result_bytes, seed=seed, early_bits=planned.early_bits,
                            hold=planned.hold, answered=fed_back[0] if fed_back else None)
    r = res.records
    out = answer(r, res.plans)
    table = endcloud.request_table(st, r, out.pred, out.topm_hit, out.partition, samples, strategy=strategy, seed=seed, replication=replication,
                                   topm=topm, engine="sim")
    devices = endcloud.device_table(st, planned, r, res.busy_s, replication)
    meta = {"events": res.events, "throughput_per_s": res.throughput(), "span_s": res.span}
    return table, devices, meta
