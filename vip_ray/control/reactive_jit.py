"""The reactive policy's per-device scan compiled with numba (imported on first use, kernels
cached on disk like the ``jit`` engine's): the events a master sees of one device, in time order,
walked once beside the requests' departures — the same decisions as the numpy scan of
:func:`vip_ray.control.reactive.device_state` (a test holds them equal)."""
from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def scan(t, is_miss, is_reply, lat, arrival, streak0, ewma0, misses, alpha, slow_s, cut,
         stop):   # pragma: no cover - compiled
    """Fills ``stop`` (R,); returns (streak, ewma) after the events up to ``cut`` and the index of
    the first later event."""
    streak = streak0
    ewma = ewma0
    k = 0
    n = len(t)
    for i in range(len(arrival)):
        a = arrival[i]
        while k < n and t[k] <= a:
            if is_reply[k]:
                streak = 0
                start = lat[k] if ewma != ewma else ewma
                ewma = alpha * lat[k] + (1.0 - alpha) * start
            elif is_miss[k]:
                streak += 1
            k += 1
        stop[i] = streak >= misses or (ewma == ewma and ewma > slow_s)
    while k < n and t[k] <= cut:
        if is_reply[k]:
            streak = 0
            start = lat[k] if ewma != ewma else ewma
            ewma = alpha * lat[k] + (1.0 - alpha) * start
        elif is_miss[k]:
            streak += 1
        k += 1
    return streak, ewma, k
