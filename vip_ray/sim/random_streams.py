"""Random streams and the pre-drawn numeric inputs shared by every engine (the streams themselves
live in :mod:`vip_ray.core.streams`, shared with the Serve emulation; the link model in
:mod:`vip_ray.core.netmodel`).

Stream layout
-------------
Every random number comes from its own ``numpy.random.Generator`` (PCG64) seeded by
``SeedSequence(spec.seed, spawn_key=key)``:

=========================  ==========================  ===========================================
key                        draws                       used for
=========================  ==========================  ===========================================
``(ARRIVALS,)``            standard exponential        Poisson inter-arrival gaps (× 1/rate_hz)
``(DOWN_LOSS, d)``         uniform [0, 1)              request i's input to device d is lost if < loss
``(SERVICE, d)``           std exponential / normal    compute-time multiplier of (i, d) (mean 1)
``(STRAGGLER, d)``         uniform [0, 1)              (i, d) is a straggler if < straggler_prob
``(UP_LOSS, d)``           uniform [0, 1)              device d's reply to request i is lost if < loss
``(AVAILABILITY, d)``      std exponential / weibull   device d's up/down period lengths, in order
=========================  ==========================  ===========================================

Per-request streams are indexed by request id: request ``i`` always uses the ``i``-th number of
each of device ``d``'s streams, whether or not the job is served (a job lost on the downlink
still "consumes" its service draw). Numbers are generated in fixed blocks of ``BLOCK`` values, so
the values never depend on the chunk size or on which engine asks. A stream is only created when
the device needs it (e.g. no loss stream when ``loss == 0``); streams never affect each other.

Availability period lengths are consumed in order: up₀, down₀, up₁, down₁, … (the device starts
available at t = 0). Window boundaries are accumulated by sequential float addition
(``t = t + duration``) — exactly what SimPy does with ``env.now + delay`` — so engines that add
the same durations in the same order get bit-identical boundaries.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from vip_ray.core import netmodel
from vip_ray.core.streams import (BLOCK, INF, Arrivals, BlockStream, DeviceDraws, Purpose,  # noqa: F401  (re-exported)
                             _std_exp, _std_normal, _uniform, availability_durations, make_rng)

from vip_ray.core.world import Availability, LinkSpec, SimSpec


class Windows:
    """Availability windows ``[U[k], V[k])`` of one device, generated lazily from the durations.

    ``U[0] = 0``; ``V[k] = U[k] + up_k``; ``U[k+1] = V[k] + down_k`` (sequential float adds).
    A window may have zero length (a zero-length up period); consumers skip those.
    ``trim(k)`` forgets windows before ``k`` (keeps memory flat on long runs).
    """

    __slots__ = ("U", "V", "_it", "_t", "done")

    def __init__(self, av: Availability, index: int, seed: int):
        self._it = availability_durations(av, index, seed)
        self.U: List[float] = []
        self.V: List[float] = []
        self._t = 0.0
        self.done = False
        self.extend()

    def extend(self) -> None:
        """Append the next window (a final ``[inf, inf)`` once the device is down forever)."""
        if self.done:
            self.U.append(INF)
            self.V.append(INF)
            return
        t = self._t
        u = t
        up = next(self._it)
        if up == INF:
            self.U.append(u)
            self.V.append(INF)
            self.done = True
            return
        t = t + up
        self.U.append(u)
        self.V.append(t)
        down = next(self._it)
        if down == INF:
            self.done = True
            self._t = INF
            return
        self._t = t + down

    def trim(self, k: int) -> None:
        if k > 0:
            del self.U[:k]
            del self.V[:k]

    def available_time(self, t0: float, t1: float, trim: bool = False) -> float:
        """Integral of availability over [t0, t1), extending the windows as needed. With
        ``trim`` the windows that end at or before ``t0`` are forgotten (for nondecreasing t0)."""
        if trim:
            k = 0
            while k < len(self.V) - 1 and self.V[k] <= t0:
                k += 1
            self.trim(k)
        if not t1 > t0:
            return 0.0
        while self.V[-1] < t1 and self.U[-1] < t1:
            self.extend()
        tot = 0.0
        for u, v in zip(self.U, self.V):
            if v <= t0:
                continue
            if u >= t1:
                break
            tot += min(v, t1) - max(u, t0)
        return tot


# ----------------------------------------------------------------------------- bandwidth (vip_ray.core.netmodel)

def bandwidth_steps(link: LinkSpec) -> Tuple[List[float], List[float]]:
    """(times, rates) step function with ``times[0] = 0``: the rate from ``times[j]`` on."""
    return netmodel.bandwidth_steps(link.bandwidth_bps, link.bandwidth_trace)


min_steps = netmodel.min_steps


def shared_medium_steps(spec: SimSpec) -> Optional[Tuple[List[float], List[float]]]:
    nets = [bandwidth_steps(d.link) for d in spec.devices if d.link is not None]
    if not spec.shared_medium or not nets:
        return None
    return min_steps(nets)
