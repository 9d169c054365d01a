"""Model parallelism live: a :class:`vip_ray.core.deployment.Chain` as a chain of Serve device calls.

Each chain device is one deployment (:class:`ChainStage`) that holds the *real* slice of the
member (its blocks, :func:`vip_ray.models.cuts.slice_module`, the pool's trained weights). A
request enters at the master (:class:`ChainMaster`, where the scenario's inputs originate, as
in the fan-out), goes to stage 0, and each stage calls the next one's handle with the real
activation tensor it computed; the last stage's logits come back along the chain.

Timing is emulated as in the fan-out (:mod:`.emulated`): every stage's device is an
:class:`~vip_ray.serve.emulated.EmulatedDevice` (queue, availability, the simulator's jitter /
straggler draws for that request), its compute the slice's service time; a hop is the
simulator's (:mod:`vip_ray.sim.chain`): up the holder's link, then down the receiver's link
(:mod:`vip_ray.core.netmodel`, one FIFO per direction), each priced at the bytes of the real
tensor that crosses it. A stage holds its tensor until the emulated instant it reaches the next
device, the way a network emulator holds packets; the master answers at the emulated finish.

Not emulated live (refused before anything starts): ``on_failure: stall``.
"""
from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vip_ray.core.deployment import Chain
from vip_ray.core.energy import chain_energy
from vip_ray.core.tables import (
    DEVICE_STAT_KEYS,
    INT_STATS,
    Outcome,
    device_frame,
    ranked,
    request_frame,
)
from vip_ray.core.world import DeviceSpec, WorkloadSpec
from vip_ray.models.cuts import DTYPE_BYTES
from vip_ray.serve.config import DeployError, ServeOptions, _safe
from vip_ray.serve.emulated import Clock, EmulatedDevice, Job, Pending, available_time

INF = float("inf")
HOLD_MARGIN_S = 30.0    # past the deadline, the longest a stage waits for a job's fate (a device down for good)


@dataclass(frozen=True)
class ChainConfig:
    """Plain data of a live chain (travels to the replicas): the chain's devices (each stage's
    ``reply_bytes`` is the tensor it sends on), the stages, the member and its slices."""

    scenario: str
    app: str
    strategy: str
    devices: tuple[DeviceSpec, ...]
    stages: tuple[int, ...]
    blocks: tuple[tuple[int, int], ...]
    stage_bytes: tuple[int, ...]
    out_bytes: int
    workload: WorkloadSpec
    model: str
    build: dict
    wire_dtype: str
    input_shape: tuple[int, int, int]
    num_classes: int
    top_m: int
    options: ServeOptions

    @property
    def device_names(self) -> list[str]:
        return [d.name for d in self.devices]

    @property
    def master(self) -> int:
        return next(i for i, d in enumerate(self.devices) if d.role == "master")


def chain_config(dep: Chain, *, input_shape: tuple[int, int, int], options: ServeOptions) -> ChainConfig:
    if dep.on_failure != "fail":
        raise DeployError(f"strategy {dep.strategy!r}: on_failure {dep.on_failure!r} is not emulated live "
                          f"(the Serve engine runs on_failure 'fail'; the simulator runs both)")
    if not dep.blocks:
        raise DeployError(f"strategy {dep.strategy!r}: its chain names no model blocks per slice")
    sends = list(dep.stage_bytes[1:]) + [dep.out_bytes]
    devices = list(dep.world.devices)
    for d, nbytes in zip(dep.stages, sends):
        devices[d] = replace(devices[d], reply_bytes=int(nbytes))
    m = dep.pool.manifest.member(dep.member)
    return ChainConfig(scenario=dep.scenario, app=f"vip-{_safe(dep.scenario)}-{dep.strategy}", strategy=dep.strategy,
                       devices=tuple(devices), stages=tuple(dep.stages), blocks=tuple(tuple(b) for b in dep.blocks),
                       stage_bytes=tuple(dep.stage_bytes), out_bytes=int(dep.out_bytes), workload=dep.world.workload,
                       model=m.model, build=dict(m.build), wire_dtype=dep.wire_dtype,
                       input_shape=tuple(int(x) for x in input_shape), num_classes=dep.pool.num_classes,
                       top_m=dep.top_m, options=options)


def wire(x: np.ndarray, dtype: str) -> tuple[np.ndarray, int]:
    """The activation as it crosses the network and its bytes there: float32 / float16 really
    cast; bfloat16 / int8 (no numpy type) travel as float32 and are priced at their own size."""
    if dtype == "float16":
        x = x.astype(np.float16)
        return x, int(x.nbytes)
    return x, int(x.size) * DTYPE_BYTES[dtype]


def _add(tally: dict, device: int, amount: float) -> None:
    tally[device] = tally.get(device, 0) + amount


class ChainStage:
    """One device of the chain: its emulated device, its downlink, the real slice; calls the
    next stage's handle (``following``) with the tensor it computed."""

    def __init__(self, config: ChainConfig, stage: int, weights: bytes, following: Any = None):
        import torch

        from vip_ray.models import build_model
        from vip_ray.models.cuts import slice_module

        torch.set_num_threads(1)
        self.cfg, self.stage, self.following = config, stage, following
        self.index = config.stages[stage]
        spec = config.devices[self.index]
        model = build_model(config.model, **config.build, pretrained="never")
        model.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
        self.slice = slice_module(model.eval(), *config.blocks[stage])
        self.device = EmulatedDevice(spec, self.index, infer=self._infer)
        self.token: str | None = None
        self.pending: dict[int, Pending] = {}
        self.stats_down = 0

    # -- plumbing ---------------------------------------------------------------------------------
    def _forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x))[None]
            t = t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()   # the bank's input scaling
            return self.slice(t)[0].numpy()

    def _infer(self, p: Pending, variant: int, need_by: float) -> None:
        if variant not in p.infer and p.x is not None:
            p.infer[variant] = asyncio.get_running_loop().run_in_executor(None, self._forward, p.x)

    def _sync(self, token: str, seed: int, epoch: float) -> None:
        if token != self.token:
            self.clock = Clock(epoch, asyncio.get_running_loop())
            self.device.reset(self.clock, seed)
            link = self.device.cfg.link
            self.downlink = link.direction() if link is not None else None
            self.token, self.pending = token, {}

    async def _until(self, v: float) -> None:
        wait = v - self.clock.now()
        if wait > 0:
            await asyncio.sleep(wait)

    # -- the calls ----------------------------------------------------------------------------------
    async def reset(self, token: str, seed: int, epoch: float) -> None:
        self._sync(token, seed, epoch)

    async def hop(self, token: str, seed: int, epoch: float, rid: int, x: np.ndarray, ready_at: float,
                  nbytes: int, deadline_at: float, bytes_down: int, bytes_up: int,
                  spent: dict | None = None) -> dict:
        """Tensor ``x`` (``nbytes`` on the wire) of request ``rid`` is at the access point at
        emulated ``ready_at``: down this device's link, through its queue and slice, up its link,
        then on to the next stage. Returns the request's fate, with ``spent``: what it cost each
        device so far (``work``: compute seconds of its slices, ``link``: bytes on the device's
        link), as the simulator's chain counts it for the energy (``core.energy.chain_energy``)."""
        self._sync(token, seed, epoch)
        spent = spent if spent is not None else {"work": {}, "link": {}}
        dev = self.device
        down_lost, mult, up_lost = dev.draws_for("load", rid)
        arrive = ready_at

        def fate(outcome: int, **more) -> dict:
            return {"outcome": outcome, "failed": self.index, "bytes_down": bytes_down, "bytes_up": bytes_up,
                    "spent": spent, **more}

        if self.downlink is not None:
            arrive = self.downlink.send(ready_at, nbytes)[1]
            bytes_down += nbytes
            _add(spent["link"], self.index, nbytes)
            if down_lost:
                dev.stats["lost_down"] += 1
                return fate(int(Outcome.LOST_DOWN))
        p = Pending(rid, x.astype(np.float32) if x.dtype == np.float16 else x, 1, asyncio.get_running_loop())
        self.pending[rid] = p
        dev.offer(Job(p, arrive, mult, up_lost))
        hold = deadline_at + HOLD_MARGIN_S - self.clock.now()
        if not p.timed.done():
            await asyncio.wait([p.timed], timeout=max(hold, 0.0))
        bytes_up += p.bytes_up
        if p.bytes_up:
            _add(spent["link"], self.index, p.bytes_up)
        if not p.jobs:                      # the device never got to it (down past the deadline)
            return fate(int(Outcome.CRASHED))
        _, outcome, reply_at, variant, _, start, end, paused = p.jobs[-1]
        if outcome == Outcome.REPLIED or outcome == Outcome.LOST_UP:   # its slice was computed
            _add(spent["work"], self.index, end - start - paused)
        self.pending.pop(rid, None)
        if outcome != Outcome.REPLIED:
            return fate(int(outcome))
        out = await p.infer[variant]
        if self.following is None:          # the last slice: its logits reach the master at reply_at
            await self._until(reply_at)
            return fate(int(Outcome.REPLIED), finish=reply_at, logits=out, failed=-1)
        sent, size = wire(out, self.cfg.wire_dtype)
        await self._until(reply_at)
        return await self.following.hop.remote(token, seed, epoch, rid, sent, reply_at, size, deadline_at,
                                               bytes_down, bytes_up, spent)

    async def snapshot(self, token: str, wait_s: float) -> dict:
        """End of a replication: the device's counters and availability log (after the jobs still open)."""
        if token == self.token:
            open_ = [p.timed for p in self.pending.values() if not p.timed.done()]
            if open_:
                await asyncio.wait(open_, timeout=wait_s)
        return {"index": self.index, "now": self.clock.now() if self.token else None, **self.device.snapshot()}


class ChainMaster:
    """The master of a live chain: replays the workload (the load generator's protocol:
    ``replay`` / ``progress`` / ``finish``), sending each input into stage 0."""

    def __init__(self, config: ChainConfig, *stages: Any):
        self.cfg = config
        self.stages = stages
        self.issued: dict[str, int] = {}

    async def replay(self, token: str, seed: int, epoch: float, times: np.ndarray, images: np.ndarray,
                     which: np.ndarray) -> dict:
        from vip_ray.serve.loadgen import send_on_schedule

        await asyncio.gather(*(s.reset.remote(token, seed, epoch) for s in self.stages))
        self.issued[token] = 0
        master = self.cfg.master
        first = self.cfg.stages[0]
        deadline = self.cfg.workload.deadline_s
        in_bytes = self.cfg.stage_bytes[0]        # the scenario's input size (as the fan-out's multicast)
        mdev = self.cfg.devices[master]
        clock = Clock(epoch, asyncio.get_running_loop())

        async def send(i: int) -> dict:
            t = float(times[i])
            ready, up = t, 0
            spent: dict = {"work": {}, "link": {}}
            if first != master and mdev.link is not None:   # the master is networked: its uplink first
                ready, up = self.uplink.send(t, in_bytes)[1], in_bytes
                spent["link"][master] = in_bytes
            res = await self.stages[0].hop.remote(token, seed, epoch, i, images[which[i]], ready, in_bytes,
                                                  t + deadline, 0, up, spent)
            res["received_s"] = clock.now()
            res["measured_s"] = time.time() - epoch
            self.issued[token] += 1
            return res

        self.uplink = mdev.link.direction() if mdev.link is not None else None
        results, lags = await send_on_schedule(times, epoch, send)
        return {"results": results, "send_lag_s": lags}

    async def progress(self, token: str) -> int:
        return self.issued.get(token, 0)

    async def finish(self, token: str, wait_s: float) -> dict:
        snaps = await asyncio.gather(*(s.snapshot.remote(token, wait_s) for s in self.stages))
        return {"snapshots": list(snaps)}


def build_chain_app(cfg: ChainConfig, weights: bytes):
    """The Serve application: one deployment per chain device, each bound to the next, and the master."""
    from ray import serve

    from vip_ray.serve.app import HEALTH_CHECK_PERIOD_S, MAX_ONGOING

    following = None
    bound = []
    for s in reversed(range(len(cfg.stages))):
        actor = {"num_cpus": 0}
        dev = cfg.devices[cfg.stages[s]]
        if dev.ray_resources:
            actor["resources"] = dict(dev.ray_resources)
        d = serve.deployment(ChainStage, name=f"stage{s}-{_safe(dev.name)}", num_replicas=1, ray_actor_options=actor,
                             max_ongoing_requests=MAX_ONGOING, health_check_period_s=HEALTH_CHECK_PERIOD_S,
                             graceful_shutdown_timeout_s=1.0)
        following = d.bind(cfg, s, weights, following)
        bound.append(following)
    master = serve.deployment(ChainMaster, name="master", num_replicas=1, ray_actor_options={"num_cpus": 0},
                              max_ongoing_requests=MAX_ONGOING, graceful_shutdown_timeout_s=1.0)
    return master.bind(cfg, *reversed(bound))


def chain_tables(cfg: ChainConfig, dep: Chain, replay: Any, *, replication: int):
    """The request and device tables of one live replication, columns and meaning as the
    simulator's chain (:func:`vip_ray.sim.chain.replicate_chain`), plus ``serve_timing``."""
    import pandas as pd

    res = replay.results
    r = len(res)
    w = cfg.workload
    arrival = replay.arrival
    finish = np.array([x.get("finish", INF) for x in res], dtype=np.float64)
    in_time = finish <= arrival + w.deadline_s
    late = ~in_time & np.isfinite(finish) & (w.fallback == "best_effort")
    answered = in_time | late
    logits = np.stack([x["logits"] if "logits" in x else np.full(cfg.num_classes, np.nan) for x in res]) \
        if r else np.zeros((0, cfg.num_classes))
    top = ranked(logits, cfg.top_m)
    labels = dep.labels[replay.samples]
    pred = np.where(answered, top[:, 0], -1)
    chain_names = [cfg.devices[s].name for s in cfg.stages]
    mask = np.zeros((r, len(chain_names)), dtype=bool)
    mask[answered] = True
    measured = np.array([x["measured_s"] for x in res], dtype=np.float64)
    req = request_frame(
        replication=replication, seed=replay.seed, request_id=np.arange(r), arrival_s=arrival,
        finish_s=np.where(answered, np.maximum(measured, finish), np.nan),
        latency_s=np.where(answered, np.maximum(measured, finish) - arrival, np.nan), answered=answered,
        emulated_latency_s=np.where(answered, finish - arrival, np.nan),
        # judged on the measured latency (a reply the harness delivered late is late)
        deadline_met=answered & (np.maximum(measured, finish) - arrival <= w.deadline_s + 1e-12), fallback=late,
        responders=mask, device_names=chain_names, sample=replay.samples,
        label=labels, prediction=pred, correct_top1=answered & (pred == labels),
        correct_topm=answered & (top == labels[:, None]).any(axis=1), m=cfg.top_m,
        bytes_down=[x["bytes_down"] for x in res], bytes_up=[x["bytes_up"] for x in res], strategy=cfg.strategy,
        engine="serve")
    # the energy of each request's own work, as the simulator's chain counts it (core/energy.py)
    work, link = np.zeros((r, len(cfg.devices))), np.zeros((r, len(cfg.devices)))
    for i, x in enumerate(res):
        for field, out in (("work", work), ("link", link)):
            for dv, amount in x.get("spent", {}).get(field, {}).items():
                out[i, int(dv)] = amount
    req["energy_j"] = chain_energy(cfg.devices, work, link, answered)
    names = cfg.device_names
    failed = np.array([x["failed"] for x in res], dtype=np.int64)
    req["failed_device"] = pd.Categorical.from_codes(np.where(failed >= 0, failed, -1), categories=names)
    timing = pd.DataFrame({"replication": np.full(r, replication, dtype=np.int32), "request_id": np.arange(r),
                           "arrival_s": arrival, "send_lag_s": replay.send_lag_s,
                           "received_s": np.array([x["received_s"] for x in res], dtype=np.float64),
                           "emulated_finish_s": finish, "finish_s": measured, "overhead_s": measured - finish})
    snaps = {s["index"]: s for s in replay.final.get("snapshots", [])}
    last_end = max([s["last_end"] for s in snaps.values()] or [0.0])
    t_end = max(float(arrival[-1]) + w.deadline_s if r else 0.0, last_end)
    d = len(cfg.devices)
    stats = {k: np.zeros(d, dtype=np.int64 if k in INT_STATS else np.float64) for k in DEVICE_STAT_KEYS}
    stats["available_s"][:] = t_end          # devices outside the chain take no part (always there)
    for i, s in snaps.items():
        for k in DEVICE_STAT_KEYS:
            if k != "available_s":
                stats[k][i] = s["stats"][k]
        stats["available_s"][i] = available_time(s["log"], t_end)
    stage_of = {dv: j for j, dv in enumerate(cfg.stages)}
    dev = device_frame(
        replication=replication, names=names, groups=[x.group for x in cfg.devices],
        roles=[x.role for x in cfg.devices],
        variants=[f"{dep.member}[{dep.slices[stage_of[j]]}]" if j in stage_of else None for j in range(d)],
        service_ms=[1e3 * cfg.devices[j].slots[0].service_s if j in stage_of else np.nan for j in range(d)],
        macs_per_request=[dep.slice_macs[stage_of[j]] if j in stage_of else 0 for j in range(d)],
        stats=stats, span_s=t_end)
    extra = {"seed": replay.seed, "wall_s": round(replay.wall_s, 3), "overhead_s": (measured - finish)[answered],
             "send_lag_s": replay.send_lag_s}
    return req, dev, timing, extra


def chain_weights(dep: Chain) -> bytes:
    pool = dep.pool
    return (pool.path / pool.manifest.member(dep.member).weights).read_bytes()


class ChainRun:
    """The Serve engine's runner for a :class:`Chain` (see :mod:`vip_ray.serve.staged`)."""

    def __init__(self, dep: Chain, options: ServeOptions, *, images: np.ndarray, local_testing: bool = False,
                 log=print):
        self.dep, self.log = dep, log
        self.images = images                   # the pool's test images, in bank order
        self.cfg = chain_config(dep, input_shape=self.images.shape[1:], options=options)
        self.local_testing = local_testing

    def same(self, dep: Any) -> bool:
        a, b = self.dep, dep
        return (type(b) is Chain and a.strategy == b.strategy and a.world.devices == b.world.devices
                and a.world.workload == b.world.workload and a.stages == b.stages and a.blocks == b.blocks
                and a.member == b.member and a.pool.path == b.pool.path)

    def start(self) -> ChainRun:
        from vip_ray.serve.app import LiveApp

        self.live = LiveApp(build_chain_app(self.cfg, chain_weights(self.dep)), self.cfg.app, self.cfg.options,
                            local_testing=self.local_testing).start()
        self.log(f"[vip_ray] Serve app {self.cfg.app!r}: {self.dep.member} in {len(self.cfg.stages)} slices over "
                 + " -> ".join(self.cfg.devices[s].name for s in self.cfg.stages))
        return self

    def stop(self) -> None:
        self.live.stop()

    def replicate(self, dep: Chain, replication: int) -> dict:
        replay = self.live.replicate(self.cfg, dep.seed, self.images)
        req, dev, timing, extra = chain_tables(self.cfg, dep, replay, replication=replication)
        names = self.cfg.device_names
        meta = {"placement": {names[d]: [f"{dep.member}[{sl}]", 0.0] for d, sl in zip(dep.stages, dep.slices)},
                **dep.meta}
        return {"requests": req, "devices": dev, "meta": meta, "tables": {"serve_timing": timing}, "extra": extra}
