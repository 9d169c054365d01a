"""Model parallelism as a SimPy chain: each request visits the stages (model slices) in order.

The master holds the input. Stage ``s`` runs on device ``stages[s]``; before it, the tensor
entering the stage (``stage_bytes[s]``: the input for stage 0, an intermediate activation after)
moves from the device holding it to the stage's device over the star network: up the holder's
link (if the holder is networked), then down the receiver's link (if it is networked) — the
access point relays, as on home Wi-Fi. After the last stage, ``out_bytes`` go back up to the
master. Devices, links and availability are the reference engine's entities, so preemption,
failures, jitter, stragglers and bandwidth traces mean exactly what they mean there.

A hop that fails (device down on arrival or failing mid-slice, preempt-drop, loss) ends the
request (``on_failure="fail"``), or (``"stall"``) the request waits for the device to come back
and retries, giving up at its deadline.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict

import numpy as np

from .engines.reference import CountingEnvironment, build_world, collect_stats, draw_inputs
from .result import Outcome
from vip_ray.core.breakdown import BREAKDOWN_COLUMNS
from vip_ray.core.world import DeviceSpec, WorkloadSpec, _err

ON_FAILURE = ("fail", "stall")
# the chain's breakdown: every hop's link time (down / up), queueing, compute and pauses, summed;
# the master answers when the reply arrives (no wait), aggregation is nothing
_DOWN, _QUEUE, _COMPUTE, _PAUSED, _UP = (BREAKDOWN_COLUMNS.index(c) for c in
                                         ("t_down_s", "t_queue_s", "t_compute_s", "t_paused_s", "t_up_s"))


@dataclass(frozen=True)
class ChainSpec:
    """``devices``: the run's devices (each one's slot holds its slice's service time);
    ``stages``: device index per stage, in model order; ``stage_bytes[s]``: bytes entering stage
    ``s``; ``out_bytes``: the reply; ``master``: index of the device that holds the input and
    takes the answer (its link is ``None``)."""

    devices: tuple
    stages: tuple
    stage_bytes: tuple
    out_bytes: int
    master: int
    workload: WorkloadSpec
    on_failure: str = "fail"
    seed: int = 0

    def __post_init__(self):
        c = "ChainSpec"
        if not self.devices or not all(isinstance(d, DeviceSpec) for d in self.devices):
            raise _err(c, "devices", "needs at least one DeviceSpec")
        n = len(self.devices)
        if not self.stages or any(not 0 <= s < n for s in self.stages):
            raise _err(c, "stages", f"device indices in 0..{n - 1}, at least one, got {self.stages!r}")
        if len(self.stage_bytes) != len(self.stages):
            raise _err(c, "stage_bytes", f"one entry per stage ({len(self.stages)}), got {len(self.stage_bytes)}")
        if not 0 <= self.master < n or self.devices[self.master].link is not None:
            raise _err(c, "master", "must index a device without a link (the master)")
        if self.on_failure not in ON_FAILURE:
            raise _err(c, "on_failure", f"got {self.on_failure!r}; allowed values: {', '.join(map(repr, ON_FAILURE))}")


@dataclass
class ChainResult:
    """Per request: ``finish`` (the answer reached the master; inf if it never did), ``outcome``
    (``REPLIED`` or the first failure), ``failed_device`` (-1 if none); bytes per request."""

    arrival: np.ndarray
    finish: np.ndarray
    outcome: np.ndarray
    failed_device: np.ndarray
    bytes_down: np.ndarray
    bytes_up: np.ndarray
    device_stats: Dict[str, np.ndarray] = field(default_factory=dict)
    events: int = 0
    wall_s: float = 0.0
    t_end: float = 0.0
    stages: np.ndarray = None      # (R, len(BREAKDOWN_COLUMNS)) where each request's time went
    work: np.ndarray = None        # (R, D) compute time of each request's slices on each device (energy)
    link_bytes: np.ndarray = None  # (R, D) bytes each request put on each device's link (energy)

    @property
    def n_requests(self) -> int:
        return len(self.arrival)


class _Chain:
    def __init__(self, env, spec: ChainSpec, devices, links, draws, gaps):
        self.env, self.spec, self.devices, self.links = env, spec, devices, links
        self.gaps = gaps
        R = len(gaps)
        self.down_lost, self.mult, self.up_lost = draws
        self.arrival = np.zeros(R)
        self.finish = np.full(R, np.inf)
        self.outcome = np.zeros(R, dtype=np.int8)
        self.failed = np.full(R, -1, dtype=np.int32)
        self.bytes_down = np.zeros(R, dtype=np.int64)
        self.bytes_up = np.zeros(R, dtype=np.int64)
        self.lost_down = [0] * len(devices)
        self.lost_up = [0] * len(devices)
        # where each request's time went, summed over its hops (columns: BREAKDOWN_COLUMNS)
        self.stages = np.zeros((R, len(BREAKDOWN_COLUMNS)))
        # what each request cost each device, for its energy (vip_ray.core.energy.chain_energy)
        self.work = np.zeros((R, len(devices)))
        self.link_bytes = np.zeros((R, len(devices)))
        self.pending = R
        self.all_done = env.event()
        if R == 0:
            self.all_done.succeed()

    def arrivals(self):
        for i, g in enumerate(self.gaps):
            yield self.env.timeout(g)
            self.env.process(self.request(i))

    def _move(self, i, src, dst, nbytes):
        """Generator: ``nbytes`` from device ``src`` to ``dst``; returns a failure outcome or None."""
        if src == dst:
            return None
        for d, up in ((src, True), (dst, False)):
            link = self.links[d]
            if link is None:
                continue
            t0 = self.env.now
            self.link_bytes[i, d] += nbytes
            if up:
                self.bytes_up[i] += nbytes
                yield from link.up.send(nbytes, i)
                lost = self.up_lost[d]
            else:
                self.bytes_down[i] += nbytes
                yield from link.down.send(nbytes, i)
                lost = self.down_lost[d]
            if lost is not None and lost[i]:
                if up:
                    self.lost_up[d] += 1
                else:
                    self.lost_down[d] += 1
                self.failed[i] = d
                return Outcome.LOST_UP if up else Outcome.LOST_DOWN
            yield from link.propagate()
            self.stages[i, _UP if up else _DOWN] += self.env.now - t0
        return None

    def _serve(self, i, d, deadline_at):
        """Generator: one slice on device ``d``, retried while stalling; returns the outcome."""
        env, dev = self.env, self.devices[d]
        t0 = env.now
        while True:
            outcome, _ = yield from dev.serve(i, self.mult[d][i], deadline_at)
            if outcome == Outcome.REPLIED:   # queued (and stalled) from t0 to its start, then computed
                start, paused = dev.last_job
                row = self.stages[i]
                row[_QUEUE] += start - t0
                row[_COMPUTE] += env.now - start - paused
                self.work[i, d] += env.now - start - paused
                row[_PAUSED] += paused
            if outcome == Outcome.REPLIED or self.spec.on_failure == "fail" or env.now >= deadline_at:
                return outcome
            if dev.failure and not dev.up:       # wait for the repair, at most until the deadline
                yield env.any_of([dev.up_event, env.timeout(deadline_at - env.now)])
                if env.now >= deadline_at:
                    return outcome

    def request(self, i):
        env, spec = self.env, self.spec
        self.arrival[i] = env.now
        deadline_at = env.now + spec.workload.deadline_s
        holder = spec.master
        outcome = Outcome.REPLIED
        for d, nbytes in zip(spec.stages, spec.stage_bytes):
            outcome = yield from self._move(i, holder, d, nbytes)
            if outcome is not None:
                break
            outcome = yield from self._serve(i, d, deadline_at)
            if outcome != Outcome.REPLIED:
                self.failed[i] = d
                break
            holder = d
        else:
            outcome = (yield from self._move(i, holder, spec.master, spec.out_bytes)) or Outcome.REPLIED
        self.outcome[i] = outcome
        if outcome == Outcome.REPLIED:
            self.finish[i] = env.now
        self.pending -= 1
        if self.pending == 0:
            self.all_done.succeed()


def run_chain(spec: ChainSpec) -> ChainResult:
    t0 = time.perf_counter()
    gaps, draws = draw_inputs(spec.devices, spec.workload, spec.seed)
    R = len(gaps)
    env = CountingEnvironment()
    devices, links = build_world(env, spec.devices, spec.seed)
    chain = _Chain(env, spec, devices, links, draws, gaps.tolist())
    env.process(chain.arrivals())
    env.run(until=chain.all_done)
    last_end = max([dev.last_end for dev in devices], default=0.0)
    t_end = max(float(chain.arrival[-1]) + spec.workload.deadline_s, last_end, env.now) if R else 0.0
    stats = collect_stats(devices, spec.devices, chain.lost_down, chain.lost_up, spec.seed, t_end)
    return ChainResult(arrival=chain.arrival, finish=chain.finish, outcome=chain.outcome, failed_device=chain.failed,
                       bytes_down=chain.bytes_down, bytes_up=chain.bytes_up, device_stats=stats,
                       events=env.processed, wall_s=time.perf_counter() - t0, t_end=t_end, stages=chain.stages,
                       work=chain.work, link_bytes=chain.link_bytes)


def replicate_chain(dep, *, replication: int, chunk_requests: int):
    """One replication of a :class:`vip_ray.core.deployment.Chain`: the request table (in chunks),
    then ``(device table, meta)``. A request is answered when the last slice's reply reaches the
    master by the deadline (``best_effort``: also later); the answer is the whole model's."""
    import pandas as pd

    from vip_ray.core.energy import chain_energy
    from vip_ray.core.tables import responder_names, sample_rng

    w = dep.world.workload
    spec = ChainSpec(devices=dep.world.devices, stages=tuple(dep.stages), stage_bytes=tuple(dep.stage_bytes),
                     out_bytes=dep.out_bytes, master=dep.master, workload=w, on_failure=dep.on_failure, seed=dep.seed)
    res = run_chain(spec)
    deadline = w.deadline_s
    labels = dep.labels
    r = res.n_requests
    samples = sample_rng(dep.seed).integers(0, len(labels), size=r)
    in_time = res.finish <= res.arrival + deadline
    late = ~in_time & np.isfinite(res.finish) & (w.fallback == "best_effort")  # no local model to fall back on
    answered = in_time | late
    p = dep.probs[samples]
    m = dep.top_m
    top = np.argsort(-p, axis=1, kind="stable")[:, :m]
    label = labels[samples]
    pred = np.where(answered, top[:, 0], -1)
    latency = np.where(answered, res.finish - res.arrival, np.nan)
    names = [d.name for d in dep.world.devices]
    chain_names = [names[s] for s in dep.stages]
    mask = np.zeros((r, len(chain_names)), dtype=bool)
    mask[answered] = True
    table = pd.DataFrame({
        "replication": np.full(r, replication, dtype=np.int32), "seed": np.full(r, dep.seed, dtype=np.int64),
        "request_id": np.arange(r, dtype=np.int64), "arrival_s": res.arrival,
        "finish_s": np.where(answered, res.finish, np.nan), "latency_s": latency, "emulated_latency_s": latency,
        "answered": answered, "deadline_met": in_time, "fallback": late, "n_responders": mask.sum(axis=1).astype(np.int16),
        "responders": responder_names(mask, chain_names), "sample": samples, "label": label,
        "prediction": pred, "correct_top1": answered & (pred == label),
        f"correct_top{m}": answered & (top == label[:, None]).any(axis=1),
        "bytes_down": res.bytes_down, "bytes_up": res.bytes_up, "strategy": dep.strategy, "engine": "sim",
        "failed_device": pd.Categorical.from_codes(np.where(res.failed_device >= 0, res.failed_device, -1),
                                                   categories=names),
    })
    for j, c in enumerate(BREAKDOWN_COLUMNS):
        table[c] = np.where(answered, res.stages[:, j], np.nan)
    table["decisive_device"] = pd.Categorical.from_codes(np.where(answered, dep.stages[-1], -1), categories=names)
    table["energy_j"] = chain_energy(dep.world.devices, res.work, res.link_bytes, answered)
    for a in range(0, max(r, 1), chunk_requests):
        yield table.iloc[a:a + chunk_requests].reset_index(drop=True)
    span = max(res.t_end, 1e-12)
    stage_of = {d: j for j, d in enumerate(dep.stages)}
    rows = []
    for j, dev in enumerate(dep.world.devices):
        st = {k: v[j] for k, v in res.device_stats.items()}
        s = stage_of.get(j)
        rows.append({"replication": replication, "device": dev.name, "group": dev.group, "role": dev.role,
                     "variant": f"{dep.member}[{dep.slices[s]}]" if s is not None else None,
                     "service_ms": 1e3 * dev.slots[0].service_s if s is not None else np.nan,
                     "macs_per_request": dep.slice_macs[s] if s is not None else 0, **st,
                     "available_fraction": st["available_s"] / span, "utilization": st["busy_s"] / span})
    meta = {"placement": {names[d]: [f"{dep.member}[{sl}]", 0.0] for d, sl in zip(dep.stages, dep.slices)},
            "events": res.events, "engine_wall_s": res.wall_s, "engine": "chain (SimPy)", **dep.meta}
    return pd.DataFrame(rows), meta
