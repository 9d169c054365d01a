"""The link model shared by the simulator and the Serve emulation (neither imports the other).

A master↔device link is a star edge with one FIFO per direction: a transmission waits for the
direction to be free, occupies it for ``bits / bandwidth`` (re-rated at every bandwidth step it
crosses: the bits left go out at the new rate), then propagates for ``rtt / 2``.

Bandwidth is a step function ``(times, rates)`` with ``times[0] = 0``: the rate from
``times[j]`` on. Every time is computed with the float operations the SimPy reference engine
performs (``now + delay``), so engines that use :func:`transfer_end` stay bit-identical to it.
"""
from __future__ import annotations

import bisect
import math
from typing import Iterable, List, Sequence, Tuple

INF = math.inf


def bandwidth_steps(bandwidth_bps: float, trace: Iterable[Tuple[float, float]] = ()) -> Tuple[List[float], List[float]]:
    """(times, rates) step function with ``times[0] = 0`` from a base rate and ``(t, bps)`` steps
    (a step at t = 0 replaces the base rate; repeated rates are merged)."""
    times, rates = [0.0], [float(bandwidth_bps)]
    for t, b in trace:
        if t == 0.0:
            rates[0] = b
        else:
            times.append(t)
            rates.append(b)
    return squash_steps(times, rates)


def squash_steps(times: Sequence[float], rates: Sequence[float]) -> Tuple[List[float], List[float]]:
    """Drop steps that do not change the rate."""
    ot, orr = [times[0]], [rates[0]]
    for t, r in zip(times[1:], rates[1:]):
        if r != orr[-1]:
            ot.append(t)
            orr.append(r)
    return ot, orr


def min_steps(steps: Sequence[Tuple[Sequence[float], Sequence[float]]]) -> Tuple[List[float], List[float]]:
    """Pointwise minimum of several step functions (a shared medium runs at the slowest rate)."""
    all_t = sorted({t for ts, _ in steps for t in ts})
    rates = [min(rs[bisect.bisect_right(ts, t) - 1] for ts, rs in steps) for t in all_t]
    return squash_steps(all_t, rates)


def transfer_end(s: float, bits: float, times: Sequence[float], rates: Sequence[float], j: int) -> float:
    """When ``bits`` that start going out at ``s`` are through, with step ``j`` in force at ``s``
    (``times[j] <= s < times[j + 1]``)."""
    n = len(times)
    while True:
        rate = rates[j]
        dur = bits / rate
        nxt = times[j + 1] if j + 1 < n else INF
        if s + dur <= nxt:
            return s + dur
        s2 = s + (nxt - s)             # the bandwidth changes mid-transfer
        bits = bits - (s2 - s) * rate
        s = s2
        j += 1


def step_at(times: Sequence[float], t: float) -> int:
    """Index of the bandwidth step in force at ``t``."""
    return bisect.bisect_right(times, t) - 1


class Direction:
    """One serialising link direction (downlink, uplink, or a shared medium): FIFO state plus
    the bandwidth steps. Transmissions must be offered in FIFO order."""

    __slots__ = ("times", "rates", "half_rtt", "free")

    def __init__(self, times: Sequence[float], rates: Sequence[float], half_rtt: float = 0.0):
        self.times = list(times)
        self.rates = list(rates)
        self.half_rtt = half_rtt
        self.free = 0.0

    def send(self, ready: float, nbytes: int) -> Tuple[float, float]:
        """``(end of transmission, arrival at the other end)`` of ``nbytes`` ready at ``ready``."""
        s = ready if ready > self.free else self.free
        end = transfer_end(s, float(nbytes * 8), self.times, self.rates, step_at(self.times, s))
        self.free = end
        return end, end + self.half_rtt


def link_params(link) -> dict:
    """A scenario link (``vip_ray.scenario.schema.LinkSpec``, complete) in SI units:
    ``rtt_s``, ``bandwidth_bps``, ``loss``, ``bandwidth_trace`` (``(t, bps)`` steps)."""
    trace = tuple((t, mbps * 1e6) for t, mbps in (link.bandwidth_trace.points if link.bandwidth_trace else ()))
    return dict(rtt_s=link.rtt_ms / 1e3, bandwidth_bps=link.bandwidth_mbps * 1e6, loss=link.loss or 0.0,
                bandwidth_trace=trace)
