"""Availability as its own SimPy process: it flips the device's state and interrupts the job in
service (owner preemption or failure).

Transitions are scheduled with URGENT priority, so at a tie they happen *before* any ordinary
event at the same instant: a job arriving exactly when the device goes down finds it down, a job
arriving exactly when it comes back finds it up, and a job whose service ends exactly at a
preemption instant is interrupted — and, seeing its work is done, counts as completed.
"""
from __future__ import annotations

import math

from simpy.events import URGENT, Event


class UrgentTimeout(Event):
    """A ``Timeout`` with URGENT priority (same arithmetic: fires at ``env.now + delay``)."""

    def __init__(self, env, delay: float, value=None):
        super().__init__(env)
        self._ok = True
        self._value = value
        env.schedule(self, URGENT, delay)


def availability_process(env, device, durations):
    """Alternate up/down periods of the given lengths (up first); ``inf`` ends the process."""
    up = True
    for d in durations:
        if d == math.inf:
            return
        yield UrgentTimeout(env, d)
        if up:
            device.go_down()
        else:
            device.go_up()
        up = not up
