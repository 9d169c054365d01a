"""Pieces shared by the ``loop`` (``fast.py``) and ``numpy`` engines: the chunk driver (arrivals
handed out chunk by chunk, the chunk's time span, the ``SimResult`` assembly) and the scalar
availability-window advance."""
from __future__ import annotations

import math
import time
from typing import Iterator, Optional, Sequence

import numpy as np

from ..random_streams import Arrivals, Windows
from ..result import Outcome, SimResult

INF = math.inf
# outcome codes as plain ints (what the engines' per-request lists hold)
_REPLIED = int(Outcome.REPLIED)
_LOST_DOWN = int(Outcome.LOST_DOWN)
_CRASHED = int(Outcome.CRASHED)
_DROPPED = int(Outcome.PREEMPT_DROPPED)
_SKIPPED = int(Outcome.EXPIRED_SKIPPED)
_LOST_UP = int(Outcome.LOST_UP)
_UNPLACED = int(Outcome.UNPLACED)
_NOT_SENT = int(Outcome.NOT_SENT)


class Chunk:
    """One chunk of arrivals, and where it sits in the run."""

    __slots__ = ("t0", "times", "alist", "n", "deadline_at", "offset", "t_start", "next_start")

    def __init__(self, t0: float, times: np.ndarray, deadline_s: float, offset: int, t_start: float,
                 next_start: Optional[float]):
        self.t0 = t0                          # perf_counter at the start of the chunk's work
        self.times = times                    # arrival times (float64 array)
        self.alist = times.tolist()
        self.n = len(times)
        self.deadline_at = times + deadline_s
        self.offset = offset                  # request id of the chunk's first request
        self.t_start = t_start                # start of the chunk's time span
        self.next_start = next_start          # first arrival of the next chunk (None: last chunk)


def arrival_chunks(wl, seed: int, chunk_requests: int) -> Iterator[Chunk]:
    """The arrivals of the run, ``chunk_requests`` at a time (at least one chunk, maybe empty)."""
    arr = Arrivals(wl, seed)
    offset = 0
    t_start = 0.0
    _, nxt_times = arr.take(chunk_requests)
    first = True
    while first or len(nxt_times):
        first = False
        t0 = time.perf_counter()
        times = nxt_times
        _, nxt_times = arr.take(chunk_requests)
        next_start = float(nxt_times[0]) if len(nxt_times) else None
        yield Chunk(t0, times, wl.deadline_s, offset, t_start, next_start)
        offset += len(times)
        t_start = next_start


def chunk_result(chunk: Chunk, *, deadline_s: float, last_end: float, meters: Sequence[Windows],
                 stats: dict, reply_at: np.ndarray, variant: np.ndarray, outcome: np.ndarray,
                 per_request_down: int, bytes_up: np.ndarray, names, engine: str, stages=None) -> SimResult:
    """The chunk's ``SimResult`` (``stages``: the (n, D) arrays ready_at, start_at, end_at,
    paused_s); its time span ends at the next chunk's first arrival, or (last
    chunk) when the last request's deadline has passed and every device is done; ``available_s``
    is metered over that span."""
    n = chunk.n
    if chunk.next_start is not None:
        t_end = chunk.next_start
    else:
        t_end = max(chunk.alist[-1] + deadline_s, last_end) if n else max(chunk.t_start, last_end)
    for d, meter in enumerate(meters):
        stats["available_s"][d] = meter.available_time(chunk.t_start, t_end, trim=True)
    return SimResult(
        request_id=np.arange(chunk.offset, chunk.offset + n, dtype=np.int64), arrival=chunk.times,
        reply_at=reply_at, variant=variant, outcome=outcome,
        bytes_down=np.broadcast_to(np.asarray(per_request_down, dtype=np.int64), (n,)).copy(), bytes_up=bytes_up,
        device_stats=stats, events=0, wall_s=time.perf_counter() - chunk.t0,
        t_start=chunk.t_start, t_end=t_end, device_names=names, engine=engine,
        **(dict(zip(("ready_at", "start_at", "end_at", "paused_s"), stages)) if stages is not None else {}))


def advance_window(win: Windows, k: int, s: float):
    """Preempt kinds: move the window pointer ``k`` so that ``s`` lies inside window ``k``, moving
    ``s`` to the window's start if the device is down then. Returns ``(k, s)``. Callers in hot
    loops test ``V[k] <= s or s < U[k]`` first (nothing to do otherwise)."""
    U, V = win.U, win.V
    while True:
        while V[k] <= s:
            k += 1
            if k == len(V):
                win.extend()
        if s < U[k]:
            s = U[k]
            continue
        break
    return k, s
