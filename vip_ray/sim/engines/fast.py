"""The ``loop`` engine (``fast`` dispatches here below ``FAST_NUMPY_FROM`` devices): no event loop,
per-device recursions over the requests in arrival order.

With this model the devices never interact: each device has its own downlink FIFO, queue and
uplink FIFO, and a shared medium's broadcast timeline does not depend on any device. So every
FIFO is advanced by a Lindley-style recursion (``start = max(ready, free)``) over the pre-drawn
availability windows, one device at a time, chunk by chunk. Every time is computed with the same
float operations, in the same order, as the reference SimPy engine (``now + delay``), which is what
makes the two engines' per-request arrays bit-for-bit equal:

* link:    ``s = max(ready, free)``; ``end = s + bits/rate`` (a bandwidth step at ``t`` inside the
           transfer: ``s' = s + (t - s)``, ``bits -= (s' - s) * rate``, continue at the new rate:
           :func:`vip_ray.core.netmodel.transfer_end`, shared with the Serve emulation); arrival at the
           other end ``end + rtt/2``.
* device:  ``s = max(arrival, free)``, moved to the next window start if the device is down;
           ``end = s + rem``; completed iff ``end <= V`` (window end), else preempted at ``V``
           (``rem = rem - (V - s)``, resume at the next window start, or dropped / crashed).
Identical downlink profiles are computed once per chunk (the timeline only depends on the
arrival times, the input size and the bandwidth profile).
"""
from __future__ import annotations

from array import array
from typing import Iterator

import numpy as np

from vip_ray.core.netmodel import transfer_end

from ..random_streams import DeviceDraws, Windows, bandwidth_steps, shared_medium_steps
from ..result import SimResult, empty_device_stats
from vip_ray.core.world import SimSpec, arrival_workload, merged_requests
from .common import (INF, _CRASHED, _DROPPED, _LOST_DOWN, _LOST_UP, _NOT_SENT, _REPLIED, _SKIPPED, _UNPLACED,
                     advance_window, arrival_chunks, chunk_result)


_INF1 = (INF,)


class _Channel:
    """FIFO serialisation state of one link direction (or of a shared profile)."""

    __slots__ = ("times", "rates", "free", "p")

    def __init__(self, times, rates):
        self.times = times
        self.rates = rates
        self.free = 0.0
        self.p = 0

    def run(self, ready, nbytes: int):
        """End-of-transmission times for transmissions ready at ``ready`` (a list, FIFO order)."""
        bits = float(nbytes * 8)
        times, rates = self.times, self.rates
        free = self.free
        out = []
        ap = out.append
        if len(times) == 1:
            dur = bits / rates[0]
            for a in ready:
                free = (a if a > free else free) + dur
                ap(free)
            self.free = free
            return out
        L = len(times)
        p = self.p
        for a in ready:
            s = a if a > free else free
            while p + 1 < L and times[p + 1] <= s:
                p += 1
            free = transfer_end(s, bits, times, rates, p)
            ap(free)
        self.free = free
        self.p = p
        return out


class _DeviceState:
    __slots__ = ("spec", "index", "draws", "win", "meter", "free", "k", "sp", "up", "half",
                 "failure", "drop_mode", "simple", "slot_starts", "slot_svc", "slot_var", "slot_placed",
                 "last_end", "down_key")

    def __init__(self, spec, index, seed):
        self.spec = spec
        self.index = index
        self.draws = DeviceDraws(spec, index, seed)
        av = spec.availability
        self.failure = av.kind in ("crash", "mtbf")
        self.drop_mode = av.kind in ("onoff", "trace") and av.mode == "drop"
        self.win = Windows(av, index, seed)
        self.meter = Windows(av, index, seed)
        self.free = 0.0
        self.k = 0
        self.sp = 0
        slots = spec.timeline()
        self.slot_starts = [s.start_s for s in slots]
        self.slot_svc = [s.service_s for s in slots]
        self.slot_var = [s.variant for s in slots]
        self.slot_placed = [s.placed for s in slots]
        self.simple = av.kind == "always" and len(slots) == 1 and slots[0].placed and not spec.drop_expired
        self.last_end = 0.0
        if spec.link is not None:
            times, rates = bandwidth_steps(spec.link)
            self.up = _Channel(times, rates)
            self.half = spec.link.rtt_s / 2.0
            self.down_key = (tuple(times), tuple(rates))
        else:
            self.up = None
            self.half = 0.0
            self.down_key = None


def _serve_simple(st, tdev, mult, stats, d):
    """Always available, one slot, no drop_expired: plain Lindley recursion."""
    svc = (st.slot_svc[0] * mult).tolist()
    free = st.free
    free0 = free
    comp = []
    ap = comp.append
    busy = 0.0
    for t, sv in zip(tdev, svc):
        s = t if t > free else free
        free = s + sv
        busy += free - s
        ap(free)
    st.free = free
    n = len(comp)
    if n and free > st.last_end:
        st.last_end = free
    stats["served"][d] += n
    stats["busy_s"][d] += busy
    # service starts: max(arrival at the device, the previous job's end), the loop's own float op
    prev = np.empty(n)
    if n:
        prev[0] = free0
        prev[1:] = comp[:-1]
    start = np.maximum(np.asarray(tdev, dtype=np.float64), prev)
    return [_REPLIED] * n, comp, [st.slot_var[0]] * n, start, None


def _serve_general(st, tdev, mult, deadline_at, stats, d):
    win = st.win
    U, V = win.U, win.V
    k, free, sp = st.k, st.free, st.sp
    starts, svcs, vars_, placed = st.slot_starts, st.slot_svc, st.slot_var, st.slot_placed
    nsl = len(starts)
    failure, drop_mode = st.failure, st.drop_mode
    drop_expired = st.spec.drop_expired
    mult = mult.tolist()
    n = len(tdev)
    code = [_REPLIED] * n
    comp = [INF] * n
    var = [-1] * n
    # service start of each job: C doubles (a list would keep a float object per job alive, and the
    # allocator's churn slows the whole loop down by half)
    first = array("d", _INF1) * n
    paused = None              # time paused by the owner's work (preempt-resume only)
    busy = 0.0
    served = preempted = dropped = crashed = skipped = unplaced = 0
    last_end = st.last_end
    for j in range(n):
        t = tdev[j]
        if failure:
            while V[k] <= t:
                k += 1
                if k == len(V):
                    win.extend()
            if t < U[k]:                       # arrived while the device is down
                code[j] = _CRASHED
                crashed += 1
                if t > last_end:
                    last_end = t
                continue
            s = t if t > free else free
            if s >= V[k]:                      # the device failed while the job was queued
                code[j] = _CRASHED
                crashed += 1
                free = s
                if s > last_end:
                    last_end = s
                continue
        else:
            s = t if t > free else free
            if V[k] <= s or s < U[k]:
                k, s = advance_window(win, k, s)
        while sp + 1 < nsl and starts[sp + 1] <= s:
            sp += 1
        if not placed[sp]:                     # no variant placed: not served
            code[j] = _UNPLACED
            unplaced += 1
            free = s
            if s > last_end:
                last_end = s
            continue
        if drop_expired and s > deadline_at[j]:
            code[j] = _SKIPPED
            skipped += 1
            free = s
            if s > last_end:
                last_end = s
            continue
        rem = svcs[sp] * mult[j]
        var[j] = vars_[sp]
        first[j] = s
        while True:
            end = s + rem
            v = V[k]
            if end <= v:
                busy += end - s
                free = end
                comp[j] = end
                served += 1
                break
            busy += v - s
            free = v
            if failure:
                code[j] = _CRASHED
                crashed += 1
                break
            rem = rem - (v - s)
            preempted += 1
            if drop_mode:
                code[j] = _DROPPED
                dropped += 1
                break
            k, s = advance_window(win, k, v)
            if paused is None:
                paused = np.zeros(n)
            paused[j] += s - v
        if free > last_end:
            last_end = free
    # forget consumed windows (keeps memory flat)
    if k > 0:
        win.trim(k)
        k = 0
    st.k, st.free, st.sp, st.last_end = k, free, sp, last_end
    stats["served"][d] += served
    stats["busy_s"][d] += busy
    stats["preempted"][d] += preempted
    stats["dropped"][d] += dropped
    stats["crashed"][d] += crashed
    stats["skipped"][d] += skipped
    stats["unplaced"][d] += unplaced
    return code, comp, var, np.frombuffer(first, dtype=np.float64), paused


def run_fast_chunks(spec: SimSpec, chunk_requests: int = 100_000) -> Iterator[SimResult]:
    if chunk_requests <= 0:
        raise ValueError(f"chunk_requests must be > 0, got {chunk_requests!r}")
    wl = arrival_workload(spec)
    D = len(spec.devices)
    owner = reach = None
    if spec.masters:  # multi-master: each request reaches its master's devices only
        _, owner, reach = merged_requests(spec)
    states = [_DeviceState(dev, d, spec.seed) for d, dev in enumerate(spec.devices)]
    names = tuple(dev.name for dev in spec.devices)
    n_net = sum(1 for dev in spec.devices if dev.link is not None)
    msteps = shared_medium_steps(spec)
    medium = _Channel(*msteps) if msteps is not None else None
    down_channels = {}
    if medium is None and owner is None:
        for st in states:
            if st.down_key is not None and st.down_key not in down_channels:
                down_channels[st.down_key] = _Channel(list(st.down_key[0]), list(st.down_key[1]))
    per_request_down = wl.input_bytes * (1 if medium is not None else n_net) if n_net else 0
    if owner is not None:
        # each device's own downlink FIFO carries only its masters' inputs
        own_down = [_Channel(list(st.down_key[0]), list(st.down_key[1])) for st in states]
        per_master_down = wl.input_bytes * (np.ones(len(reach), np.int64) if medium is not None
                                            else reach.sum(axis=1))
    in_bytes = wl.input_bytes
    meters = [st.meter for st in states]
    for chunk in arrival_chunks(wl, spec.seed, chunk_requests):
        times, alist, n, deadline_at = chunk.times, chunk.alist, chunk.n, chunk.deadline_at
        reply = np.full((n, D), INF)
        variant = np.full((n, D), -1, dtype=np.int32)
        outcome = np.zeros((n, D), dtype=np.int8)
        bytes_up = np.zeros(n, dtype=np.int64)
        # stage times, one contiguous row per device (handed out transposed: (n, D) views); a row
        # is filled with inf / 0 only where some of its jobs never reach the device
        ready_at, start_at, end_at = np.empty((D, n)), np.empty((D, n)), np.empty((D, n))
        paused_s = np.zeros((D, n))
        stats = empty_device_stats(D)
        sent = None
        if owner is not None:
            rows_master = owner[chunk.offset:chunk.offset + n]
            sent = reach[rows_master]
            outcome[~sent] = _NOT_SENT
            per_request_down = per_master_down[rows_master]
        # downlink timelines: the shared medium, or one per distinct link profile
        down_end = {}
        if medium is not None:
            down_end[None] = np.asarray(medium.run(alist, in_bytes), dtype=np.float64)
        elif sent is None:
            for key, ch in down_channels.items():
                down_end[key] = np.asarray(ch.run(alist, in_bytes), dtype=np.float64)
        for d, st in enumerate(states):
            dev = st.spec
            down_lost, mult, up_lost = st.draws.take(n)
            if sent is not None:
                idx = np.flatnonzero(sent[:, d])
                if medium is not None:
                    tdev_arr = down_end[None][idx] + st.half
                else:
                    tdev_arr = np.asarray(own_down[d].run(times[idx].tolist(), in_bytes), dtype=np.float64) + st.half
                if down_lost is not None:
                    lost = down_lost[idx]
                    outcome[idx[lost], d] = _LOST_DOWN
                    stats["lost_down"][d] += int(lost.sum())
                    tdev_arr = tdev_arr[~lost]
                    idx = idx[~lost]
                mult = mult[idx]
            elif dev.link is None:
                tdev_arr = times
                idx = None
            else:
                ends = down_end[None] if medium is not None else down_end[st.down_key]
                tdev_arr = ends + st.half
                if down_lost is not None:
                    idx = np.flatnonzero(~down_lost)
                    outcome[down_lost, d] = _LOST_DOWN
                    stats["lost_down"][d] += int(down_lost.sum())
                    tdev_arr = tdev_arr[idx]
                    mult = mult[idx]
                else:
                    idx = None
            tdev = tdev_arr.tolist()
            stats["jobs"][d] += len(tdev)
            if st.simple:
                code, comp, var, first, paused = _serve_simple(st, tdev, mult, stats, d)
            else:
                dl = (deadline_at if idx is None else deadline_at[idx]).tolist()
                code, comp, var, first, paused = _serve_general(st, tdev, mult, dl, stats, d)
            code = np.asarray(code, dtype=np.int8)
            comp = np.asarray(comp, dtype=np.float64)
            var = np.asarray(var, dtype=np.int32)
            if idx is None:
                idx = np.arange(len(tdev))
            variant[idx, d] = var
            if len(idx) == n:
                ready_at[d], start_at[d], end_at[d] = tdev_arr, first, comp
            else:
                ready_at[d], start_at[d], end_at[d] = INF, INF, INF
                ready_at[d, idx], start_at[d, idx], end_at[d, idx] = tdev_arr, first, comp
            if paused is not None:
                paused_s[d, idx] = paused
            ok = code == _REPLIED
            if st.up is None:
                col = np.where(ok, comp, INF)
            else:
                sidx = np.flatnonzero(ok)
                if len(sidx):
                    ue = np.asarray(st.up.run(comp[sidx].tolist(), dev.reply_bytes))
                    rep = ue + st.half
                    ridx = idx[sidx]
                    bytes_up[ridx] += dev.reply_bytes
                    if up_lost is not None:
                        lost = up_lost[ridx]
                        code[sidx[lost]] = _LOST_UP
                        stats["lost_up"][d] += int(lost.sum())
                        rep = np.where(lost, INF, rep)
                    col = np.full(len(tdev), INF)
                    col[sidx] = rep
                else:
                    col = np.full(len(tdev), INF)
            reply[idx, d] = col
            outcome[idx, d] = code
        yield chunk_result(
            chunk, deadline_s=wl.deadline_s, last_end=max((st.last_end for st in states), default=0.0),
            meters=meters, stats=stats, reply_at=reply, variant=variant, outcome=outcome,
            per_request_down=per_request_down, bytes_up=bytes_up, names=names, engine="loop",
            stages=(ready_at.T, start_at.T, end_at.T, paused_s.T))
