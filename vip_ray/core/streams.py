"""Random streams shared by the simulator and the Serve emulation (neither imports the other).

Moved here from :mod:`vip_ray.sim.random_streams` (which re-exports everything) so that a live
Serve device draws *the same numbers* as the simulated one: same arrival times, availability
periods and per-request jitter / loss for the same seed. The functions read plain attributes
(duck typing) of the simulator's numeric spec classes or of the emulation's device configs:

* :class:`DeviceDraws` — ``dev.link`` (``None`` or with ``.loss``), ``dev.service_dist``,
  ``dev.jitter_cv``, ``dev.straggler_prob``, ``dev.straggler_factor``;
* :func:`availability_durations` — ``av.kind`` and that kind's fields (``free_mean_s``,
  ``busy_mean_s``, ``distribution``, ``weibull_shape``, ``intervals``, ``crash_at_s``,
  ``mtbf_s``, ``mttr_s``);
* :class:`Arrivals` — ``wl.arrival``, ``wl.rate_hz``, ``wl.times``, ``wl.n_requests``, ``wl.duration_s``.

See :mod:`vip_ray.sim.random_streams` for the stream layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Iterator, Optional, Tuple

import numpy as np

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

    def __init__(self, dev: Any, index: int, seed: int):
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

def availability_durations(av: Any, index: int, seed: int) -> Iterator[float]:
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


# ----------------------------------------------------------------------------- arrivals

class Arrivals:
    """Arrival times in request order, handed out in pieces: ``take(n) -> (gaps, times)``.

    ``times[i] = times[i-1] + gaps[i]`` (sequential float addition from 0.0, which is what a SimPy
    arrival process that yields ``timeout(gap)`` computes). Poisson: gaps = Exp × (1/rate_hz);
    periodic: first gap 0 (first arrival at t = 0), then 1/rate_hz; trace: gap = t_i − previous.
    Arrivals at or after ``duration_s`` and beyond ``n_requests`` are not generated. ``stream``:
    master ``m`` of a multi-master world draws from key ``(ARRIVALS, m)``.
    """

    def __init__(self, wl: Any, seed: int, stream: int | None = None):
        self.wl = wl
        self.remaining = wl.n_requests if wl.n_requests is not None else (
            len(wl.times) if wl.arrival == "trace" else None)
        if wl.arrival == "trace" and self.remaining is not None:
            self.remaining = min(self.remaining, len(wl.times))
        self.t = 0.0
        self.count = 0
        self.done = self.remaining == 0
        self._stream = BlockStream(make_rng(seed, Purpose.ARRIVALS, stream), _std_exp) if wl.arrival == "poisson" else None
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


# ----------------------------------------------------------------------------- scenario → numbers

@dataclass(frozen=True)
class AvailabilityParams:
    """A device's availability process in numbers — what :func:`availability_durations` reads
    (``vip_ray.core.world.Availability`` validates these fields and documents them)."""

    kind: str = "always"
    busy_mean_s: float = 0.0
    free_mean_s: float = 0.0
    distribution: str = "exponential"
    weibull_shape: float = 1.0
    intervals: tuple = ()
    crash_at_s: Optional[float] = None
    mtbf_s: float = 0.0
    mttr_s: float = 0.0
    mode: str = "resume"

    @property
    def failure(self) -> bool:
        """Crash / MTBF: going down loses the queue and the job in service."""
        return self.kind in ("crash", "mtbf")

    @property
    def drop(self) -> bool:
        """Preempt-drop: the owner's work loses the job in service."""
        return self.kind in ("onoff", "trace") and self.mode == "drop"


def availability_params(av: Any) -> dict:
    """A scenario availability (``vip_ray.scenario.schema``) as the numeric fields the streams and
    both engines use (``kind``, and per kind: ``busy_mean_s``/``free_mean_s``/``distribution``/
    ``weibull_shape``/``mode``, ``intervals``/``mode``, ``crash_at_s``, ``mtbf_s``/``mttr_s``)."""
    kind = av.kind
    if kind == "onoff":
        return dict(kind="onoff", busy_mean_s=av.busy_mean_s, free_mean_s=av.free_mean_s,
                    distribution=av.distribution, weibull_shape=av.weibull_shape or 1.0, mode=av.mode)
    if kind == "trace":
        return dict(kind="trace", intervals=tuple(tuple(iv) for iv in av.intervals), mode=av.mode)
    if kind == "crash":
        return dict(kind="crash", crash_at_s=av.at_s)
    if kind == "mtbf":
        return dict(kind="mtbf", mtbf_s=av.mtbf_s, mttr_s=av.mttr_s)
    return dict(kind="always")
