"""Vectorised engine: the ``fast`` recursions, advanced one request at a time for all devices at once.

Same model, same float operations as ``fast`` and ``reference`` (bit-identical arrays), but the
state of every device is held in numpy vectors and each request's step is ~20 vector operations:
``s = max(arrival, free)``, ``s = max(s, window start)``, ``end = s + rem``, ``end <= window end``,
the uplink ``max(end, uplink free) + bits/rate``. Rare cases — a device whose current availability
window is over, a preemption or failure, a slot change, a transmission crossing a bandwidth step —
fall back, for that device only, to the scalar step of ``fast``. The per-request cost is nearly
flat in the device count, so this wins at hundreds of devices and loses at a handful.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from vip_ray.core.netmodel import transfer_end

from ..random_streams import DeviceDraws, Windows, bandwidth_steps, shared_medium_steps
from ..result import SimResult, empty_device_stats
from vip_ray.core.world import SimSpec
from .common import (INF, _CRASHED, _DROPPED, _LOST_DOWN, _LOST_UP, _REPLIED, _SKIPPED, _UNPLACED,
                     advance_window, arrival_chunks, chunk_result)
from .fast import _Channel


class _State:
    """Vector state of all devices plus the per-device objects the scalar fallbacks need."""

    def __init__(self, spec: SimSpec):
        D = len(spec.devices)
        self.D = D
        self.specs = spec.devices
        self.draws = [DeviceDraws(dev, d, spec.seed) for d, dev in enumerate(spec.devices)]
        self.win = [Windows(dev.availability, d, spec.seed) for d, dev in enumerate(spec.devices)]
        self.meter = [Windows(dev.availability, d, spec.seed) for d, dev in enumerate(spec.devices)]
        self.k = [0] * D
        self.free = np.zeros(D)
        self.U = np.array([w.U[0] for w in self.win])
        self.V = np.array([w.V[0] for w in self.win])
        self.failure = np.array([dev.availability.kind in ("crash", "mtbf") for dev in spec.devices])
        self.any_failure = bool(self.failure.any())
        self.drop_mode = [dev.availability.kind in ("onoff", "trace") and dev.availability.mode == "drop"
                          for dev in spec.devices]
        self.dexp = np.array([dev.drop_expired for dev in spec.devices])
        self.any_dexp = bool(self.dexp.any())
        # slots (vectors hold the current slot; unplaced slots: svc 0, var -1, placed False)
        tl = [dev.timeline() for dev in spec.devices]
        self.slot_starts = [[s.start_s for s in t] for t in tl]
        self.slot_svc = [[s.service_s for s in t] for t in tl]
        self.slot_var = [[s.variant for s in t] for t in tl]
        self.slot_placed = [[s.placed for s in t] for t in tl]
        self.sp = [0] * D
        self.svc = np.array([t[0].service_s if t[0].placed else 0.0 for t in tl])
        self.var = np.array([t[0].variant if t[0].placed else -1 for t in tl], dtype=np.int32)
        self.placed = np.array([t[0].placed for t in tl])
        self.next_slot = np.array([st[1] if len(st) > 1 else INF for st in self.slot_starts])
        self.any_slots = bool(np.isfinite(self.next_slot).any())
        self.any_unplaced = any(not p for pl in self.slot_placed for p in pl)
        # uplinks (local devices: no uplink, zero duration, zero propagation)
        self.up = [None] * D
        self.half = np.zeros(D)
        self.up_free = np.zeros(D)
        self.up_dur = np.zeros(D)
        self.up_nxt = np.full(D, INF)
        self.up_p = [0] * D
        self.up_bits = [0.0] * D
        self.down_key = [None] * D
        for d, dev in enumerate(spec.devices):
            if dev.link is None:
                continue
            times, rates = bandwidth_steps(dev.link)
            self.up[d] = (times, rates)
            self.half[d] = dev.link.rtt_s / 2.0
            bits = float(dev.reply_bytes * 8)
            self.up_bits[d] = bits
            self.up_dur[d] = bits / rates[0]
            self.up_nxt[d] = times[1] if len(times) > 1 else INF
            self.down_key[d] = (tuple(times), tuple(rates))
        self.last_end = np.zeros(D)
        self.preempted = np.zeros(D, dtype=np.int64)
        self.busy_slow = np.zeros(D)

    # -- scalar fallbacks (the same operations as fast._serve_general / fast._Channel.run) ----
    def _advance(self, d, s):
        """Move device d's window pointer so that s is inside or before window k; return the
        adjusted start (preempt kinds)."""
        win = self.win[d]
        k, s = advance_window(win, self.k[d], s)
        U, V = win.U, win.V
        self.k[d] = k
        self.U[d] = U[k]
        self.V[d] = V[k]
        return s

    def device_step(self, d, t, mult, deadline_at):
        """One job of device d, scalar. Returns (code, start, end, variant); end is the completion
        time (only meaningful when code == REPLIED)."""
        free = float(self.free[d])
        win = self.win[d]
        U, V = win.U, win.V
        if self.failure[d]:
            k = self.k[d]
            while V[k] <= t:
                k += 1
                if k == len(V):
                    win.extend()
            self.k[d] = k
            self.U[d] = U[k]
            self.V[d] = V[k]
            if t < U[k]:
                if t > self.last_end[d]:
                    self.last_end[d] = t
                return _CRASHED, t, t, -1
            s = t if t > free else free
            if s >= V[k]:
                self.free[d] = s
                if s > self.last_end[d]:
                    self.last_end[d] = s
                return _CRASHED, s, s, -1
        else:
            s = t if t > free else free
            s = self._advance(d, s)
        starts = self.slot_starts[d]
        sp = self.sp[d]
        while sp + 1 < len(starts) and starts[sp + 1] <= s:
            sp += 1
        if sp != self.sp[d]:
            self.sp[d] = sp
            pl = self.slot_placed[d][sp]
            self.placed[d] = pl
            self.svc[d] = self.slot_svc[d][sp] if pl else 0.0
            self.var[d] = self.slot_var[d][sp] if pl else -1
            self.next_slot[d] = starts[sp + 1] if sp + 1 < len(starts) else INF
        if not self.slot_placed[d][sp]:
            self.free[d] = s
            if s > self.last_end[d]:
                self.last_end[d] = s
            return _UNPLACED, s, s, -1
        if self.dexp[d] and s > deadline_at:
            self.free[d] = s
            if s > self.last_end[d]:
                self.last_end[d] = s
            return _SKIPPED, s, s, -1
        rem = self.slot_svc[d][sp] * mult
        var = self.slot_var[d][sp]
        code = _REPLIED
        s0 = s
        self.last_paused = 0.0     # time this job waited for the owner's work to end (resume mode)
        while True:
            end = s + rem
            k = self.k[d]
            v = V[k]
            if end <= v:
                self.busy_slow[d] += end - s
                free = end
                break
            self.busy_slow[d] += v - s
            free = v
            if self.failure[d]:
                code = _CRASHED
                break
            rem = rem - (v - s)
            self.preempted[d] += 1
            if self.drop_mode[d]:
                code = _DROPPED
                break
            s = self._advance(d, v)
            self.last_paused += s - v
        self.free[d] = free
        if free > self.last_end[d]:
            self.last_end[d] = free
        return code, s0, free, var

    def up_step(self, d, ready):
        """One uplink transmission of device d, scalar; returns its end time."""
        times, rates = self.up[d]
        L = len(times)
        free = float(self.up_free[d])
        s = ready if ready > free else free
        p = self.up_p[d]
        while p + 1 < L and times[p + 1] <= s:
            p += 1
        if p != self.up_p[d]:
            self.up_p[d] = p
            self.up_dur[d] = self.up_bits[d] / rates[p]
            self.up_nxt[d] = times[p + 1] if p + 1 < L else INF
        free = transfer_end(s, self.up_bits[d], times, rates, p)
        self.up_free[d] = free
        return free

    def trim(self):
        for d, w in enumerate(self.win):
            if self.k[d] > 0:
                w.trim(self.k[d])
                self.k[d] = 0


def run_numpy_chunks(spec: SimSpec, chunk_requests: int = 100_000) -> Iterator[SimResult]:
    wl = spec.workload
    st = _State(spec)
    D = st.D
    names = tuple(dev.name for dev in spec.devices)
    net = np.array([dev.link is not None for dev in spec.devices])
    n_net = int(net.sum())
    msteps = shared_medium_steps(spec)
    medium = _Channel(*msteps) if msteps is not None else None
    channels = {}
    profile_cols = {}
    for d, key in enumerate(st.down_key):
        if key is None:
            continue
        k2 = None if medium is not None else key
        profile_cols.setdefault(k2, []).append(d)
        if medium is None and key not in channels:
            channels[key] = _Channel(list(key[0]), list(key[1]))
    if medium is not None:
        channels[None] = medium
    profile_cols = {k: np.array(v) for k, v in profile_cols.items()}
    local_cols = np.flatnonzero(~net)
    per_request_down = wl.input_bytes * (1 if medium is not None else n_net) if n_net else 0
    reply_bytes = np.array([dev.reply_bytes if dev.link is not None else 0 for dev in spec.devices], dtype=np.int64)
    uses_fallback_up = any(up is not None and len(up[0]) > 1 for up in st.up)

    for chunk in arrival_chunks(wl, spec.seed, chunk_requests):
        times, alist, n, deadline_at = chunk.times, chunk.alist, chunk.n, chunk.deadline_at
        # ---- per-chunk matrices (rows: requests, columns: devices)
        TDEV = np.empty((n, D))
        if len(local_cols):
            TDEV[:, local_cols] = times[:, None]
        for key, cols in profile_cols.items():
            ends = np.asarray(channels[key].run(alist, wl.input_bytes)) if n else np.empty(0)
            TDEV[:, cols] = ends[:, None] + st.half[cols]
        MULT = np.empty((n, D))
        DLOST = np.zeros((n, D), dtype=bool)
        ULOST = np.zeros((n, D), dtype=bool)
        any_dlost = any_ulost = False
        for d in range(D):
            down, mult, up = st.draws[d].take(n)
            MULT[:, d] = mult
            if down is not None:
                DLOST[:, d] = down
                any_dlost = True
            if up is not None:
                ULOST[:, d] = up
                any_ulost = True
        ARRIVED = ~DLOST
        CODE = np.full((n, D), _REPLIED, dtype=np.int8)
        CODE[DLOST] = _LOST_DOWN
        VAR = np.full((n, D), -1, dtype=np.int32)
        START = np.zeros((n, D))
        END = np.zeros((n, D))
        FAST = np.zeros((n, D), dtype=bool)
        COMP = np.zeros((n, D), dtype=bool)
        REPLY = np.full((n, D), INF)
        PAUSED = np.zeros((n, D))
        # ---- the request loop
        free, U, V = st.free, st.U, st.V
        wins, ks, failure = st.win, st.k, st.failure
        for i in range(n):
            t = TDEV[i]
            s_raw = np.maximum(t, free)
            s = np.maximum(s_raw, U)
            # windows that are over: step the pointers (cheap loop over those devices only)
            key = np.where(failure, t, s) if st.any_failure else s
            adv = key >= V
            if any_dlost:
                adv &= ARRIVED[i]
            while adv.any():
                for d in np.flatnonzero(adv).tolist():
                    w = wins[d]
                    k = ks[d] + 1
                    if k == len(w.V):
                        w.extend()
                    ks[d] = k
                    U[d] = w.U[k]
                    V[d] = w.V[k]
                s = np.maximum(s_raw, U)
                key = np.where(failure, t, s) if st.any_failure else s
                adv &= key >= V
            ok = s < V
            if any_dlost:
                ok &= ARRIVED[i]
            if st.any_failure:
                ok &= ~st.failure | (t >= U)
            if st.any_slots:
                ok &= s < st.next_slot
            end = s + st.svc * MULT[i]
            handled = None
            if st.any_unplaced:
                unpl = ok & ~st.placed
                ok &= st.placed
                np.copyto(free, s, where=unpl)
                np.copyto(CODE[i], _UNPLACED, where=unpl)
                handled = unpl
            if st.any_dexp:
                skip = ok & st.dexp & (s > deadline_at[i])
                done = ok & ~skip & (end <= V)
                np.copyto(free, s, where=skip)
                np.copyto(CODE[i], _SKIPPED, where=skip)
                handled = done | skip if handled is None else handled | done | skip
            else:
                done = ok & (end <= V)
                handled = done if handled is None else handled | done
            np.copyto(free, end, where=done)
            START[i] = s
            END[i] = end
            FAST[i] = done
            comp = done.copy()
            rest = np.flatnonzero(~handled & ARRIVED[i]) if any_dlost else np.flatnonzero(~handled)
            if len(rest):
                ti, mi, dl = TDEV[i], MULT[i], float(deadline_at[i])
                for d in rest.tolist():
                    code, s0, e, var = st.device_step(d, float(ti[d]), float(mi[d]), dl)
                    CODE[i, d] = code
                    VAR[i, d] = var
                    START[i, d] = s0
                    if var >= 0 and st.last_paused:
                        PAUSED[i, d] = st.last_paused
                    if code == _REPLIED:
                        END[i, d] = e
                        comp[d] = True
            np.copyto(VAR[i], st.var, where=done)
            np.maximum(st.last_end, free, out=st.last_end)
            # uplink FIFO (local devices: zero duration, so reply == end)
            e = END[i]
            us = np.maximum(e, st.up_free)
            ue = us + st.up_dur
            if uses_fallback_up:
                uok = comp & (us < st.up_nxt) & (ue <= st.up_nxt)
            else:
                uok = comp
            np.copyto(st.up_free, ue, where=uok)
            REPLY[i] = np.where(uok, ue + st.half, INF)
            if uses_fallback_up:
                for d in np.flatnonzero(comp & ~uok).tolist():
                    REPLY[i, d] = st.up_step(d, float(e[d])) + st.half[d]
            COMP[i] = comp
        # ---- chunk outputs and stats
        stats = empty_device_stats(D)
        if len(local_cols):
            REPLY[:, local_cols] = np.where(COMP[:, local_cols], END[:, local_cols], INF)
        if any_ulost:
            lost = ULOST & COMP & net[None, :]
            REPLY[lost] = INF
            CODE[lost] = _LOST_UP
            stats["lost_up"] += lost.sum(axis=0)
        bytes_up = (COMP * reply_bytes[None, :]).sum(axis=1).astype(np.int64)
        busy_fast = np.subtract(END, START, out=np.zeros((n, D)), where=FAST).sum(axis=0)
        stats["jobs"] += ARRIVED.sum(axis=0)
        stats["lost_down"] += DLOST.sum(axis=0)
        stats["served"] += COMP.sum(axis=0)
        stats["busy_s"] += busy_fast + st.busy_slow
        st.busy_slow[:] = 0.0
        stats["preempted"] += st.preempted
        st.preempted[:] = 0
        stats["dropped"] += (CODE == _DROPPED).sum(axis=0)
        stats["crashed"] += (CODE == _CRASHED).sum(axis=0)
        stats["skipped"] += (CODE == _SKIPPED).sum(axis=0)
        stats["unplaced"] += (CODE == _UNPLACED).sum(axis=0)
        st.trim()
        # stage times: inf where the job never got there (the matrices become the outputs in place)
        np.copyto(TDEV, INF, where=DLOST)
        np.copyto(START, INF, where=VAR < 0)
        np.copyto(END, INF, where=~COMP)
        yield chunk_result(
            chunk, deadline_s=wl.deadline_s, last_end=float(st.last_end.max()) if D else 0.0,
            meters=st.meter, stats=stats, reply_at=REPLY, variant=VAR, outcome=CODE,
            per_request_down=per_request_down, bytes_up=bytes_up, names=names, engine="numpy",
            stages=(TDEV, START, END, PAUSED))
