"""The ``jit`` engine: the ``loop`` engine's per-device recursions compiled to machine code with numba.

Same model and the same float operations, in the same order, as ``loop`` (``fast.py``) and the
SimPy ``reference``, so the per-request arrays are bit-for-bit equal (no ``fastmath``): per device,
``start = max(ready, free)`` moved into the availability window, ``end = start + rem``, completed iff
``end <= window end`` else preempted / dropped / crashed; links through
:func:`vip_ray.core.netmodel.transfer_end`'s recursion. What changes is who runs the loops:

* random numbers come from the generators every engine uses (:class:`~vip_ray.core.streams.DeviceDraws`'
  streams, :func:`~vip_ray.core.streams.availability_durations`' periods), drawn by numpy in bulk
  straight into the kernel's arrays (:class:`_Draws`, :class:`_PeriodDurations`), the generators
  seeded in bulk (:func:`seed_words`); the lognormal ``exp`` stays numpy's (numba's ``exp`` may
  differ in the last bit);
* the downlink timelines (one per distinct link profile, or the shared medium) and every device's
  queue and uplink run compiled: devices in blocks (a block's draws are consumed while in cache),
  requests in tiles of ``TILE`` (the row-major ``(request, device)`` outputs stay in cache);
* availability windows live in a ``(devices, windows)`` array, grown on demand: when a device needs
  a window not yet drawn the kernel stops *before* that job (nothing of it committed), Python draws
  more, and the kernel resumes at that job.

Every spec feature of :mod:`vip_ray.core.world` is supported, multi-master worlds included (a
request's jobs on the devices its master does not reach are ``NOT_SENT``; without a shared medium
each device's downlink carries only its own requests). A spec carrying a field this kernel
does not know (a feature added later) with a non-default value is refused with a ``ValueError``
naming it (:func:`check_supported`). The first call compiles the kernels (seconds) into numba's
on-disk cache (``cache=True``); later processes load them from there (``bench.sim`` section 0
measures both).
"""
# The kernels spell out ``a if a > b else b`` where max() would do: the same comparisons as the
# other engines, so ties and signed zeros resolve alike and the arrays stay bit-identical.
# ruff: noqa: FURB136, PLR1730
from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Iterator
from itertools import islice

import numpy as np
from numpy.random.bit_generator import ISeedSequence

from ..random_streams import (
    BlockStream,
    Purpose,
    _std_exp,
    availability_durations,
    bandwidth_steps,
    shared_medium_steps,
)
from ..result import SimResult, empty_device_stats
from vip_ray.core.world import (
    Availability,
    DeviceSpec,
    LinkSpec,
    SimSpec,
    VariantSlot,
    WorkloadSpec,
    arrival_workload,
    merged_requests,
)
from .common import (
    _CRASHED,
    _DROPPED,
    _LOST_DOWN,
    _LOST_UP,
    _NOT_SENT,
    _REPLIED,
    _SKIPPED,
    _UNPLACED,
    arrival_chunks,
    chunk_result,
)

try:
    import numba
except ImportError as exc:  # pragma: no cover - numba is a dependency; this names the fix
    numba = None
    _NUMBA_MISSING = f"engine 'jit' needs numba ({exc}); install it (pip install numba) or use engine 'numpy'"
else:
    _NUMBA_MISSING = ""

INF = math.inf

# The spec fields this kernel implements. A field outside these sets (added to the spec after this
# kernel was written) is refused unless it holds its default value (the feature is off).
KNOWN_FIELDS = {
    SimSpec: {"devices", "workload", "shared_medium", "seed", "masters"},
    # fallback and heartbeat (the master's rules), role, group, ray_resources and timing (live only) do not
    # change the jobs' timing
    WorkloadSpec: {"arrival", "rate_hz", "times", "n_requests", "duration_s", "deadline_s", "input_bytes",
                   "fallback", "heartbeat_s"},
    DeviceSpec: {"name", "slots", "service_dist", "jitter_cv", "straggler_prob", "straggler_factor",
                 "availability", "link", "reply_bytes", "drop_expired", "role", "group", "ray_resources",
                 "timing", "power", "battery_wh"},   # energy: computed after the run (battery: a crash by then)
    LinkSpec: {"rtt_s", "bandwidth_bps", "loss", "bandwidth_trace", "radio"},
    VariantSlot: {"start_s", "variant", "service_s"},
    Availability: {"kind", "busy_mean_s", "free_mean_s", "distribution", "weibull_shape", "intervals",
                   "crash_at_s", "mtbf_s", "mttr_s", "mode"},
}

# rows of the integer counter matrix the kernel updates
_COUNTERS = ("jobs", "served", "preempted", "dropped", "crashed", "skipped", "unplaced", "lost_down", "lost_up")


_EXTRA_FIELDS = {}   # type -> ((name, default), ...) of its fields outside KNOWN_FIELDS


def _extra_fields(cls):
    extra = _EXTRA_FIELDS.get(cls)
    if extra is None:
        known = next((names for base, names in KNOWN_FIELDS.items() if issubclass(cls, base)), set())
        extra = []
        for f in dataclasses.fields(cls):
            if f.name not in known:
                default = (f.default if f.default is not dataclasses.MISSING else
                           f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
                extra.append((f.name, default))
        extra = _EXTRA_FIELDS[cls] = tuple(extra)
    return extra


def _unknown_features(obj, where: str):
    """``(path, value)`` of each of ``obj``'s fields that the kernel does not know and that is not
    at its default."""
    return [(f"{where}.{name}", getattr(obj, name)) for name, default in _extra_fields(type(obj))
            if default is dataclasses.MISSING or getattr(obj, name) != default]


def check_supported(spec: SimSpec) -> None:
    """Raise ``ValueError`` naming the first spec feature the kernel does not implement."""
    found = _unknown_features(spec, "SimSpec") + _unknown_features(spec.workload, "SimSpec.workload")
    for d, dev in enumerate(spec.devices):
        w = f"SimSpec.devices[{d}]"
        found += _unknown_features(dev, w) + _unknown_features(dev.availability, f"{w}.availability")
        if dev.link is not None:
            found += _unknown_features(dev.link, f"{w}.link")
        for i, s in enumerate(dev.slots):
            found += _unknown_features(s, f"{w}.slots[{i}]")
    if found:
        path, v = found[0]
        raise ValueError(f"engine 'jit': {path} = {v!r} is a feature the jit kernel does not implement; "
                         f"use engine 'numpy' or 'reference'")


# ----------------------------------------------------------------------------- compiled kernels

def _njit(fn):
    return numba.njit(cache=True, nogil=True)(fn) if numba is not None else fn


@_njit
def _transfer_end(s, bits, times, rates, n, j):
    # vip_ray.core.netmodel.transfer_end, the same float operations
    while True:
        rate = rates[j]
        dur = bits / rate
        nxt = times[j + 1] if j + 1 < n else INF
        if s + dur <= nxt:
            return s + dur
        s2 = s + (nxt - s)
        bits = bits - (s2 - s) * rate
        s = s2
        j += 1


@_njit
def _downlinks(arrivals, bits, PT, PR, PL, pfree, pp, out):
    """FIFO transmissions of every arrival on each downlink profile (row p of ``out``)."""
    for p in range(PT.shape[0]):
        free = pfree[p]
        q = pp[p]
        L = PL[p]
        times = PT[p]
        rates = PR[p]
        for i in range(arrivals.shape[0]):
            a = arrivals[i]
            s = a if a > free else free
            while q + 1 < L and times[q + 1] <= s:
                q += 1
            free = _transfer_end(s, bits, times, rates, L, q)
            out[p, i] = free
        pfree[p] = free
        pp[p] = q


@_njit
def _downlinks_sent(arrivals, bits, PT, PR, PL, pfree, pp, pdev, sent, out):
    """:func:`_downlinks` of a multi-master world without a shared medium: profile ``p`` is device
    ``pdev[p]``'s own downlink, carrying only the requests sent to it (``sent[i, pdev[p]]``)."""
    for p in range(PT.shape[0]):
        free = pfree[p]
        q = pp[p]
        L = PL[p]
        times = PT[p]
        rates = PR[p]
        dv = pdev[p]
        for i in range(arrivals.shape[0]):
            if not sent[i, dv]:
                out[p, i] = INF
                continue
            a = arrivals[i]
            s = a if a > free else free
            while q + 1 < L and times[q + 1] <= s:
                q += 1
            free = _transfer_end(s, bits, times, rates, L, q)
            out[p, i] = free
        pfree[p] = free
        pp[p] = q


@_njit
def _cumulate_windows(durs, t, U, V):
    """``Windows.extend`` over a run of durations up₀, down₀, up₁, …: fills U, V; returns
    ``(windows written, next window start, done)``. ``inf`` ends the sequence."""
    m = 0
    i = 0
    n = durs.shape[0]
    while i < n:
        u = t
        up = durs[i]
        if up == INF:
            U[m] = u
            V[m] = INF
            return m + 1, INF, True
        t = t + up
        U[m] = u
        V[m] = t
        m += 1
        if i + 1 >= n:
            return m, INF, True   # generator ended after an up period (not produced by the streams)
        down = durs[i + 1]
        if down == INF:
            return m, INF, True
        t = t + down
        i += 2
    return m, t, False


@_njit
def _available(WU, WV, nW, t0, t1, out):
    """``Windows.available_time(t0, t1)`` of every device, the same sum in the same order."""
    for d in range(WU.shape[0]):
        tot = 0.0
        if t1 > t0:
            for k in range(nW[d]):
                u = WU[d, k]
                v = WV[d, k]
                if v <= t0:
                    continue
                if u >= t1:
                    break
                tot += (v if v < t1 else t1) - (u if u > t0 else t0)
        out[d] = tot


@_njit
def _trim(WU, WV, nW, kw, t_keep):
    """Forget each device's windows before its pointer that end at or before ``t_keep``."""
    for d in range(WU.shape[0]):
        c = 0
        while c < kw[d] and WV[d, c] <= t_keep:
            c += 1
        if c:
            m = nW[d] - c
            for i in range(m):
                WU[d, i] = WU[d, i + c]
                WV[d, i] = WV[d, i + c]
            nW[d] = m
            kw[d] -= c


TILE = 256                  # requests per tile: the (request, device) output lines a tile touches stay in cache
DRAW_BLOCK_VALUES = 1 << 17  # per-request draws held at once (devices × requests), ~1.3 MB


@_njit
def _serve(b0, b1, d0, j0, times, deadline_at, sent, multi, down_end, profile, half, DU, has_dloss, MU, UU, has_uloss, SU,
           has_strag, loss, strag_p, strag_f,
           failure, drop_mode, dexp, WU, WV, nW, wdone, kw, ST, SSVC, SVAR, SPL, SN, sp_, UT, UR, UL, ubits,
           ufree_, up_p, reply_bytes, free_, last_end_, cnt, busy_, reply, var, code, bytes_up, stg):
    """The jobs of devices ``b0 .. b1 - 1`` (the block whose draws are rows ``d - b0`` of ``DU``,
    ``MU``, ``UU``, ``SU``: see :class:`_Draws`): tiles of ``TILE`` requests, in each tile device by device (the recursions
    are per device; tiling only keeps the row-major outputs in cache). Starts at device ``d0``'s job
    ``j0`` (``b0``, 0: the whole block) and writes every output cell of the block. Returns
    ``(-1, -1)`` when done, else ``(d, j)``: device ``d`` needs a window not yet computed for job
    ``j``; its state is as before that job, so the caller grows its windows and calls again from
    ``(d, j)``."""
    n = times.shape[0]
    jt = (j0 // TILE) * TILE
    first = True
    while jt < n:
        je = min(jt + TILE, n)
        for d in range(d0 if first else b0, b1):
            start = j0 if (first and d == d0) else jt
            r = d - b0
            need = _device_tile(d, start, je, times, deadline_at, sent, multi, down_end, profile, half, DU[r], has_dloss,
                                MU[r], UU[r], has_uloss, SU[r], has_strag, loss, strag_p, strag_f, failure, drop_mode, dexp, WU, WV, nW, wdone, kw, ST,
                                SSVC, SVAR, SPL, SN, sp_, UT, UR, UL, ubits, ufree_, up_p, reply_bytes, free_,
                                last_end_, cnt, busy_, reply, var, code, bytes_up, stg)
            if need >= 0:
                return d, need
        first = False
        jt = je
    return -1, -1


@_njit
def _device_tile(d, j_start, j_end, times, deadline_at, sent, multi, down_end, profile, half, DU_d, has_dloss, MU_d, UU_d,
                 has_uloss, SU_d, has_strag, loss, strag_p, strag_f, failure, drop_mode, dexp, WU, WV, nW, wdone, kw, ST, SSVC, SVAR, SPL, SN, sp_, UT, UR,
                 UL, ubits, ufree_, up_p, reply_bytes, free_, last_end_, cnt, busy_, reply, var, code, bytes_up, stg):
    """Device ``d``'s jobs ``j_start .. j_end - 1``; returns -1, or the job that needs a window
    not yet computed (nothing of that job committed). ``stg[0..3, d, j]``: the job's stage times
    (input at the device, service start, service end; inf where none) and its time paused; every
    cell is written."""
    pf = profile[d]
    net = pf >= 0
    hd = half[d]
    fail = failure[d]
    dmode = drop_mode[d]
    dx = dexp[d]
    hdl = has_dloss[d]
    hul = has_uloss[d]
    lo = loss[d]
    hst = has_strag[d]
    sprob = strag_p[d]
    sf = strag_f[d]
    nsl = SN[d]
    nw = nW[d]
    done_w = wdone[d]
    free = free_[d]
    k = kw[d]
    sp = sp_[d]
    last_end = last_end_[d]
    ufree = ufree_[d]
    upp = up_p[d]
    UL_d = UL[d]
    ub = ubits[d]
    rb = reply_bytes[d]
    # row views taken once per tile (a view per job costs reference-count traffic)
    WU_d = WU[d]
    WV_d = WV[d]
    UT_d = UT[d]
    UR_d = UR[d]
    udur = ub / UR_d[0]
    ST_d = ST[d]
    down_d = down_end[pf if net else 0]
    # the device's rows of the stage planes: contiguous runs per tile, outside the tile's row-major
    # (request, device) lines that stay in cache
    RD_d = stg[0, d]
    SS_d = stg[1, d]
    SE_d = stg[2, d]
    PZ_d = stg[3, d]
    busy = 0.0
    jobs = served = preempted = dropped = crashed = skipped = unplaced = lost_down = lost_up = 0
    need = -1
    for j in range(j_start, j_end):
        if multi and not sent[j, d]:          # a multi-master world: this request's master does not reach d
            code[j, d] = _NOT_SENT
            reply[j, d] = INF
            var[j, d] = -1
            RD_d[j] = INF
            SS_d[j] = INF
            SE_d[j] = INF
            PZ_d[j] = 0.0
            continue
        if net:
            if hdl and DU_d[j] < lo:
                code[j, d] = _LOST_DOWN
                reply[j, d] = INF
                var[j, d] = -1
                RD_d[j] = INF
                SS_d[j] = INF
                SE_d[j] = INF
                PZ_d[j] = 0.0
                lost_down += 1
                continue
            t = down_d[j] + hd
        else:
            t = times[j]
        # --- the device (job-local copies; committed at the end of the job)
        kk = k
        ff = free
        le = last_end
        bb = 0.0
        pre = 0
        c = _REPLIED
        comp = 0.0
        vv = -1
        s = t
        s0 = INF                              # service start
        pz = 0.0                              # time paused by the owner's work
        if fail:
            while WV_d[kk] <= t:
                if kk + 1 >= nw:
                    if not done_w:
                        need = j
                    break
                kk += 1
            if need >= 0:
                break
            if t < WU_d[kk]:                # arrived while the device is down
                c = _CRASHED
                if t > le:
                    le = t
            else:
                s = t if t > ff else ff
                if s >= WV_d[kk]:             # failed while the job was queued
                    c = _CRASHED
                    ff = s
                    if s > le:
                        le = s
        else:
            s = t if t > ff else ff
            if WV_d[kk] <= s or s < WU_d[kk]:
                # advance_window: s inside window kk, moved to its start if the device is down then
                while True:
                    while WV_d[kk] <= s:
                        if kk + 1 >= nw:
                            if not done_w:
                                need = j
                            break
                        kk += 1
                    if need >= 0 or WV_d[kk] <= s:
                        break
                    if s < WU_d[kk]:
                        s = WU_d[kk]
                        continue
                    break
                if need >= 0:
                    break
        if c == _REPLIED:
            spn = sp
            while spn + 1 < nsl and ST_d[spn + 1] <= s:
                spn += 1
            if not SPL[d, spn]:                # no variant placed: not served
                c = _UNPLACED
                ff = s
                if s > le:
                    le = s
            elif dx and s > deadline_at[j]:
                c = _SKIPPED
                ff = s
                if s > le:
                    le = s
            else:
                m = MU_d[j]
                if hst:                        # DeviceDraws: mult * where(u < p, factor, 1.0)
                    m = m * (sf if SU_d[j] < sprob else 1.0)
                rem = SSVC[d, spn] * m
                vv = SVAR[d, spn]
                s0 = s
                while True:
                    end = s + rem
                    v = WV_d[kk]
                    if end <= v:
                        bb += end - s
                        ff = end
                        comp = end
                        break
                    bb += v - s
                    ff = v
                    if fail:
                        c = _CRASHED
                        break
                    rem = rem - (v - s)
                    pre += 1
                    if dmode:
                        c = _DROPPED
                        break
                    # advance_window(kk, v)
                    s = v
                    while True:
                        while WV_d[kk] <= s:
                            if kk + 1 >= nw:
                                if not done_w:
                                    need = j
                                break
                            kk += 1
                        if need >= 0 or WV_d[kk] <= s:
                            break
                        if s < WU_d[kk]:
                            s = WU_d[kk]
                            continue
                        break
                    if need >= 0:
                        break
                    pz += s - v
                if need >= 0:
                    break
                if ff > le:
                    le = ff
            sp = spn
        # --- commit the job
        k = kk
        free = ff
        last_end = le
        busy += bb
        preempted += pre
        jobs += 1
        var[j, d] = vv
        RD_d[j] = t
        SS_d[j] = s0
        SE_d[j] = comp if c == _REPLIED else INF
        PZ_d[j] = pz
        if c == _REPLIED:
            served += 1
            if net:
                us = comp if comp > ufree else ufree
                while upp + 1 < UL_d and UT_d[upp + 1] <= us:
                    upp += 1
                if UL_d == 1:                  # one rate: transfer_end is s + bits / rate
                    ufree = us + udur
                else:
                    ufree = _transfer_end(us, ub, UT_d, UR_d, UL_d, upp)
                bytes_up[j] += rb
                if hul and UU_d[j] < lo:
                    code[j, d] = _LOST_UP
                    reply[j, d] = INF
                    lost_up += 1
                else:
                    code[j, d] = _REPLIED
                    reply[j, d] = ufree + hd
            else:
                code[j, d] = _REPLIED
                reply[j, d] = comp
        else:
            code[j, d] = c
            reply[j, d] = INF
            if c == _CRASHED:
                crashed += 1
            elif c == _DROPPED:
                dropped += 1
            elif c == _SKIPPED:
                skipped += 1
            else:
                unplaced += 1
    free_[d] = free
    kw[d] = k
    sp_[d] = sp
    last_end_[d] = last_end
    ufree_[d] = ufree
    up_p[d] = upp
    busy_[d] += busy
    cnt[0, d] += jobs
    cnt[1, d] += served
    cnt[2, d] += preempted
    cnt[3, d] += dropped
    cnt[4, d] += crashed
    cnt[5, d] += skipped
    cnt[6, d] += unplaced
    cnt[7, d] += lost_down
    cnt[8, d] += lost_up
    return need


# ----------------------------------------------------------------------------- run state

# --- numpy's SeedSequence, for many devices at once ------------------------------------------
# make_rng(seed, purpose, d) builds SeedSequence(seed, spawn_key=(purpose, d)) and a PCG64 from it:
# ~20-30 µs each, mostly Python-level set-up, i.e. ~100 µs per device for its 4-5 streams (a fifth
# of the whole run's cost at 1,000 devices × 5,000 requests). The words a SeedSequence hands PCG64
# are a fixed hash of (seed, spawn key) — fixed by numpy's stream-compatibility policy (NEP 19) —
# so they are computed here with vector operations over all devices, and each PCG64 is seeded from
# them directly (~1 µs). tests/test_sim_engine.py holds every generator to make_rng's state.
_M32 = 0xFFFFFFFF
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_POOL = 4


def _uint32_words(n: int) -> list:
    """numpy's ``_int_to_uint32_array``: little-endian 32-bit words (``[0]`` for 0)."""
    if n == 0:
        return [0]
    out = []
    while n > 0:
        out.append(n & _M32)
        n >>= 32
    return out


def seed_words(seed: int, purpose: int, devices: np.ndarray) -> np.ndarray:
    """``SeedSequence(seed, spawn_key=(purpose, d)).generate_state(4, np.uint64)`` for every ``d`` in
    ``devices`` (< 2**32), as a ``(len(devices), 4)`` uint64 array."""
    devices = np.asarray(devices, dtype=np.uint64)
    n = len(devices)
    m32 = np.uint64(_M32)
    sh = np.uint64(16)
    run = _uint32_words(int(seed))
    run += [0] * (_POOL - len(run))             # a spawn key pads the run entropy to the pool size
    entropy = [np.full(n, w, dtype=np.uint64) for w in run]
    entropy += [np.full(n, w, dtype=np.uint64) for w in _uint32_words(int(purpose))]
    entropy.append(devices)
    h = _INIT_A

    def hashmix(v):
        nonlocal h
        v = v ^ np.uint64(h)
        h = (h * _MULT_A) & _M32
        v = (v * np.uint64(h)) & m32
        return v ^ (v >> sh)

    def mix(x, y):
        r = (((np.uint64(_MIX_L) * x) & m32) - ((np.uint64(_MIX_R) * y) & m32)) & m32
        return r ^ (r >> sh)

    with np.errstate(over="ignore"):
        pool = [hashmix(entropy[i]) for i in range(_POOL)]
        for i_src in range(_POOL):
            for i_dst in range(_POOL):
                if i_src != i_dst:
                    pool[i_dst] = mix(pool[i_dst], hashmix(pool[i_src]))
        for i_src in range(_POOL, len(entropy)):
            for i_dst in range(_POOL):
                pool[i_dst] = mix(pool[i_dst], hashmix(entropy[i_src]))
        h = _INIT_B
        words = []
        for i in range(2 * 4):
            v = pool[i % _POOL] ^ np.uint64(h)
            h = (h * _MULT_B) & _M32
            v = (v * np.uint64(h)) & m32
            words.append(v ^ (v >> sh))
    return np.stack([words[2 * k] | (words[2 * k + 1] << np.uint64(32)) for k in range(4)], axis=1)


class _Words(ISeedSequence):
    """A seed sequence that hands PCG64 words computed beforehand."""

    def __init__(self, words: np.ndarray):
        self.words = words

    def generate_state(self, n_words, dtype=np.uint32):
        return self.words


class _Generators:
    """``make_rng(seed, purpose, d)``'s generators for every device of a run, seeded in bulk."""

    def __init__(self, seed: int, n_devices: int):
        self.seed = seed
        self.n = n_devices
        self._words = {}

    def __call__(self, purpose: Purpose, d: int) -> np.random.Generator:
        words = self._words.get(purpose)
        if words is None:
            words = self._words[purpose] = seed_words(self.seed, int(purpose), np.arange(self.n))
        return np.random.Generator(np.random.PCG64(_Words(words[d])))


class _Draws:
    """Device ``d``'s per-request draws, the numbers :class:`~vip_ray.core.streams.DeviceDraws` hands
    out (same generators, same transforms), written straight into the kernel's rows: the uniforms
    of the loss and straggler tests (compared in the kernel) and the compute-time multiplier before
    the straggler factor. A PCG64 generator's ``random`` / ``standard_normal`` /
    ``standard_exponential`` values do not depend on how many are asked for per call, so filling a
    chunk in one call gives the values ``DeviceDraws`` takes from its 1,024-value blocks (the
    equality tests hold the two to that)."""

    def __init__(self, dev, index: int, rng):
        lossy = dev.link is not None and dev.link.loss > 0.0
        self.loss = dev.link.loss if lossy else 0.0
        self.down = rng(Purpose.DOWN_LOSS, index) if lossy else None
        self.up = rng(Purpose.UP_LOSS, index) if lossy else None
        self.svc = None
        self.lognormal = False
        self.mu = self.sigma = 0.0
        if dev.service_dist == "exponential":
            self.svc = rng(Purpose.SERVICE, index)
        elif dev.service_dist == "lognormal" and dev.jitter_cv > 0.0:
            s2 = math.log1p(dev.jitter_cv * dev.jitter_cv)
            self.sigma = math.sqrt(s2)
            self.mu = -0.5 * s2
            self.lognormal = True
            self.svc = rng(Purpose.SERVICE, index)
        strag = dev.straggler_prob > 0.0 and dev.straggler_factor != 1.0
        self.strag = rng(Purpose.STRAGGLER, index) if strag else None

    def fill(self, mult, down_u, up_u, strag_u) -> None:
        if self.down is not None:
            self.down.random(out=down_u)
        if self.svc is None:
            mult.fill(1.0)
        elif self.lognormal:
            self.svc.standard_normal(out=mult)
            np.multiply(mult, self.sigma, out=mult)   # exp(mu + sigma * z), numpy's exp
            np.add(mult, self.mu, out=mult)
            np.exp(mult, out=mult)
        else:
            self.svc.standard_exponential(out=mult)
        if self.strag is not None:
            self.strag.random(out=strag_u)
        if self.up is not None:
            self.up.random(out=up_u)


class _PeriodDurations:
    """The up/down period lengths of an ``onoff`` or ``mtbf`` device in bulk: the numbers
    :func:`~vip_ray.core.streams.availability_durations` yields one by one (same stream, same scales,
    ``value * scale`` alternately for up and down), without a Python step per period."""

    def __init__(self, av, index: int, rng):
        if av.kind == "onoff":
            up_mean, down_mean = av.free_mean_s, av.busy_mean_s
            if av.distribution == "weibull":
                k = av.weibull_shape
                g = math.gamma(1.0 + 1.0 / k)
                self.scales = (up_mean / g, down_mean / g)

                def fn(r, n):                      # what availability_durations draws
                    return r.weibull(k, n)
            else:
                self.scales = (up_mean, down_mean)
                fn = _std_exp
        else:  # mtbf
            self.scales = (av.mtbf_s, av.mttr_s)
            fn = _std_exp
        self.cycle_s = up_mean + down_mean if av.kind == "onoff" else av.mtbf_s + av.mttr_s
        self.stream = BlockStream(rng(Purpose.AVAILABILITY, index), fn)

    def take(self, m: int) -> np.ndarray:
        """The next ``m`` up/down pairs: up₀, down₀, up₁, …"""
        v = self.stream.take(2 * m)
        out = np.empty_like(v)
        np.multiply(v[0::2], self.scales[0], out=out[0::2])
        np.multiply(v[1::2], self.scales[1], out=out[1::2])
        return out


class _Recycled:
    """Float arrays handed out in results (as views) and taken back for a later chunk once nothing
    refers to them any more: the consumer has dropped the result and every view of it (a numpy view
    holds its base). A streaming consumer still holds the last chunk while asking for the next, so
    two arrays alternate; one that keeps its results gets fresh arrays, as before."""

    KEEP = 2

    def __init__(self):
        self.pool: list = []

    def take(self, shape) -> np.ndarray:
        for i in range(len(self.pool)):
            a = self.pool[i]
            # three references: the pool's, ``a`` and getrefcount's argument (no one else's)
            if a.shape == shape and sys.getrefcount(a) == 3:
                del self.pool[i]
                break
        else:
            a = np.empty(shape)
        self.pool.append(a)
        del self.pool[:-self.KEEP]
        return a


class _Windows:
    """Every device's availability windows ``[WU[d, k], WV[d, k])`` (``nW[d]`` of them), grown on
    demand from the durations every engine draws; a device whose sequence has ended has
    ``wdone[d]`` and an infinite last window end."""

    def __init__(self, spec: SimSpec, rng=None, cap: int = 32):
        D = len(spec.devices)
        rng = rng or _Generators(spec.seed, D)
        self.src = []
        for d, dev in enumerate(spec.devices):
            av = dev.availability
            # onoff / mtbf never end: bulk draws; the other kinds are a few periods, then inf
            self.src.append(_PeriodDurations(av, d, rng) if av.kind in ("onoff", "mtbf")
                            else availability_durations(av, d, spec.seed))
        self.t = np.zeros(D)
        self.WU = np.full((D, cap), INF)
        self.WV = np.full((D, cap), INF)
        self.nW = np.zeros(D, dtype=np.int64)
        self.wdone = np.zeros(D, dtype=np.bool_)
        self.kw = np.zeros(D, dtype=np.int64)

    def grow(self, d: int, m: int) -> None:
        """Append up to ``m`` windows to device ``d`` (a final ``[inf, inf)`` once its sequence ends)."""
        if self.wdone[d]:
            return
        src = self.src[d]
        durs = src.take(m) if isinstance(src, _PeriodDurations) else np.fromiter(islice(src, 2 * m), np.float64)
        n0 = int(self.nW[d])
        if n0 + m + 1 > self.WU.shape[1]:
            cap = max(n0 + m + 1, 2 * self.WU.shape[1])
            for name in ("WU", "WV"):
                old = getattr(self, name)
                new = np.full((old.shape[0], cap), INF)
                new[:, :old.shape[1]] = old
                setattr(self, name, new)
        w, t, done = _cumulate_windows(durs, float(self.t[d]), self.WU[d, n0:], self.WV[d, n0:])
        n = n0 + w
        if done:
            self.wdone[d] = True
            if n == 0 or self.WV[d, n - 1] != INF:
                self.WU[d, n] = INF              # what Windows.extend appends once the device is done
                self.WV[d, n] = INF
                n += 1
        self.nW[d] = n
        self.t[d] = t

    def cover(self, t_end: float) -> None:
        """Windows up to ``t_end`` for every device (at least one each)."""
        nW, wdone, WV = self.nW, self.wdone, self.WV
        for d in np.flatnonzero(~wdone & ((nW == 0) | (WV[np.arange(len(nW)), np.maximum(nW - 1, 0)] < t_end))):
            while not wdone[d] and (nW[d] == 0 or self.WV[d, nW[d] - 1] < t_end):
                src = self.src[d]
                m = 16
                if isinstance(src, _PeriodDurations) and math.isfinite(t_end):
                    m += int(min(1e6, (t_end - self.t[d]) / src.cycle_s * 1.25))
                self.grow(d, max(m, int(nW[d])))


def _pad(rows, fill, dtype):
    width = max(1, max((len(r) for r in rows), default=1))
    out = np.full((len(rows), width), fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def run_jit_chunks(spec: SimSpec, chunk_requests: int = 100_000) -> Iterator[SimResult]:
    """Results in arrival order, ``chunk_requests`` at a time (see :func:`vip_ray.sim.run_chunks`).
    Raises at once (before any work) when numba is missing or the spec has a feature the kernel
    does not implement."""
    if numba is None:  # pragma: no cover
        raise ValueError(_NUMBA_MISSING)
    check_supported(spec)
    if chunk_requests <= 0:
        raise ValueError(f"chunk_requests must be > 0, got {chunk_requests!r}")
    return _chunks(spec, chunk_requests)


def _chunks(spec: SimSpec, chunk_requests: int) -> Iterator[SimResult]:
    wl = arrival_workload(spec)
    devs = spec.devices
    owner = reach = None
    if spec.masters:  # multi-master: each request reaches its master's devices only
        _, owner, reach = merged_requests(spec)
    D = len(devs)
    names = tuple(dev.name for dev in devs)
    rng = _Generators(spec.seed, D)
    draws = [_Draws(dev, d, rng) for d, dev in enumerate(devs)]
    # downlink profiles: the shared medium, or one per distinct link bandwidth profile
    profile = np.full(D, -1, dtype=np.int64)
    msteps = shared_medium_steps(spec)
    profiles = []
    keys = {}
    for d, dev in enumerate(devs):
        if dev.link is None:
            continue
        if msteps is not None:
            key = ("medium",)
            steps = msteps
        else:
            steps = bandwidth_steps(dev.link)
            # one profile per distinct link (multi-master: per device, its own requests only)
            key = (tuple(steps[0]), tuple(steps[1])) if owner is None else ("device", d)
        if key not in keys:
            keys[key] = len(profiles)
            profiles.append(steps)
        profile[d] = keys[key]
    P = len(profiles)
    PT = _pad([p[0] for p in profiles], INF, np.float64)
    PR = _pad([p[1] for p in profiles], 1.0, np.float64)
    PL = np.array([len(p[0]) for p in profiles] or [0], dtype=np.int64)
    pfree = np.zeros(max(P, 1))
    pp = np.zeros(max(P, 1), dtype=np.int64)
    n_net = int((profile >= 0).sum())
    per_request_down = wl.input_bytes * (1 if msteps is not None else n_net) if n_net else 0
    pdev = np.array([d for d in range(D) if profile[d] >= 0] or [0], dtype=np.int64)
    multi = owner is not None
    if multi:
        per_master_down = wl.input_bytes * (np.ones(len(reach), np.int64) if msteps is not None
                                            else reach.sum(axis=1))
    no_sent = np.zeros((0, 0), dtype=np.bool_)
    in_bits = float(wl.input_bytes * 8)
    # per-device constants
    half = np.array([dev.link.rtt_s / 2.0 if dev.link is not None else 0.0 for dev in devs])
    has_dloss = np.array([d.down is not None for d in draws], dtype=np.bool_)
    has_uloss = np.array([d.up is not None for d in draws], dtype=np.bool_)
    loss = np.array([d.loss for d in draws])
    has_strag = np.array([d.strag is not None for d in draws], dtype=np.bool_)
    strag_p = np.array([dev.straggler_prob for dev in devs])
    strag_f = np.array([dev.straggler_factor for dev in devs])
    failure = np.array([dev.availability.failure for dev in devs], dtype=np.bool_)
    drop_mode = np.array([dev.availability.drop for dev in devs], dtype=np.bool_)
    dexp = np.array([dev.drop_expired for dev in devs], dtype=np.bool_)
    tl = [dev.timeline() for dev in devs]
    ST = _pad([[s.start_s for s in t] for t in tl], INF, np.float64)
    SSVC = _pad([[s.service_s for s in t] for t in tl], INF, np.float64)
    SVAR = _pad([[s.variant for s in t] for t in tl], -1, np.int32)
    SPL = _pad([[s.placed for s in t] for t in tl], False, np.bool_)
    SN = np.array([len(t) for t in tl], dtype=np.int64)
    sp = np.zeros(D, dtype=np.int64)
    up_steps = [bandwidth_steps(dev.link) if dev.link is not None else ([0.0], [INF]) for dev in devs]
    UT = _pad([s[0] for s in up_steps], INF, np.float64)
    UR = _pad([s[1] for s in up_steps], 1.0, np.float64)
    UL = np.array([len(s[0]) for s in up_steps], dtype=np.int64)
    ubits = np.array([float(dev.reply_bytes * 8) for dev in devs])
    reply_bytes = np.array([dev.reply_bytes if dev.link is not None else 0 for dev in devs], dtype=np.int64)
    ufree = np.zeros(D)
    up_p = np.zeros(D, dtype=np.int64)
    free = np.zeros(D)
    last_end = np.zeros(D)
    win = _Windows(spec, rng)
    planes = _Recycled()
    for chunk in arrival_chunks(wl, spec.seed, chunk_requests):
        times, n, deadline_at = chunk.times, chunk.n, chunk.deadline_at
        reply = np.empty((n, D))                   # the kernel writes every cell
        var = np.empty((n, D), dtype=np.int32)
        code = np.empty((n, D), dtype=np.int8)
        bytes_up = np.zeros(n, dtype=np.int64)
        # stage times (input at the device, service start, end, time paused), device-major planes
        # handed out as (request, device) views; the kernel writes every cell, so planes the
        # consumer has let go of are reused (fresh pages cost a page fault and zeroing each)
        stg = planes.take((4, D, n))
        down_end = np.empty((max(P, 1), n))
        sent = no_sent
        if multi:
            rows_master = owner[chunk.offset:chunk.offset + n]
            sent = np.ascontiguousarray(reach[rows_master])
            per_request_down = per_master_down[rows_master]
        if P and n:
            if multi and msteps is None:
                _downlinks_sent(times, in_bits, PT, PR, PL, pfree, pp, pdev, sent, down_end)
            else:
                _downlinks(times, in_bits, PT, PR, PL, pfree, pp, down_end)
        if n:
            # windows for the bulk of the chunk up front; the kernel asks for the rest
            win.cover(float(times[-1]) + wl.deadline_s)
        cnt = np.zeros((9, D), dtype=np.int64)
        busy = np.zeros(D)
        # devices in blocks: a block's draws are made just before the kernel reads them (cache-warm,
        # and the same few MB reused block after block)
        B = max(1, min(D, DRAW_BLOCK_VALUES // max(1, n)))
        DU, MU, UU, SU = (np.empty((B, n)) for _ in range(4))
        for b0 in range(0, D if n else 0, B):
            b1 = min(D, b0 + B)
            for d in range(b0, b1):
                draws[d].fill(MU[d - b0], DU[d - b0], UU[d - b0], SU[d - b0])
            d0, j0 = b0, 0
            while True:
                d0, j0 = _serve(
                    b0, b1, d0, j0, times, deadline_at, sent, multi, down_end, profile, half, DU, has_dloss, MU, UU,
                    has_uloss, SU, has_strag, loss, strag_p, strag_f, failure, drop_mode, dexp, win.WU, win.WV, win.nW, win.wdone, win.kw, ST, SSVC, SVAR,
                    SPL, SN, sp, UT, UR, UL, ubits, ufree, up_p, reply_bytes, free, last_end, cnt, busy, reply, var,
                    code, bytes_up, stg)
                if d0 < 0:
                    break
                win.grow(d0, max(16, int(win.nW[d0])))
        stats = empty_device_stats(D)
        for r, key in enumerate(_COUNTERS):
            stats[key] += cnt[r]
        stats["busy_s"] += busy
        res = chunk_result(chunk, deadline_s=wl.deadline_s, last_end=float(last_end.max()) if D else 0.0,
                           meters=(), stats=stats, reply_at=reply, variant=var, outcome=code,
                           per_request_down=per_request_down, bytes_up=bytes_up, names=names, engine="jit",
                           stages=tuple(stg[i].T for i in range(4)))
        t0 = time.perf_counter()
        win.cover(res.t_end)
        _available(win.WU, win.WV, win.nW, res.t_start, res.t_end, stats["available_s"])
        _trim(win.WU, win.WV, win.nW, win.kw, res.t_end)
        res.wall_s += time.perf_counter() - t0
        del stg
        yield res
        del res
