"""The reactive policy's per-device scan compiled with numba (imported on first use, kernels
cached on disk like the ``jit`` engine's): the events a master sees of one device, in time order,
walked once beside the requests' departures — the same decisions as the numpy scan of
:func:`vip_ray.control.reactive.device_state` (a test holds them equal)."""
from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def _walk(t, is_miss, is_reply, lat, k, until, streak, ewma, alpha):   # pragma: no cover - compiled
    """The events from index ``k`` up to time ``until``: the miss streak and the latency EWMA
    after them, and the index of the first later event."""
    n = len(t)
    while k < n and t[k] <= until:
        if is_reply[k]:
            streak = 0
            start = lat[k] if ewma != ewma else ewma
            ewma = alpha * lat[k] + (1.0 - alpha) * start
        elif is_miss[k]:
            streak += 1
        k += 1
    return streak, ewma, k


@njit(cache=True, nogil=True)
def scan(t, is_miss, is_reply, lat, arrival, streak0, ewma0, misses, alpha, slow_s, cut,
         stop):   # pragma: no cover - compiled
    """Fills ``stop`` (R,); returns (streak, ewma) after the events up to ``cut`` and the index of
    the first later event."""
    streak = streak0
    ewma = ewma0
    k = 0
    for i in range(len(arrival)):
        streak, ewma, k = _walk(t, is_miss, is_reply, lat, k, arrival[i], streak, ewma, alpha)
        stop[i] = streak >= misses or (ewma == ewma and ewma > slow_s)
    return _walk(t, is_miss, is_reply, lat, k, cut, streak, ewma, alpha)
