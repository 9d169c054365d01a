"""Emulated edge devices and the device-group deployment that hosts them.

An :class:`~vip_ray.serve.emulated.EmulatedDevice` (its own module, tested without Ray) is the
simulator's device model run live on an emulated timeline.

The compute of a job is the device profile's latency for its variant (``plan.service_s`` times
the simulator's jitter / straggler draw for that request); the reply carries the *real*
output of the variant on the request's real input, computed by :class:`Inference` (torch, a
worker thread, batched per variant, earliest emulated need first). A reply waits for its real
output when the host's torch is slower than the emulated device.

A :class:`DeviceGroup` replica hosts several emulated devices (one torch import, ≈ 0.7 GB,
shared by all of them) and receives one call per request for all its devices. A failure
(crash / MTBF) of a device that has its replica to itself kills the replica (``ray.kill``):
Serve's health checks notice and start a new one, which finds from the availability schedule
whether its device is still down.
"""
from __future__ import annotations

import asyncio
import gc
import heapq
import io
import itertools
import logging
import math
import threading
import sys
import time
import uuid
import warnings
from collections import deque
from typing import Any, Callable, Sequence

import numpy as np

from vip_ray.serve.emulated import HTTP_STREAM_SEED, Clock, EmulatedDevice, Job, Pending  # noqa: F401  (re-exported)
from vip_ray.serve.config import EmulationConfig
from vip_ray.core.tables import Outcome

log = logging.getLogger("ray.serve")
INF = math.inf
LIVE_KEEP = 10_000          # HTTP requests a group remembers
GIL_SWITCH_S = 0.0005      # the replicas' GIL switch interval (s)
PAYLOAD_SHARE = 0.6         # of the master's grace, spent waiting for real outputs (the rest: transport)


def in_replica() -> bool:
    """In a real Serve replica (not in the driver, as Serve's local testing mode runs deployments)."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


class Inference:
    """Real forward passes of a replica's variants in worker threads: the earliest emulated need
    first, batched with every queued input of the same variant (and image shape)."""

    def __init__(self, models: dict[int, Any], threads: int = 1, max_batch: int = 64,
                 post: dict[int, Callable[[np.ndarray], np.ndarray]] | None = None):
        self.models = models
        self.post = post or {}   # variant -> its raw outputs as the prediction bank's rows
        self.max_batch = max_batch
        self.heap: list = []
        self.cv = threading.Condition()
        self.seq = itertools.count()
        self.error: BaseException | None = None
        self.workers = [threading.Thread(target=self._work, name=f"vip-infer-{i}", daemon=True)
                        for i in range(threads)]
        for w in self.workers:
            w.start()

    def submit(self, fut: asyncio.Future, variant: int, x: np.ndarray, need_by: float, timed: bool = False) -> None:
        """``timed``: run alone (batch 1) and set ``fut`` to ``(row, elapsed s)`` — a device whose
        timing is measured takes the pass's own elapsed time as its compute."""
        with self.cv:
            heapq.heappush(self.heap, (need_by, next(self.seq), variant, x, fut, timed))
            self.cv.notify()

    def alive(self) -> bool:
        return self.error is None and all(w.is_alive() for w in self.workers)

    def _take(self) -> list:
        with self.cv:
            while not self.heap:
                self.cv.wait()
            first = heapq.heappop(self.heap)
            batch = [first]
            rest = []
            while self.heap and len(batch) < self.max_batch and not first[5]:
                item = heapq.heappop(self.heap)
                same = item[2] == first[2] and item[3].shape == first[3].shape and not item[5]
                (batch if same else rest).append(item)
            for item in rest:
                heapq.heappush(self.heap, item)
            return batch

    def _work(self) -> None:
        import torch

        torch.set_num_threads(1)  # per thread: OpenMP settings do not carry over from the constructor's thread
        while True:
            batch = self._take()
            try:
                xs = torch.from_numpy(np.stack([item[3] for item in batch]))
                with torch.inference_mode():
                    # as the prediction bank was computed: uint8 -> float in [0, 1] -> the variant
                    t0 = time.perf_counter()
                    logits = self.models[batch[0][2]](xs.float().div_(255.0)).float().numpy()
                    elapsed = time.perf_counter() - t0
                if batch[0][2] in self.post:
                    logits = self.post[batch[0][2]](logits)
            except BaseException as e:  # reported by check_health; the futures fail loudly
                self.error = e
                for item in batch:
                    fut = item[4]
                    fut.get_loop().call_soon_threadsafe(_fail, fut, e)
                continue
            for item, row in zip(batch, logits):
                fut = item[4]
                fut.get_loop().call_soon_threadsafe(_set, fut, (row, elapsed) if item[5] else row)


def _set(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future, e: BaseException) -> None:
    if not fut.done():
        fut.set_exception(e)


def bank_rows(cfg: EmulationConfig, variants: Sequence[int]) -> dict[int, Callable[[np.ndarray], np.ndarray]]:
    """For class-group models (strategy cp): their |g| + 1 outputs as the C-class rows of the
    prediction bank (``vip_ray.class_groups.cp_log_probs``), so the master aggregates alike."""
    from vip_ray.class_groups import cp_log_probs

    out = {}
    for v in variants:
        classes = cfg.variants[v].classes
        if classes:
            out[v] = lambda z, g=classes: cp_log_probs(z, g, cfg.num_classes)
    return out


def load_models(cfg: EmulationConfig, variants: Sequence[int], weights: dict[int, bytes]) -> dict[int, Any]:
    """The trained networks (eval mode) of ``variants`` from their state-dict bytes, warmed up
    (torch's first passes allocate and pick kernels: they would make the first replies late).

    With ``options.inference == "jit"`` everything after the input adapter runs as a frozen
    TorchScript graph (batch norm folded into the convolutions: the same function, ≈ 2× faster
    on small CPU models, logits equal to ≈ 1e-5); a model the tracer cannot take runs eagerly."""
    import torch

    from vip_ray.models import build_model

    out = {}
    x = torch.zeros((1,) + tuple(cfg.input_shape))
    for v in variants:
        vc = cfg.variants[v]
        model = build_model(vc.model, **vc.build, pretrained="never")
        model.load_state_dict(torch.load(io.BytesIO(weights[v]), map_location="cpu", weights_only=True))
        model = model.eval()
        if cfg.options.inference == "jit":
            model = _frozen(model, x)
        with torch.inference_mode():
            for _ in range(3):
                model(x)
        out[v] = model
    return out


def _frozen(model: Any, x: Any) -> Any:
    import torch

    try:
        # torch 2.15 marks TorchScript deprecated in favour of torch.compile, which needs a C++
        # toolchain at run time: for a CPU emulation host the frozen trace is the practical choice
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            body = torch.jit.freeze(torch.jit.trace(torch.nn.Sequential(model.backbone, model.pool, model.head).eval(),
                                                    model.adapter(x)))
    except Exception as e:  # not traceable: the eager model is the same function, only slower
        log.warning("running %s eagerly (tracing failed: %s)", type(model).__name__, e)
        return model
    adapter = model.adapter

    def run(inputs):
        return body(adapter(inputs))
    return run


class DeviceGroup:
    """A Serve deployment (one replica) hosting some emulated devices.

    Every call carries the replication's ``(token, seed, epoch)``, so a replica that Serve has
    restarted after a crash rejoins the running replication on its first call."""

    def __init__(self, config: EmulationConfig, group: int, weights: dict[int, bytes]):
        import torch

        torch.set_num_threads(1)  # the event loop and the other replicas need the other core(s)
        self.cfg = config
        self.gcfg = config.groups[group]
        self.incarnation = uuid.uuid4().hex[:8]
        devs = [config.devices[i] for i in self.gcfg.devices]
        variants = sorted({v for d in devs for v in d.placed_variants()})
        self.inference = Inference(load_models(config, variants, weights), threads=config.options.inference_threads,
                                   post=bank_rows(config, variants))
        kill = self._kill if len(devs) == 1 and in_replica() and config.options.failures == "kill" else None
        from vip_ray.serve import metrics

        self.metrics = metrics.device_metrics()
        self.devices = [EmulatedDevice(d, i, infer=self._infer, kill=kill if d.availability.failure else None,
                                       on_state=self._gauge(d.name), measure=self._measure)
                        for i, d in zip(self.gcfg.devices, devs)]
        self.token: str | None = None
        self.pending: dict[tuple, Pending] = {}
        self.live_keys: deque = deque()  # requests of other streams than the replay, oldest first
        if in_replica():
            gc.freeze()  # torch's many long-lived objects out of the collector's way (full collections stall timers)
            # a timer due while the inference threads run Python waits for the GIL up to the switch
            # interval (5 ms by default): a finer one keeps the emulated instants on time
            sys.setswitchinterval(GIL_SWITCH_S)
        self.started = time.time()       # up from here (models loaded)

    # -- plumbing ---------------------------------------------------------------------------------
    def _kill(self) -> None:
        """A device failure takes its replica down, as a crashed board takes its server with it."""
        import ray

        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def _gauge(self, name: str):
        def set_state(available: bool) -> None:
            self.metrics.available.set(1.0 if available else 0.0, tags={"app": self.cfg.app, "device": name})
        return set_state

    def _infer(self, p: Pending, variant: int, need_by: float) -> None:
        if variant not in p.infer and p.x is not None:
            fut = asyncio.get_running_loop().create_future()
            p.infer[variant] = fut
            self.inference.submit(fut, variant, p.x, need_by)

    def _measure(self, p: Pending, variant: int, done: Callable[[float], None]) -> None:
        """A measured device starts a job: its real forward pass, alone and now; ``done(elapsed)``
        once it has run (the output also serves the reply's payload)."""
        loop = asyncio.get_running_loop()
        timed = loop.create_future()
        row = None
        if variant not in p.infer:
            row = p.infer[variant] = loop.create_future()
        self.inference.submit(timed, variant, p.x, -INF, timed=True)

        def finished(f: asyncio.Future) -> None:
            if f.cancelled() or f.exception() is not None:
                if row is not None and not row.done():
                    row.set_exception(f.exception() or asyncio.CancelledError())
                return                  # the replica turns unhealthy (check_health): its job never ends
            out, elapsed = f.result()
            if row is not None and not row.done():
                row.set_result(out)
            done(elapsed)
        timed.add_done_callback(finished)

    def _sync(self, token: str, seed: int, epoch: float) -> None:
        if token != self.token:
            loop = asyncio.get_running_loop()
            clock = Clock(epoch, loop, self.cfg.dilation)
            for p in self.pending.values():   # a new replication: the old one's waiters give up
                for fut in (p.timed, p.known):
                    if not fut.done():
                        fut.set_result(None)
            self.pending = {}
            self.live_keys.clear()
            for d in self.devices:
                d.reset(clock, seed, alive_since=self.started)
            self.token, self.clock = token, clock

    # -- the calls ----------------------------------------------------------------------------------
    async def reset(self, token: str, seed: int, epoch: float) -> dict:
        self._sync(token, seed, epoch)
        return self.info()

    async def run(self, token: str, seed: int, epoch: float, rid: int, stream: str, x: np.ndarray,
                  arrive: Sequence[float], deadline: float, grace: float, lead: float | None = None) -> tuple:
        """Offer request ``rid`` to every device of the group (its input reaching device ``i`` at
        emulated ``arrive[i]``); return the replies that reach the master by ``deadline``, as
        soon as every job's fate is known (or ``lead`` wall seconds before the deadline; default
        ``answer_lead_ms``): ``([(device, reply_at, variant, logits), ...], since)``. ``since`` (wall
        clock) is where the answer's path starts: when the group sent the replies, less how late its
        timer woke it if it stopped at the lead (:mod:`vip_ray.serve.lead`)."""
        self._sync(token, seed, epoch)
        key = (stream, rid)
        p = Pending(key, x, len(self.devices), asyncio.get_running_loop())
        self.pending[key] = p
        if stream != "load":  # HTTP requests keep coming: remember the last ones only (for fallbacks)
            self.live_keys.append(key)
            while len(self.live_keys) > LIVE_KEEP:
                self.pending.pop(self.live_keys.popleft(), None)
        for dev, a in zip(self.devices, arrive):
            down_lost, mult, up_lost = dev.draws_for(stream, rid)
            job = Job(p, a, mult, up_lost)
            if down_lost and dev.cfg.link is not None:
                dev.stats["lost_down"] += 1
                p.resolve(dev.index, job, Outcome.LOST_DOWN)
            else:
                dev.offer(job)
        clock = self.clock
        # stop waiting `lead` (wall) before the deadline: the replies and the master's answer must
        # still travel (the simulator's master answers at the deadline itself)
        lead = self.cfg.options.answer_lead_ms / 1e3 if lead is None else lead
        entered = time.time()
        stop = entered + clock.wall_s(deadline - clock.now()) - lead
        wait = stop - entered
        # every fate known (foreseen or resolved: vip_ray.serve.emulated): the replies go now, ahead
        # of their emulated arrival, which the master waits for
        if wait > 0 and not p.known.done():
            await asyncio.wait([p.known], timeout=wait)
        woke = time.time()
        timed_out = not p.known.done()
        # real outputs may take until the deadline (and a share of the grace after it: wall time)
        wait = clock.wall_s(max(0.0, deadline - clock.now())) + PAYLOAD_SHARE * grace
        replies = {**p.ahead, **{r[0]: r for r in p.replies}}
        out = await self._payload([r for r in replies.values() if r[1] <= deadline], p, wait)
        # the answer's path: this message's transport, plus how late the timer woke this group (not the
        # wait for real outputs: a forward pass late for its deadline is the time dilation's to cure)
        sent = time.time()
        return out, (sent - max(0.0, woke - max(stop, entered)) if timed_out else sent)

    async def _payload(self, replies: list, p: Pending, grace: float) -> list:
        """Attach the real outputs (waiting up to ``grace`` for forward passes still running)."""
        futs = {p.infer[v] for _, _, v in replies if v in p.infer and not p.infer[v].done()}
        if futs:
            await asyncio.wait(futs, timeout=grace)
        out = []
        for dev, reply_at, v in replies:
            fut = p.infer.get(v)
            if fut is not None and fut.done() and fut.exception() is None:
                out.append((dev, reply_at, v, fut.result()))
        return out

    async def late(self, token: str, rid: int, stream: str, devices: Sequence[int], wait_s: float,
                   grace: float) -> list:
        """Fallback: wait (up to ``wait_s`` wall seconds) for the first reply of one of ``devices``
        to request ``rid``, however late; ``[]`` when none of them will reply."""
        p = self.pending.get((stream, rid)) if token == self.token else None
        if p is None:
            return []
        want = set(devices)
        end = time.monotonic() + wait_s
        while True:
            got = sorted((r for r in p.replies if r[0] in want), key=lambda r: r[1])
            if got:
                return await self._payload(got[:1], p, PAYLOAD_SHARE * grace)
            if p.timed.done() or time.monotonic() >= end:
                return []
            p.changed.clear()
            try:
                await asyncio.wait_for(p.changed.wait(), timeout=end - time.monotonic())
            except asyncio.TimeoutError:
                pass

    async def drain(self, token: str, wait_s: float) -> dict:
        """End of a replication: wait (up to ``wait_s``) for the jobs still running, then return
        the uplink bytes of every replayed request and the devices' counters."""
        if token == self.token:
            open_ = [p.timed for p in self.pending.values() if not p.timed.done()]
            if open_:
                await asyncio.wait(open_, timeout=wait_s)
        pend = self.pending if token == self.token else {}
        return {"bytes_up": {k[1]: p.bytes_up for k, p in pend.items() if k[0] == "load"},
                "jobs": {k[1]: p.jobs for k, p in pend.items() if k[0] == "load"},
                "unresolved": sum(not p.timed.done() for p in pend.values()), **self._stats(token)}

    async def stats(self, token: str | None = None) -> dict:
        """The devices' counters and availability logs (polled by the master: they die with the replica)."""
        return self._stats(token)

    def _stats(self, token: str | None = None) -> dict:
        same = token is None or token == self.token
        return {"incarnation": self.incarnation, "group": self.gcfg.name, "token": self.token,
                "now": self.clock.now() if self.token else None,
                "devices": {d.index: d.snapshot() for d in self.devices} if same else {}}

    def info(self) -> dict:
        import ray

        from vip_ray.serve.metrics import process_memory_mb

        ctx = ray.get_runtime_context() if in_replica() else None
        name = ctx.get_actor_name() if ctx else None
        return {"incarnation": self.incarnation, "group": self.gcfg.name, "actor": name,
                "node_id": ctx.get_node_id() if ctx else None,
                "devices": [d.cfg.name for d in self.devices], "started": self.started, **process_memory_mb()}

    async def state(self) -> dict:
        return {**self.info(), "token": self.token,
                "device_state": {d.cfg.name: {"up": d.up, "available": d.available,
                                               "queue": len(d.queue) + (d.current is not None)}
                                 for d in self.devices}}

    async def check_health(self) -> None:
        """Serve's health check: the replica is broken (and is replaced) only when its machinery
        is; a device that is down as its scenario says is healthy (its state is in the metrics)."""
        if not self.inference.alive():
            raise RuntimeError(f"inference worker failed: {self.inference.error!r}")
        if self.token is not None and self.clock.errors:
            raise RuntimeError(f"emulation error: {self.clock.errors[0]}")
