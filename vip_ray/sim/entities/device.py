"""An edge device: a FIFO queue in front of one server that computes the placed variant, and an
availability state driven by its own process (see ``availability.py``)."""
from __future__ import annotations

import bisect

import simpy

from ..result import Outcome

PREEMPT_KINDS = ("onoff", "trace")
FAILURE_KINDS = ("crash", "mtbf")


class Device:
    def __init__(self, env, spec, index: int):
        self.env = env
        self.spec = spec
        self.index = index
        kind = spec.availability.kind
        self.failure = kind in FAILURE_KINDS
        self.drop_mode = kind in PREEMPT_KINDS and spec.availability.mode == "drop"
        self.queue = simpy.PriorityResource(env, capacity=1)  # FIFO; ties broken by request id
        self.available = True      # owner not using it (onoff / trace)
        self.up = True             # not failed (crash / mtbf)
        self.epoch = 0             # bumped at each failure: jobs of an older epoch were lost
        self.on_event = env.event()
        self.up_event = env.event()  # fires at each repair (crash / mtbf); model-parallel stalls wait on it
        self.current = None        # the job process in service, if any
        self.slots = spec.timeline()
        self.slot_starts = [s.start_s for s in self.slots]
        self.stats = dict(jobs=0, served=0, busy_s=0.0, preempted=0, dropped=0, crashed=0, skipped=0, unplaced=0)
        self.last_end = 0.0        # latest time a job left the device

    # -- availability transitions (called by the availability process) --------------------
    def go_down(self):
        if self.failure:
            self.up = False
            self.epoch += 1
            if self.current is not None:
                self.current.interrupt("crash")
        else:
            self.available = False
            if self.current is not None:
                self.current.interrupt("preempt")

    def go_up(self):
        if self.failure:
            self.up = True
            ev, self.up_event = self.up_event, self.env.event()
            ev.succeed()
        else:
            self.available = True
            ev, self.on_event = self.on_event, self.env.event()
            ev.succeed()

    # -- one job ----------------------------------------------------------------------------
    def _left(self):
        if self.env.now > self.last_end:
            self.last_end = self.env.now

    def serve(self, request_id: int, mult: float, deadline_at: float):
        """Generator: queue, wait for availability, compute. Returns ``(outcome, variant)``;
        on ``REPLIED`` the job finished at ``env.now``."""
        env = self.env
        st = self.stats
        st["jobs"] += 1
        # this job's service start (first) and time paused by the owner's work: ``self.last_job``
        # when it returns, read by the caller at once (nothing else runs between the two)
        self.last_job = (float("inf"), 0.0)
        job_start, job_paused = float("inf"), 0.0
        if self.failure and not self.up:
            st["crashed"] += 1
            self._left()
            return Outcome.CRASHED, -1
        epoch = self.epoch
        with self.queue.request(priority=request_id) as req:
            yield req
            if self.epoch != epoch:               # the device failed while we were queued
                st["crashed"] += 1
                self._left()
                self.last_job = (job_start, job_paused)
                return Outcome.CRASHED, -1
            while not self.available:             # the owner is using the device
                yield self.on_event
            slot = self.slots[bisect.bisect_right(self.slot_starts, env.now) - 1]
            if not slot.placed:                   # no variant on the device: nothing to run
                st["unplaced"] += 1
                self._left()
                self.last_job = (job_start, job_paused)
                return Outcome.UNPLACED, -1
            if self.spec.drop_expired and env.now > deadline_at:
                st["skipped"] += 1
                self._left()
                self.last_job = (job_start, job_paused)
                return Outcome.EXPIRED_SKIPPED, -1
            rem = slot.service_s * mult
            job_start = env.now
            paused_at = None
            while True:
                start = env.now
                if paused_at is not None:
                    job_paused += start - paused_at
                end = start + rem
                self.current = env.active_process
                try:
                    yield env.timeout(rem)
                    self.current = None
                    st["busy_s"] += env.now - start
                    break
                except simpy.Interrupt as intr:
                    self.current = None
                    if env.now >= end:            # the work was done at this very instant
                        st["busy_s"] += env.now - start
                        break
                    st["busy_s"] += env.now - start
                    rem = rem - (env.now - start)
                    if intr.cause == "crash":
                        st["crashed"] += 1
                        self._left()
                        self.last_job = (job_start, job_paused)
                        return Outcome.CRASHED, slot.variant
                    st["preempted"] += 1
                    paused_at = env.now
                    if self.drop_mode:
                        st["dropped"] += 1
                        self._left()
                        self.last_job = (job_start, job_paused)
                        return Outcome.PREEMPT_DROPPED, slot.variant
                    while not self.available:     # preempt-resume: wait for the owner to leave
                        yield self.on_event
            st["served"] += 1
            self._left()
            self.last_job = (job_start, job_paused)
            return Outcome.REPLIED, slot.variant
