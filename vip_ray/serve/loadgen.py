"""The load generator: replays a scenario's workload against the master in real time.

Arrival times are the simulator's (:class:`vip_ray.core.streams.Arrivals` with the replication's
seed) and request ``i`` carries bank test sample ``integers(0, N, size=R)[i]`` of
:func:`vip_ray.core.tables.sample_rng` — the same inputs as the simulated request ``i``.

The requests originate *at the master* — in the scenarios the master is the device whose camera
or user produces the inputs (VP's tablet) — so the sending loop (:func:`send_on_schedule`) runs
inside the master's replica: :class:`LoadGenerator` ships the schedule and the inputs once, and
follows the replay's progress. Request ``i`` is issued at ``epoch + t_i`` and its emulated timeline
starts at ``t_i``; being issued late (``send_lag_s``) shows as harness overhead.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import numpy as np

from vip_ray.core.world import WorkloadSpec
from vip_ray.serve.config import EmulationConfig
from vip_ray.core.streams import Arrivals
from vip_ray.core.tables import sample_rng

POLL_S = 0.5


@dataclass
class Replay:
    """One replication as it happened: the master's answer to every request, when each request
    was actually issued (``send_lag_s`` after its scheduled instant), and the final counters."""

    token: str
    seed: int
    epoch: float
    arrival: np.ndarray
    samples: np.ndarray
    results: list[dict]
    send_lag_s: np.ndarray
    final: dict = field(default_factory=dict)
    wall_s: float = 0.0


def arrival_times(workload: WorkloadSpec, seed: int) -> np.ndarray:
    arr = Arrivals(workload, seed)
    parts = []
    while not arr.done:
        parts.append(arr.take(1 << 16)[1])
    return np.concatenate(parts) if parts else np.empty(0)


async def send_on_schedule(times: np.ndarray, epoch: float, send: Callable[[int], Awaitable[Any]],
                           dilation: float = 1.0) -> tuple[list, np.ndarray]:
    """Issue ``send(i)`` at wall-clock ``epoch + dilation * times[i]``; return every result and
    each send's lag (emulated seconds: wall lag / dilation)."""
    results: list[Any] = [None] * len(times)
    lags = np.zeros(len(times))

    async def one(i: int) -> None:
        results[i] = await send(i)

    tasks = []
    for i, t in enumerate(times.tolist()):
        due = epoch + dilation * t
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lags[i] = (time.time() - due) / dilation
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.gather(*tasks)
    return results, lags


class LoadGenerator:
    """Driver side of a replay: the schedule and inputs of one replication, shipped to the master."""

    def __init__(self, handle: Any, cfg: EmulationConfig, images: np.ndarray):
        self.handle = handle
        self.cfg = cfg
        self.images = images

    async def replication(self, seed: int, *, progress: Callable[[int], None] | None = None, lead_s: float = 1.0,
                          drain_s: float | None = None, workload: WorkloadSpec | None = None,
                          on_start: Callable[[np.ndarray], None] | None = None) -> Replay:
        """Replay the workload (default: the scenario's; another arrival process or length may be
        given, e.g. to ramp the rate — the master keeps the scenario's deadline and input size).
        ``on_start(times)``: told the arrival times before the replay starts."""
        t0 = time.time()
        times = arrival_times(workload or self.cfg.workload, seed)
        if on_start:
            on_start(times)
        samples = sample_rng(seed).integers(0, len(self.images), size=len(times))
        token = f"rep-{seed}-{uuid.uuid4().hex[:8]}"
        epoch = time.time() + lead_s   # every group is reset before emulated time 0
        used, which = np.unique(samples, return_inverse=True)  # each distinct test image travels once
        call = self.handle.replay.remote(token, seed, epoch, times, np.ascontiguousarray(self.images[used]),
                                         which.ravel())
        task = asyncio.ensure_future(_awaitable(call))
        done = 0
        while not task.done():
            await asyncio.wait([task], timeout=POLL_S)
            if progress:
                now = await self.handle.progress.remote(token)
                if now > done:
                    progress(now - done)
                    done = now
        out = task.result()
        if progress and len(times) > done:
            progress(len(times) - done)
        if drain_s is None:  # jobs still queued behind busy periods may finish after the last answer
            drain_s = max(5.0, 10 * self.cfg.workload.deadline_s * getattr(self.cfg, "dilation", 1.0))
        final = await self.handle.finish.remote(token, drain_s)
        return Replay(token, seed, epoch, times, samples, out["results"], out["send_lag_s"], final, time.time() - t0)


async def _awaitable(resp):
    return await resp
