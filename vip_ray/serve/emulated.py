"""The emulated device's state machine, on an emulated timeline, without Ray or torch.

An :class:`EmulatedDevice` is the simulator's device model run live: a FIFO queue in front of
one server that computes its placed variant, an availability process (on/off cycle stealing,
a busy trace, a crash, MTBF failures) drawn from the simulator's own streams, and an uplink
(:mod:`vip_ray.core.netmodel`). It keeps an *emulated timeline*: every instant (job start and end,
preemption, reply arrival) is computed on virtual time — seconds since the replication's epoch
— and the :class:`Clock` wakes the event loop at those instants (``loop.call_at``). Late wake-ups
of the harness therefore never accumulate into the emulated device's timing; they only delay the
message that carries a reply, and that shows as harness overhead at the master.

Its configuration is the core world's :class:`~vip_ray.core.world.DeviceSpec` (the very object
the simulator runs); ``tests/test_serve.py`` runs it on an instant clock against the simulator's
reference engine, job by job, on random scenarios.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from vip_ray.core.streams import DeviceDraws, availability_durations
from vip_ray.core.tables import DEVICE_STAT_KEYS, INT_STATS, Outcome
from vip_ray.core.world import DeviceSpec

INF = math.inf
HTTP_STREAM_SEED = 1 << 31  # HTTP requests draw jitter / loss from their own streams (never shifting a replay's)
log = logging.getLogger("ray.serve")


class Clock:
    """Virtual time of one replication: seconds since its epoch (a wall-clock instant), mapped
    onto the event loop's monotonic clock once (the same mapping for every device of a replica).

    ``dilation`` X (time-warped emulation, as in Gupta et al., NSDI 2006): one emulated second
    lasts X wall seconds, so that the host's real forward passes fit inside emulated device
    times that are shorter than the host's (X > 1), or a slow world runs faster than real time
    (X < 1). Everything on the emulated timeline is in emulated seconds."""

    def __init__(self, epoch: float, loop: asyncio.AbstractEventLoop, dilation: float = 1.0):
        self.epoch = epoch
        self.loop = loop
        self.dilation = float(dilation)
        self.zero = loop.time() - (time.time() - epoch)  # loop time of virtual 0
        self.errors: list[str] = []  # failures inside timer callbacks (reported by check_health)

    def now(self) -> float:
        return (self.loop.time() - self.zero) / self.dilation

    def at(self, v: float, fn: Callable, *args) -> asyncio.TimerHandle:
        return self.loop.call_at(self.zero + v * self.dilation, self._guarded, fn, args)

    def _guarded(self, fn: Callable, args: tuple) -> None:
        try:
            fn(*args)
        except Exception as e:  # a broken emulation must not go unnoticed: the replica turns unhealthy
            log.exception("emulated device callback %s failed", getattr(fn, "__qualname__", fn))
            self.errors.append(f"{getattr(fn, '__qualname__', fn)}: {e!r}")

    def loop_time(self, v: float) -> float:
        return self.zero + v * self.dilation

    def wall_s(self, v: float) -> float:
        """Wall seconds that ``v`` emulated seconds last."""
        return v * self.dilation

    def emulated(self, wall: float) -> float:
        """The emulated instant of wall-clock instant ``wall`` (``time.time()`` scale)."""
        return (wall - self.epoch) / self.dilation


class Job:
    """One (request, device) job on the emulated timeline."""

    __slots__ = ("pending", "arrive", "mult", "up_lost", "variant", "seg", "end", "rem", "timer", "paused",
                 "outcome", "reply_at", "arrived", "sent",
                 "start", "paused_s", "paused_at")

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
        self.sent: float | None = None   # its reply's arrival, computed when its end was foreseen
        # stage times, as the simulator records them (vip_ray.core.breakdown): service start
        # (first), time paused by the owner's work (resume mode; the pause began at paused_at)
        self.start = INF
        self.paused_s = 0.0
        self.paused_at = INF


class Pending:
    """A request as one device group sees it: its jobs, real outputs and what came of them."""

    __slots__ = ("key", "x", "left", "timed", "replies", "infer", "bytes_up", "changed", "jobs", "fated", "known",
                 "ahead")

    def __init__(self, key: tuple, x: np.ndarray, n_jobs: int, loop: asyncio.AbstractEventLoop):
        self.key = key
        self.x = x
        self.left = n_jobs
        self.timed = loop.create_future()          # every job's outcome and reply time known
        self.replies: list[tuple[int, float, int]] = []  # (device index, reply_at, variant)
        self.infer: dict[int, asyncio.Future] = {}  # variant -> real logits
        self.bytes_up = 0
        self.changed = asyncio.Event()              # a job resolved (for fallback waits)
        # (device, outcome, reply_at, variant, input_at, start, end, paused_s) as resolved: the last
        # four are the job's stage times on the emulated timeline (inf: never reached that stage)
        self.jobs: list[tuple] = []
        # foresight: a job in service that no availability change can interrupt has a known end, and
        # its reply a known arrival, before the emulated clock gets there (see EmulatedDevice._foresee)
        self.fated: set[int] = set()                # devices whose job's fate is known (resolved or foreseen)
        self.known = loop.create_future()           # every job's fate known
        self.ahead: dict[int, tuple[int, float, int]] = {}  # device -> foreseen (device, reply_at, variant)
        if n_jobs == 0:
            self.timed.set_result(None)
            self.known.set_result(None)

    def foresee(self, device: int, reply_at: float, variant: int) -> None:
        """Device ``device``'s job will end without interruption: its reply arrives at ``reply_at``
        (``INF``: it is lost on the uplink)."""
        if reply_at < INF:
            self.ahead[device] = (device, reply_at, variant)
        self._fate(device)

    def _fate(self, device: int) -> None:
        if device not in self.fated:
            self.fated.add(device)
            if len(self.fated) == self.left + len(self.jobs) and not self.known.done():
                self.known.set_result(None)

    def resolve(self, device: int, job: Job | None, outcome: Outcome, reply_at: float = INF) -> None:
        if job is not None:
            job.outcome, job.reply_at = outcome, reply_at
        if outcome == Outcome.REPLIED:
            self.replies.append((device, reply_at, job.variant))
        self.jobs.append((device, int(outcome), reply_at, job.variant if job is not None else -1,
                          *stages(job, outcome)))
        self.left -= 1
        self._fate(device)
        self.changed.set()
        if self.left == 0 and not self.timed.done():
            self.timed.set_result(None)
            self.x = None  # the input is not needed any more (outputs are in self.infer)


def stages(job: Job | None, outcome: Outcome) -> tuple[float, float, float, float]:
    """(input at the device, service start, service end, time paused) of a resolved job, as the
    simulator records them: no input when it was lost on the downlink, an end only for work
    that completed (its reply may still be lost on the uplink)."""
    if job is None:
        return INF, INF, INF, 0.0
    done = outcome == Outcome.REPLIED or outcome == Outcome.LOST_UP
    return (INF if outcome == Outcome.LOST_DOWN else job.arrive), job.start, (job.end if done else INF), job.paused_s


class EmulatedDevice:
    """One device's queue, server, availability process and uplink on the emulated timeline
    (the semantics of the simulator's device, ``vip_ray.sim``)."""

    def __init__(self, cfg: DeviceSpec, index: int, *, infer: Callable[[Pending, int, float], None],
                 kill: Callable[[], None] | None = None, on_state: Callable[[bool], None] | None = None,
                 measure: Callable[[Pending, int, Callable[[float], None]], None] | None = None):
        self.cfg = cfg
        self.index = index
        self.av = cfg.availability
        self.infer = infer
        # timing 'measured': the job's compute is the real forward pass's elapsed time on this node
        self.measure = measure if cfg.timing == "measured" else None
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
        self.born = v0 if alive_since is None else min(v0, max(0.0, clock.emulated(alive_since)))
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
                    cur.paused_at = t
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
                cur.paused_s += t - cur.paused_at
                cur.seg, cur.end = t, t + cur.rem
                cur.timer = self.clock.at(cur.end, self._finish)
                self._foresee(cur)
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
        if slot is not None and self.measure is None:  # start the real pass now; the emulated compute needs it later
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
            if self.measure is not None:   # its end is known once the real pass has run
                job.rem, job.seg, job.end = INF, s, INF
                job.start = s
                self.current = job
                self.measure(job.pending, job.variant, lambda elapsed, job=job: self._measured(job, elapsed))
                continue
            job.rem = svc * job.mult
            job.seg, job.end = s, s + job.rem
            job.start = s
            self.infer(job.pending, job.variant, job.end)
            job.timer = self.clock.at(job.end, self._finish)
            self.current = job
            self._foresee(job)

    def _foresee(self, job: Job) -> None:
        """The job in service ends at ``job.end`` unless an availability change comes first; when the
        next scheduled change (owner, trace, crash or MTBF, drawn in advance as in the simulator)
        is not before that end, its end and its reply's arrival are known now. The group may then
        send the reply ahead of its emulated arrival, and the master holds it until then, as a
        network emulator holds a packet: the harness's transport overlaps the emulated compute
        instead of following it. The emulated timeline is unchanged (``_finish`` still ends the
        job at its instant, with the same uplink transfer)."""
        if self.next_change is not None and self.next_change[0] < job.end:
            return
        if self.uplink is not None:
            _, job.sent = self.uplink.send(job.end, self.cfg.reply_bytes)   # this device's next transfer
        job.pending.foresee(self.index, INF if job.up_lost and self.uplink is not None else
                            (job.sent if self.uplink is not None else job.end), job.variant)

    def _measured(self, job: Job, elapsed: float) -> None:
        """The real forward pass of ``job`` took ``elapsed`` s on this node: that is its compute
        (no padding, no jitter draw); it ends then on the emulated timeline."""
        if self.current is not job:
            return                      # lost meanwhile (the device failed)
        job.rem = elapsed
        job.end = job.seg + elapsed
        job.timer = self.clock.at(job.end, self._finish)

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
            reply_at = job.sent if job.sent is not None else self.uplink.send(job.end, self.cfg.reply_bytes)[1]
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


def available_time(log: list[tuple[float, bool]], end: float) -> float:
    """Time available within ``[log[0][0], end)`` of a ``(t, available)`` change log."""
    total = 0.0
    for (t, on), nxt in zip(log, [x[0] for x in log[1:]] + [end]):
        if on:
            total += max(0.0, min(nxt, end) - min(t, end))
    return total
