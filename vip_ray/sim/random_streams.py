"""Random streams and the pre-drawn numeric inputs shared by every engine.

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

import math
from enum import IntEnum
from typing import Iterator, List, Optional, Tuple

import numpy as np

from .spec import Availability, DeviceSpec, LinkSpec, SimSpec, WorkloadSpec

BLOCK = 1024
INF = math.inf


class Purpose(IntEnum):
    ARRIVALS = 0
    DOWN_LOSS = 1
    SERVICE = 2
    STRAGGLER = 3
    UP_LOSS = 4
    AVAILABILITY = 5


def make_rng(seed: int, purpose: Purpose, device: Optional[int] = None) -> np.random.Generator:
    key = (int(purpose),) if device is None else (int(purpose), int(device))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


class BlockStream:
    """Values of one generator, produced in fixed blocks of ``BLOCK`` and handed out in order."""

    __slots__ = ("_rng", "_fn", "_buf", "_pos")

    def __init__(self, rng: np.random.Generator, fn):
        self._rng = rng
        self._fn = fn
        self._buf = np.empty(0)
        self._pos = 0

    def take(self, n: int) -> np.ndarray:
        pieces = []
        while n > 0:
            if self._pos == len(self._buf):
                self._buf = self._fn(self._rng, BLOCK)
                self._pos = 0
            k = min(n, len(self._buf) - self._pos)
            pieces.append(self._buf[self._pos:self._pos + k])
            self._pos += k
            n -= k
        if not pieces:
            return np.empty(0)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def scalars(self) -> Iterator[float]:
        while True:
            if self._pos == len(self._buf):
                self._buf = self._fn(self._rng, BLOCK)
                self._pos = 0
            vals = self._buf[self._pos:].tolist()
            self._pos = len(self._buf)
            yield from vals


def _uniform(rng, n):
    return rng.random(n)


def _std_exp(rng, n):
    return rng.standard_exponential(n)


def _std_normal(rng, n):
    return rng.standard_normal(n)


# ----------------------------------------------------------------------------- per-request draws

class DeviceDraws:
    """Per-request random inputs of one device: downlink loss, compute multiplier, uplink loss."""

    def __init__(self, dev: DeviceSpec, index: int, seed: int):
        self.dev = dev
        lossy = dev.link is not None and dev.link.loss > 0.0
        self.loss = dev.link.loss if lossy else 0.0
        self._down = BlockStream(make_rng(seed, Purpose.DOWN_LOSS, index), _uniform) if lossy else None
        self._up = BlockStream(make_rng(seed, Purpose.UP_LOSS, index), _uniform) if lossy else None
        self._svc = None
        self._mu = self._sigma = 0.0
        if dev.service_dist == "exponential":
            self._svc = BlockStream(make_rng(seed, Purpose.SERVICE, index), _std_exp)
        elif dev.service_dist == "lognormal" and dev.jitter_cv > 0.0:
            s2 = math.log1p(dev.jitter_cv * dev.jitter_cv)
            self._sigma = math.sqrt(s2)
            self._mu = -0.5 * s2
            self._svc = BlockStream(make_rng(seed, Purpose.SERVICE, index), _std_normal)
        strag = dev.straggler_prob > 0.0 and dev.straggler_factor != 1.0
        self._strag = BlockStream(make_rng(seed, Purpose.STRAGGLER, index), _uniform) if strag else None

    def take(self, n: int) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
        """Next ``n`` requests: (down_lost bool | None, multiplier float64, up_lost bool | None)."""
        down = self._down.take(n) < self.loss if self._down is not None else None
        if self._svc is None:
            mult = np.ones(n)
        elif self.dev.service_dist == "exponential":
            mult = self._svc.take(n)
        else:
            mult = np.exp(self._mu + self._sigma * self._svc.take(n))
        if self._strag is not None:
            mult = mult * np.where(self._strag.take(n) < self.dev.straggler_prob, self.dev.straggler_factor, 1.0)
        up = self._up.take(n) < self.loss if self._up is not None else None
        return down, mult, up


# ----------------------------------------------------------------------------- availability

def availability_durations(av: Availability, index: int, seed: int) -> Iterator[float]:
    """Period lengths up₀, down₀, up₁, … (``inf`` ends the sequence: that state lasts forever)."""
    kind = av.kind
    if kind == "always":
        yield INF
        return
    if kind == "crash":
        yield av.crash_at_s - 0.0
        yield INF
        return
    if kind == "trace":
        t = 0.0
        for a, b in av.intervals:
            up = a - t
            yield up
            t = t + up
            down = b - t
            yield down
            t = t + down
        yield INF
        return
    if kind == "onoff":
        up_mean, down_mean = av.free_mean_s, av.busy_mean_s
        if av.distribution == "weibull":
            k = av.weibull_shape
            g = math.gamma(1.0 + 1.0 / k)
            up_scale, down_scale = up_mean / g, down_mean / g
            stream = BlockStream(make_rng(seed, Purpose.AVAILABILITY, index), lambda r, n: r.weibull(k, n))
        else:
            up_scale, down_scale = up_mean, down_mean
            stream = BlockStream(make_rng(seed, Purpose.AVAILABILITY, index), _std_exp)
    elif kind == "mtbf":
        up_scale, down_scale = av.mtbf_s, av.mttr_s
        stream = BlockStream(make_rng(seed, Purpose.AVAILABILITY, index), _std_exp)
    else:  # pragma: no cover - validated in spec
        raise ValueError(kind)
    it = stream.scalars()
    while True:
        yield next(it) * up_scale
        yield next(it) * down_scale


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


# ----------------------------------------------------------------------------- bandwidth

def bandwidth_steps(link: LinkSpec) -> Tuple[List[float], List[float]]:
    """(times, rates) step function with ``times[0] = 0``: the rate from ``times[j]`` on."""
    times, rates = [0.0], [link.bandwidth_bps]
    for t, b in link.bandwidth_trace:
        if t == 0.0:
            rates[0] = b
        else:
            times.append(t)
            rates.append(b)
    return _squash(times, rates)


def _squash(times, rates):
    ot, orr = [times[0]], [rates[0]]
    for t, r in zip(times[1:], rates[1:]):
        if r != orr[-1]:
            ot.append(t)
            orr.append(r)
    return ot, orr


def min_steps(steps: List[Tuple[List[float], List[float]]]) -> Tuple[List[float], List[float]]:
    """Pointwise minimum of several step functions (a shared medium runs at the slowest rate)."""
    import bisect
    all_t = sorted({t for ts, _ in steps for t in ts})
    rates = [min(rs[bisect.bisect_right(ts, t) - 1] for ts, rs in steps) for t in all_t]
    return _squash(all_t, rates)


def shared_medium_steps(spec: SimSpec) -> Optional[Tuple[List[float], List[float]]]:
    nets = [bandwidth_steps(d.link) for d in spec.devices if d.link is not None]
    if not spec.shared_medium or not nets:
        return None
    return min_steps(nets)


# ----------------------------------------------------------------------------- arrivals

class Arrivals:
    """Arrival times in request order, handed out in pieces: ``take(n) -> (gaps, times)``.

    ``times[i] = times[i-1] + gaps[i]`` (sequential float addition from 0.0, which is what a SimPy
    arrival process that yields ``timeout(gap)`` computes). Poisson: gaps = Exp × (1/rate_hz);
    periodic: first gap 0 (first arrival at t = 0), then 1/rate_hz; trace: gap = t_i − previous.
    Arrivals at or after ``duration_s`` and beyond ``n_requests`` are not generated.
    """

    def __init__(self, wl: WorkloadSpec, seed: int):
        self.wl = wl
        self.remaining = wl.n_requests if wl.n_requests is not None else (
            len(wl.times) if wl.arrival == "trace" else None)
        if wl.arrival == "trace" and self.remaining is not None:
            self.remaining = min(self.remaining, len(wl.times))
        self.t = 0.0
        self.count = 0
        self.done = self.remaining == 0
        self._stream = BlockStream(make_rng(seed, Purpose.ARRIVALS), _std_exp) if wl.arrival == "poisson" else None
        self._scale = 1.0 / wl.rate_hz if wl.rate_hz > 0 else 0.0

    def take(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` next arrivals (fewer only when the workload ends)."""
        gl, tl = [], []
        while n > 0 and not self.done:
            g, t = self._take(min(n, 1 << 16))
            gl.append(g)
            tl.append(t)
            n -= len(t)
        if not gl:
            return np.empty(0), np.empty(0)
        if len(gl) == 1:
            return gl[0], tl[0]
        return np.concatenate(gl), np.concatenate(tl)

    def _take(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
        if self.done or n <= 0:
            return np.empty(0), np.empty(0)
        if self.remaining is not None:
            n = min(n, self.remaining)
        wl = self.wl
        if wl.arrival == "poisson":
            gaps = self._stream.take(n) * self._scale
        elif wl.arrival == "periodic":
            gaps = np.full(n, self._scale)
            if self.count == 0:
                gaps[0] = 0.0
        else:
            ts = wl.times[self.count:self.count + n]
            gl = []
            t = self.t
            for x in ts:
                g = x - t
                gl.append(g)
                t = t + g
            gaps = np.asarray(gl, dtype=np.float64)
        times = np.cumsum(np.concatenate(([self.t], gaps)))[1:]
        if wl.duration_s is not None:
            m = int(np.searchsorted(times, wl.duration_s, side="left"))
            if m < len(times):
                gaps, times = gaps[:m], times[:m]
                self.done = True
        k = len(times)
        self.count += k
        if self.remaining is not None:
            self.remaining -= k
            if self.remaining <= 0:
                self.done = True
        if wl.arrival == "trace" and self.count >= len(wl.times):
            self.done = True
        if k:
            self.t = float(times[-1])
        return gaps, times
