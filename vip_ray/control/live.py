"""The controller at the live master (:class:`vip_ray.serve.ingress.Ingress`): the same policy
objects as in the simulator, fed one request at a time with what the master observes.

Per request the master asks :meth:`LiveRequest` for

* the wait set when the request leaves (``Policy.live_waits``: ``reactive`` from the timeouts and
  reply latencies it has seen so far — replies as their device group's call returns, timeouts
  once a request's collection ends);
* when to stop collecting: as soon as every device it waits for has replied, or the policy's
  ``answer`` (the margin rule when ``anytime`` is on) answers before the deadline with the replies
  in so far — the group calls still out run on, their replies are observed, not used;
* the answer itself: :func:`vip_ray.core.master.finish_times` and ``Policy.answer`` on a one-row
  timing built from the replies (emulated reply times, the variants that ran; the margin rule's
  bank is the replies' own softmax outputs), exactly as the simulator's master table does.

What a live master cannot see, it does not use: a reply that comes after the deadline never
reaches it (the device groups drop it), so ``reactive`` counts only in-time replies as a device
answering again (the simulator also counts late ones as pings).
"""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from vip_ray.core.aggregation import softmax
from vip_ray.core.master import finish_times
from vip_ray.core.tables import Outcome

NO_REPLY = -1   # not an Outcome: all the master knows of a device without a reply (yet) is that it has none


def live_control(cfg: Any) -> "LiveControl | None":
    """The live controller for an emulation config (``None``: no controller, today's master)."""
    policy = getattr(cfg, "control", None)
    return None if policy is None else LiveControl(policy, cfg)


class LiveControl:
    """One policy at one live master; its state restarts with each replication (session token)."""

    def __init__(self, policy: Any, cfg: Any):
        self.policy = policy
        self.cfg = cfg
        self.token: str | None = None
        self.background: set = set()   # collections still running after an early answer
        if getattr(policy.options, "anytime", False):
            self._warm()

    def _warm(self) -> None:
        """One answer before the first request: the margin rule's compiled loop (numba) loads or
        compiles now, not while a request waits for it."""
        cfg = self.cfg
        d, v = len(cfg.devices), len(cfg.variants)
        timing = SimpleNamespace(arrival=np.zeros(1), reply_at=np.full((1, d), 1e-3),
                                 variant=np.zeros((1, d), dtype=np.int64), outcome=np.zeros((1, d), dtype=np.int8))
        bank = np.full((v, 1, cfg.num_classes), 1.0 / cfg.num_classes)
        self.policy.answer(timing, cfg.workload.deadline_s, np.full(1, cfg.workload.deadline_s),
                           np.ones((1, d), dtype=bool), np.ones((1, d), dtype=bool), bank, np.zeros(1, dtype=np.int64))

    def request(self, s: Any, t_a: float) -> "LiveRequest":
        if s.token != self.token:
            self.token = s.token
            self.policy.live_reset()
        cfg = self.cfg
        expected = np.array([dev.slot_at(t_a) is not None and not s.knows.known_down(d, t_a)
                             for d, dev in enumerate(cfg.devices)], dtype=bool)
        waits = self.policy.live_waits(t_a, cfg.workload.deadline_s, expected.copy())
        return LiveRequest(self, s, t_a, expected, np.asarray(waits, dtype=bool))


class LiveRequest:
    def __init__(self, ctl: LiveControl, s: Any, t_a: float, expected: np.ndarray, waits: np.ndarray):
        self.ctl, self.s, self.t_a = ctl, s, t_a
        self.expected, self.waits = expected, waits
        self.deadline_s = ctl.cfg.workload.deadline_s
        self.got: dict[int, tuple] = {}
        self.observed: set[int] = set()

    # -- what the policy is given ------------------------------------------------------------------
    def _timing(self, got: dict[int, tuple]) -> tuple[Any, np.ndarray]:
        """A one-row timing of the replies in ``got`` and the margin rule's bank (V, 1, C)."""
        cfg = self.ctl.cfg
        d = len(cfg.devices)
        reply_at = np.full((1, d), np.inf)
        variant = np.full((1, d), -1, dtype=np.int64)
        outcome = np.full((1, d), NO_REPLY, dtype=np.int8)
        for i, dev in enumerate(cfg.devices):     # a reply still out: the variant its placement runs
            slot = dev.slot_at(self.t_a)
            if slot is not None:
                variant[0, i] = slot[0]
        bank = np.zeros((len(cfg.variants), 1, cfg.num_classes))
        for i, (_, at, v, logits) in got.items():
            reply_at[0, i], variant[0, i], outcome[0, i] = at, v, Outcome.REPLIED
            bank[v, 0] = softmax(np.asarray(logits).astype(np.float64))
        timing = SimpleNamespace(arrival=np.array([self.t_a]), reply_at=reply_at, variant=variant, outcome=outcome)
        return timing, bank

    def decide(self, got: dict[int, tuple]) -> tuple[float, np.ndarray]:
        """The emulated finish and the replies used (D,), by the policy, from the replies in ``got``."""
        timing, bank = self._timing(got)
        waits = self.waits[None, :]
        finish, responded = finish_times(timing, self.deadline_s, waits)
        finish, responded = self.ctl.policy.answer(timing, self.deadline_s, finish, responded, waits, bank,
                                                   np.zeros(1, dtype=np.int64))
        return float(finish[0]), responded[0]

    def decided_wall(self) -> float | None:
        """When (wall time) the answer is final: the decided finish's wall instant, once every device
        waited for replied or the policy answers before the deadline — not earlier, because device
        groups send foreseen replies ahead of their emulated arrival, so a reply that arrives
        (emulated) before that finish may still be on its way until then; ``None``: not decided."""
        finish = self.decide(self.got)[0]
        if finish < self.t_a + self.deadline_s or all(d in self.got for d in np.flatnonzero(self.waits)):
            return self.s.wall(finish)
        return None

    def _observe(self, replies: list) -> None:
        for r in replies:
            self.got.setdefault(r[0], r)
            if r[0] not in self.observed and self.expected[r[0]]:
                self.observed.add(r[0])
                self.ctl.policy.live_observe(int(r[0]), float(r[1]), float(r[1]) - self.t_a)

    # -- the collection --------------------------------------------------------------------------
    async def collect(self, ing: Any, calls: list) -> list:
        """The replies the master answers with (as ``Ingress._collect``), stopping at
        :meth:`decided_wall`; the rest of the collection (grace, timeouts, observations) runs on."""
        deadline_wall = self.s.wall(self.t_a + self.deadline_s)
        tasks = [asyncio.ensure_future(_awaitable(c)) for c in calls]
        for t in tasks:
            t.add_done_callback(_retrieve)
        pending = set(tasks)
        early = False
        while True:
            final = self.decided_wall()
            if final is not None and time.time() >= final:
                early = bool(pending)
                break
            if not pending:
                break
            until = deadline_wall if final is None else min(final, deadline_wall)
            done, pending = await asyncio.wait(pending, timeout=max(0.0, until - time.time()),
                                               return_when=asyncio.FIRST_COMPLETED)
            if not done and final is None:   # the deadline
                break
            for t in done:
                if not t.cancelled() and t.exception() is None:
                    self._observe(t.result()[0])   # a group answers (replies, sent)
        replies = list(self.got.values())
        rest = self._finish(ing, tasks, calls, pending, deadline_wall)
        if early:
            task = asyncio.ensure_future(rest)
            self.ctl.background.add(task)
            task.add_done_callback(self.ctl.background.discard)
            return replies
        await rest
        return list(self.got.values())

    async def _finish(self, ing: Any, tasks: list, calls: list, pending: set, deadline_wall: float) -> None:
        """``Ingress._collect``'s waits and bookkeeping for the calls still out; then the timeouts
        (devices expected that did not reply in time) are observed."""
        if pending:
            _, pending = await asyncio.wait(pending, timeout=max(0.0, deadline_wall - time.time()))
        waiting = {t for t in pending if ing.group_ok[tasks.index(t)]}
        if waiting:
            await asyncio.wait(waiting, timeout=max(0.0, deadline_wall + ing.grace - time.time()))
        for gi, (t, call) in enumerate(zip(tasks, calls)):
            if t.done() and not t.cancelled() and t.exception() is None:
                self._observe(t.result()[0])   # a group answers (replies, sent)
            else:
                ing.timeouts[gi] += 1
                ing.group_ok[gi] = False
                if t.done() and not t.cancelled():
                    ing.errors[gi] = repr(t.exception())[:300]
                call.cancel()
                t.cancel()
        due = self.t_a + self.deadline_s
        for d in np.flatnonzero(self.expected):
            if int(d) not in self.got:
                self.ctl.policy.live_observe(int(d), due, None)

    def answer(self, used: dict[int, tuple]) -> tuple[dict[int, tuple], float, float]:
        """The replies used, the emulated finish, and when the answer may leave (wall-held to it)."""
        finish, responded = self.decide(used)
        used = {d: r for d, r in used.items() if responded[d]}
        release = finish if finish < self.t_a + self.deadline_s else max([self.t_a] + [r[1] for r in used.values()])
        return used, finish, release


async def _awaitable(resp):
    return await resp


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()
