"""A master↔device network link in the style of SimPy's ``Cable`` example, extended with
serialisation: each direction is a FIFO (one transmission at a time), a transmission takes
``bits / bandwidth`` (re-rated when the bandwidth steps mid-transfer), then ``rtt/2`` propagation.
"""
from __future__ import annotations

import bisect
import math

import simpy

from ..random_streams import bandwidth_steps


class _Channel:
    """One serialising direction: a FIFO resource and a bandwidth step function."""

    def __init__(self, env, times, rates):
        self.env = env
        self.times = times
        self.rates = rates
        # Ties between equal-time requests are broken by request id (priority), which is the
        # FIFO order anyway: every transmission is requested in request order.
        self.resource = simpy.PriorityResource(env, capacity=1)

    def serialize(self, nbytes: int):
        """Hold the medium while ``nbytes`` go out; the rate in force applies to the bits left."""
        env = self.env
        bits = float(nbytes * 8)
        times, rates = self.times, self.rates
        j = bisect.bisect_right(times, env.now) - 1
        while True:
            rate = rates[j]
            dur = bits / rate
            nxt = times[j + 1] if j + 1 < len(times) else math.inf
            start = env.now
            if start + dur <= nxt:
                yield env.timeout(dur)
                return
            yield env.timeout(nxt - start)          # the bandwidth changes mid-transfer
            bits = bits - (env.now - start) * rate
            j += 1

    def send(self, nbytes: int, priority: int):
        with self.resource.request(priority=priority) as req:
            yield req
            yield from self.serialize(nbytes)


class Link:
    """A switched star link (its own downlink and uplink channels)."""

    def __init__(self, env, spec):
        self.env = env
        self.spec = spec
        self.half_rtt = spec.rtt_s / 2.0
        times, rates = bandwidth_steps(spec)
        self.down = _Channel(env, times, rates)
        self.up = _Channel(env, times, rates)

    def propagate(self):
        yield self.env.timeout(self.half_rtt)


class SharedMedium(_Channel):
    """A broadcast downlink: one transmission of an input serves every networked device."""
