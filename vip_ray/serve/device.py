"""Emulated edge devices and the device-group deployment that hosts them.

An :class:`EmulatedDevice` is the simulator's device model run live: a FIFO queue in front of
one server that computes its placed variant, an availability process (on/off cycle stealing,
a busy trace, a crash, MTBF failures) drawn from the simulator's own streams, and an uplink
(:mod:`vip_ray.core.netmodel`). It keeps an *emulated timeline*: every instant (job start and end,
preemption, reply arrival) is computed on virtual time — seconds since the replication's epoch
— and the asyncio event loop is woken at those instants (``loop.call_at``). Late wake-ups of the
harness therefore never accumulate into the emulated device's timing; they only delay the
message that carries a reply, and that shows as harness overhead at the master.

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
import time
import uuid
import warnings
from collections import deque
from typing import Any, Callable, Sequence

import numpy as np

from vip_ray.core.world import DeviceSpec
from vip_ray.serve.config import EmulationConfig
from vip_ray.core.streams import DeviceDraws, availability_durations
from vip_ray.core.tables import DEVICE_STAT_KEYS, INT_STATS, Outcome

log = logging.getLogger("ray.serve")
INF = math.inf
HTTP_STREAM_SEED = 1 << 31  # HTTP requests draw jitter / loss from their own streams (never shifting a replay's)
LIVE_KEEP = 10_000          # HTTP requests a group remembers
PAYLOAD_SHARE = 0.6         # of the master's grace, spent waiting for real outputs (the rest: transport)


def in_replica() -> bool:
    """In a real Serve replica (not in the driver, as Serve's local testing mode runs deployments)."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


class Clock:
    """Virtual time of one replication: seconds since its epoch (a wall-clock instant), mapped
    onto the event loop's monotonic clock once (the same mapping for every device of a replica)."""

    def __init__(self, epoch: float, loop: asyncio.AbstractEventLoop):
        self.epoch = epoch
        self.loop = loop
        self.zero = loop.time() - (time.time() - epoch)  # loop time of virtual 0
        self.errors: list[str] = []  # failures inside timer callbacks (reported by check_health)

    def now(self) -> float:
        return self.loop.time() - self.zero

    def at(self, v: float, fn: Callable, *args) -> asyncio.TimerHandle:
        return self.loop.call_at(self.zero + v, self._guarded, fn, args)

    def _guarded(self, fn: Callable, args: tuple) -> None:
        try:
            fn(*args)
        except Exception as e:  # a broken emulation must not go unnoticed: the replica turns unhealthy
            log.exception("emulated device callback %s failed", getattr(fn, "__qualname__", fn))
            self.errors.append(f"{getattr(fn, '__qualname__', fn)}: {e!r}")

    def loop_time(self, v: float) -> float:
        return self.zero + v


class Job:
    """One (request, device) job on the emulated timeline."""

    __slots__ = ("pending", "arrive", "mult", "up_lost", "variant", "seg", "end", "rem", "timer", "paused",
                 "outcome", "reply_at", "arrived")

    def __init__(self, pending: "Pending", arrive: float, mult: float, up_lost: bool):
        self.pending = pending
        self.arrive = arrive
        self.mult = mult
        self.up_lost = up_lost
        self.variant = -1
        self.seg = self.end = self.rem = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False
        self.outcome: Outcome | None = None
        self.reply_at = INF
        self.arrived = False


class Pending:
    """A request as one device group sees it: its jobs, real outputs and what came of them."""

    __slots__ = ("key", "x", "left", "timed", "replies", "infer", "bytes_up", "changed", "jobs")

    def __init__(self, key: tuple, x: np.ndarray, n_jobs: int, loop: asyncio.AbstractEventLoop):
        self.key = key
        self.x = x
        self.left = n_jobs
        self.timed = loop.create_future()          # every job's outcome and reply time known
        self.replies: list[tuple[int, float, int]] = []  # (device index, reply_at, variant)
        self.infer: dict[int, asyncio.Future] = {}  # variant -> real logits
        self.bytes_up = 0
        self.changed = asyncio.Event()              # a job resolved (for fallback waits)
        self.jobs: list[tuple[int, int, float, int]] = []  # (device, outcome, reply_at, variant) as resolved
        if n_jobs == 0:
            self.timed.set_result(None)

    def resolve(self, device: int, job: Job | None, outcome: Outcome, reply_at: float = INF) -> None:
        if job is not None:
            job.outcome, job.reply_at = outcome, reply_at
        if outcome == Outcome.REPLIED:
            self.replies.append((device, reply_at, job.variant))
        self.jobs.append((device, int(outcome), reply_at, job.variant if job is not None else -1))
        self.left -= 1
        self.changed.set()
        if self.left == 0 and not self.timed.done():
            self.timed.set_result(None)
            self.x = None  # the input is not needed any more (outputs are in self.infer)


class EmulatedDevice:
    """One device's queue, server, availability process and uplink on the emulated timeline
    (the semantics of the simulator's device, ``vip_ray.sim``)."""

    def __init__(self, cfg: DeviceSpec, index: int, *, infer: Callable[[Pending, int, float], None],
                 kill: Callable[[], None] | None = None, on_state: Callable[[bool], None] | None = None):
        self.cfg = cfg
        self.index = index
        self.av = cfg.availability
        self.infer = infer
        self.kill = kill
        self.on_state = on_state
        self.clock: Clock | None = None
        self.timers: set = set()
        self._reset_state(0.0)

    # -- replication start / rejoin -------------------------------------------------------------
    def _reset_state(self, v0: float) -> None:
        self.queue: deque[Job] = deque()
        self.current: Job | None = None
        self.up = True          # not failed (crash / mtbf)
        self.avail = True       # owner not using it (onoff / trace)
        self.ready = v0         # earliest instant the server may start the next job
        self.last_end = v0
        self.stats = {k: (0 if k in INT_STATS else 0.0) for k in DEVICE_STAT_KEYS}
        self.log: list[tuple[float, bool]] = []   # (virtual time, available) from v0 on
        self.uplink = self.cfg.link.direction() if self.cfg.link is not None else None
        self.draws: dict[str, tuple[DeviceDraws, list]] = {}
        self.incoming: list = []   # (arrive, offer order, job) not yet arrived
        self.offered = itertools.count()

    def reset(self, clock: Clock, seed: int, alive_since: float | None = None) -> None:
        """Start (or rejoin, after a replica restart) the replication whose epoch ``clock`` holds.
        Availability changes up to now (or t = 0) set the initial state without side effects.
        Inputs that reached the device before ``alive_since`` (wall clock: when its replica came
        up) were lost with the device."""
        for h in self.timers:
            h.cancel()
        self.timers = set()
        self.clock = clock
        self.seed = seed
        v0 = max(clock.now(), 0.0)
        self._reset_state(v0)
        self.born = v0 if alive_since is None else min(v0, max(0.0, alive_since - clock.epoch))
        self._changes = self._availability_changes(seed)
        nxt = next(self._changes, None)
        while nxt is not None and nxt[0] <= v0:
            self._set(nxt[1])
            nxt = next(self._changes, None)
        self.log.append((v0, self.available))
        self._schedule(nxt)
        if self.on_state:
            self.on_state(self.available)

    def _availability_changes(self, seed: int):
        """``(t, goes_up)`` instants of the simulator's availability windows (same draws)."""
        t, up = 0.0, True
        for d in availability_durations(self.av, self.index, seed):
            if d == INF:
                return
            t = t + d  # sequential float adds, as the simulator's windows
            up = not up
            yield t, up

    def _schedule(self, change) -> None:
        self.next_change, self.next_timer = change, None
        if change is not None:
            self.next_timer = self.clock.at(change[0], self._change, change[0], change[1])
            self.timers.add(self.next_timer)

    def _catch_up(self, t: float, inclusive: bool) -> None:
        """Apply the availability changes due before ``t`` on the emulated timeline (at ``t`` too if
        ``inclusive``) whose timers have not fired: timers due at the same loop instant fire in any
        order, the emulated timeline has one (changes first at a tie, as in the simulator)."""
        while self.next_change is not None and (self.next_change[0] < t or (inclusive and self.next_change[0] == t)):
            self.next_timer.cancel()
            self._change(*self.next_change)

    def _set(self, goes_up: bool) -> None:
        if self.av.failure:
            self.up = goes_up
        else:
            self.avail = goes_up

    @property
    def available(self) -> bool:
        return self.up and self.avail

    # -- availability changes -------------------------------------------------------------------
    def _change(self, t: float, goes_up: bool) -> None:
        self._schedule(next(self._changes, None))  # first: catch-ups nested below must see the next change
        cur = self.current
        self._set(goes_up)
        if not goes_up and cur is not None and not cur.paused and cur.end <= t:
            self._finish()          # its work ended at this very instant: completed (as in the sim);
            cur = self.current      # the next job waits, the device being down from t
        self.log.append((t, self.available))
        if self.on_state:
            self.on_state(self.available)
        if not goes_up and self.av.failure and self.kill is not None:
            log.warning("device %s fails at t=%.3f s: killing its replica", self.cfg.name, t)
            self.kill()
            return
        if not goes_up:
            if cur is not None and not cur.paused:
                self._stop(cur, t)
                if self.av.failure or self.av.drop:
                    self.current = None
                    self.ready = t
                    self.last_end = max(self.last_end, t)
                if self.av.failure:
                    pass                     # lost with the queue below
                elif self.av.drop:
                    self.stats["preempted"] += 1
                    self.stats["dropped"] += 1
                    self._resolve(cur, Outcome.PREEMPT_DROPPED)
                else:
                    self.stats["preempted"] += 1
                    cur.paused = True
            if self.av.failure:              # a failure loses the job in service and the queue
                lost = ([cur] if cur is not None else []) + list(self.queue)
                self.queue.clear()
                self.stats["crashed"] += len(lost)
                self.ready = t
                self.last_end = max(self.last_end, t)
                for job in lost:
                    self._resolve(job, Outcome.CRASHED)
        else:
            self.ready = max(self.ready, t)
            if cur is not None and cur.paused:   # preempt-resume: the rest of its work from now on
                cur.paused = False
                cur.seg, cur.end = t, t + cur.rem
                cur.timer = self.clock.at(cur.end, self._finish)
            else:
                self._kick()

    def _stop(self, job: Job, t: float) -> None:
        """Interrupt the job in service at ``t`` (its partial work counts as busy time)."""
        if job.timer is not None:
            job.timer.cancel()
        self.stats["busy_s"] += t - job.seg
        job.rem = job.rem - (t - job.seg)

    # -- jobs -----------------------------------------------------------------------------------
    def draws_for(self, stream: str, rid: int) -> tuple[bool, float, bool]:
        """(input lost, compute multiplier, reply lost) of request ``rid`` — the simulator's draws
        for the replayed workload; HTTP requests use streams of their own."""
        entry = self.draws.get(stream)
        if entry is None:
            seed = self.seed if stream == "load" else self.seed + HTTP_STREAM_SEED
            entry = self.draws[stream] = (DeviceDraws(self.cfg, self.index, seed), [[], [], []])
        dd, cols = entry
        while len(cols[1]) <= rid:
            down, mult, up = dd.take(1024)
            n = len(mult)
            cols[0].extend(down.tolist() if down is not None else [False] * n)
            cols[1].extend(mult.tolist())
            cols[2].extend(up.tolist() if up is not None else [False] * n)
        return cols[0][rid], cols[1][rid], cols[2][rid]

    def offer(self, job: Job) -> None:
        """The input reaches the device at ``job.arrive`` (emulated)."""
        if job.arrive < self.born:  # it arrived while this replica was not alive: lost with the device
            self.stats["jobs"] += 1
            self.stats["crashed"] += 1
            self._resolve(job, Outcome.CRASHED)
            return
        slot = self.cfg.slot_at(job.arrive)
        if slot is not None:  # start the real forward pass now; the emulated compute needs it later
            self.infer(job.pending, slot[0], job.arrive + slot[1] * job.mult)
        heapq.heappush(self.incoming, (job.arrive, next(self.offered), job))
        h = self.clock.at(job.arrive, self._arrive, job)
        self.timers.add(h)

    def _arrive(self, job: Job) -> None:
        """Inputs due by ``job.arrive`` reach the device in emulated order (timers due at one loop
        instant fire in any order; equal arrival times keep request order, as in the simulator)."""
        while self.incoming and self.incoming[0][0] <= job.arrive:
            a, _, j = heapq.heappop(self.incoming)
            if j.arrived:
                continue
            j.arrived = True
            self._catch_up(a, inclusive=True)  # arriving as the device goes down: it finds it down
            self.stats["jobs"] += 1
            if self.av.failure and not self.up:
                self.stats["crashed"] += 1
                self.last_end = max(self.last_end, a)
                self._resolve(j, Outcome.CRASHED)
                continue
            self.queue.append(j)
            self._kick()

    def _kick(self) -> None:
        while self.current is None and self.queue and self.up and self.avail:
            job = self.queue[0]
            self._catch_up(job.arrive if job.arrive > self.ready else self.ready, inclusive=True)
            if self.current is not None or not (self.queue and self.up and self.avail):
                break                       # the device went down (or a nested kick started the job)
            job = self.queue.popleft()
            s = job.arrive if job.arrive > self.ready else self.ready
            slot = self.cfg.slot_at(s)
            if slot is None:               # no variant placed: nothing to run
                self.stats["unplaced"] += 1
                self.ready = s
                self.last_end = max(self.last_end, s)
                self._resolve(job, Outcome.UNPLACED)
                continue
            job.variant, svc = slot
            job.rem = svc * job.mult
            job.seg, job.end = s, s + job.rem
            self.infer(job.pending, job.variant, job.end)
            job.timer = self.clock.at(job.end, self._finish)
            self.current = job

    def _finish(self) -> None:
        job = self.current
        if job is None:
            return
        self._catch_up(job.end, inclusive=False)  # work ending as the owner arrives has completed
        if self.current is not job or job.paused:
            return                                # preempted, dropped or crashed before its end
        job.timer.cancel()
        self.current = None
        self.stats["busy_s"] += job.end - job.seg
        self.stats["served"] += 1
        self.ready = job.end
        self.last_end = max(self.last_end, job.end)
        if self.uplink is None:
            self._resolve(job, Outcome.REPLIED, job.end)
        else:
            _, reply_at = self.uplink.send(job.end, self.cfg.reply_bytes)
            job.pending.bytes_up += self.cfg.reply_bytes
            if job.up_lost:
                self.stats["lost_up"] += 1
                self._resolve(job, Outcome.LOST_UP)
            else:
                self._resolve(job, Outcome.REPLIED, reply_at)
        self._kick()

    def _resolve(self, job: Job, outcome: Outcome, reply_at: float = INF) -> None:
        job.pending.resolve(self.index, job, outcome, reply_at)

    def snapshot(self) -> dict[str, Any]:
        return {"stats": dict(self.stats), "log": list(self.log), "last_end": self.last_end, "born": self.born,
                "up": self.up, "available": self.available, "queue": len(self.queue) + (self.current is not None)}


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

    def submit(self, fut: asyncio.Future, variant: int, x: np.ndarray, need_by: float) -> None:
        with self.cv:
            heapq.heappush(self.heap, (need_by, next(self.seq), variant, x, fut))
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
            while self.heap and len(batch) < self.max_batch:
                item = heapq.heappop(self.heap)
                (batch if item[2] == first[2] and item[3].shape == first[3].shape else rest).append(item)
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
                    logits = self.models[batch[0][2]](xs.float().div_(255.0)).float().numpy()
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
                fut.get_loop().call_soon_threadsafe(_set, fut, row)


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
                                       on_state=self._gauge(d.name)) for i, d in zip(self.gcfg.devices, devs)]
        self.token: str | None = None
        self.pending: dict[tuple, Pending] = {}
        self.live_keys: deque = deque()  # requests of other streams than the replay, oldest first
        if in_replica():
            gc.freeze()  # torch's many long-lived objects out of the collector's way (full collections stall timers)
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

    def _sync(self, token: str, seed: int, epoch: float) -> None:
        if token != self.token:
            loop = asyncio.get_running_loop()
            clock = Clock(epoch, loop)
            for p in self.pending.values():   # a new replication: the old one's waiters give up
                if not p.timed.done():
                    p.timed.set_result(None)
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
                  arrive: Sequence[float], deadline: float, grace: float) -> list:
        """Offer request ``rid`` to every device of the group (its input reaching device ``i`` at
        emulated ``arrive[i]``); return the replies that reach the master by ``deadline``, as
        soon as every job's fate is known (or at the deadline): ``(device, reply_at, variant, logits)``."""
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
        wait = deadline - clock.now()
        if wait > 0 and not p.timed.done():
            await asyncio.wait([p.timed], timeout=wait)
        # real outputs may take until the deadline (and a share of the grace after it)
        wait = max(0.0, deadline - clock.now()) + PAYLOAD_SHARE * grace
        return await self._payload([r for r in p.replies if r[1] <= deadline], p, wait)

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
        """Fallback: wait (up to ``wait_s``) for the first reply of one of ``devices`` to request
        ``rid``, however late; ``[]`` when none of them will reply."""
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

        name = ray.get_runtime_context().get_actor_name() if in_replica() else None
        return {"incarnation": self.incarnation, "group": self.gcfg.name, "actor": name,
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
