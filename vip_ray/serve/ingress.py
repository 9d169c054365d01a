"""The master: the ingress deployment that multicasts each request to the emulated devices, waits
until the deadline, aggregates what came back with the shared aggregator and answers.

Per request it computes the emulated downlink (:mod:`vip_ray.core.netmodel`: one FIFO per link
profile, or one broadcast on a shared medium), sends *one* call per device group (not per
device: a group replica runs all its devices' timers), collects the replies that reach the
master by the deadline on the emulated timeline, and holds its answer until the emulated
finish (the last reply when all devices answered, else the deadline) — the way a network
emulator holds packets. ``finish − emulated finish`` is the harness overhead it reports.

HTTP (Serve's proxy): ``POST {prefix}/predict`` with a PNG / JPEG image or a ``.npy`` uint8 array
→ JSON ``{label, class_name, top_k, responders, latency_ms, ...}``; ``GET {prefix}/health``.
"""
from __future__ import annotations

import asyncio
import gc
import io
import itertools
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from vip_ray.core import netmodel
from vip_ray.core.aggregation import softmax
from vip_ray.serve.config import EmulationConfig
from vip_ray.core.tables import ranked

log = logging.getLogger("ray.serve")
MAX_SIDE = 4096        # pixels per side accepted over HTTP (decompression bombs)
POLL_S = 0.5           # device counters are collected this often (a killed replica loses at most this much)
HOLD_START_S = 0.001   # the master's hold timer lateness assumed until it has measured its own (wall s)
COLLECT_S = 0.001      # the least the master stops waiting for its groups before the deadline (wall s)
#: the leads and the hold guard track a trailing high quantile of their paths (×1.25). The trailing
#: maximum was tried (2026-12-03): quiet cycle_stealing validate missed 3 deadline-bound answers of
#: 300 instead of 7, but under load one stalled path sets every guard for the next 256 requests,
#: and three live tests failed beside other jobs — one run each way is not evidence enough
GUARD_QUANTILE = 0.99


class BadInput(ValueError):
    """A request body the master cannot use; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


#: What the top-k ``score`` of each aggregation rule is (VP's eq. 1 output sums to 1 but is a
#: softmax of scaled top-k scores, not a calibrated probability).
SCORE_KIND = {"vip": "probability", "first": "probability", "vp": "vp_scaled_score", "majority": "vote_share",
              "cp": "owner_probability"}


def decode_input(body: bytes, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """A PNG / JPEG image or a ``.npy`` uint8 array → (C, H, W) uint8 (C = ``channels`` for
    images; arrays keep their 1 or 3 channels: the variants' input adapter takes either).

    ``size`` (H, W): larger inputs are resized to it (the pool's input) before the multicast,
    as a real master would before sending them to its devices."""
    if not body:
        raise BadInput(400, "empty body: send a PNG or JPEG image, or a .npy uint8 array of shape (H, W) or (C, H, W)")
    if body[:6] == b"\x93NUMPY":
        try:
            arr = np.load(io.BytesIO(body), allow_pickle=False)
        except Exception as e:
            raise BadInput(400, f"not a readable .npy array ({e})") from None
        if arr.dtype != np.uint8:
            raise BadInput(400, f"expected uint8 pixels (0..255), got dtype {arr.dtype}")
        if arr.ndim == 2:
            arr = arr[None]
        elif arr.ndim == 3 and arr.shape[0] not in (1, 3) and arr.shape[-1] in (1, 3):
            arr = np.moveaxis(arr, -1, 0)  # (H, W, C) -> (C, H, W)
        if arr.ndim != 3 or arr.shape[0] not in (1, 3):
            raise BadInput(400, f"expected an array of shape (H, W), (C, H, W) or (H, W, C) with C in 1, 3; "
                                f"got shape {arr.shape}")
    elif body[:8] == b"\x89PNG\r\n\x1a\n" or body[:3] == b"\xff\xd8\xff":
        from PIL import Image

        kind = "PNG" if body[:1] == b"\x89" else "JPEG"
        try:
            img = Image.open(io.BytesIO(body))
            if max(img.size) > MAX_SIDE:
                raise BadInput(413, f"image of {img.size[0]}x{img.size[1]} pixels exceeds {MAX_SIDE} per side")
            img = img.convert("L" if channels == 1 else "RGB")
        except BadInput:
            raise
        except Exception as e:
            raise BadInput(400, f"not a valid {kind} image ({e})") from None
        if size is not None and (img.size[1] > size[0] or img.size[0] > size[1]):
            img.draft(img.mode, (size[1], size[0]))   # JPEG: decode at a reduced scale
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    else:
        raise BadInput(415, "unsupported body: send a PNG or JPEG image or a .npy uint8 array "
                            f"(got {len(body)} bytes starting {body[:8]!r})")
    if min(arr.shape[1:]) < 1 or max(arr.shape[1:]) > MAX_SIDE:
        raise BadInput(413 if max(arr.shape[1:]) > MAX_SIDE else 400,
                       f"image of {arr.shape[2]}x{arr.shape[1]} pixels: each side must be 1..{MAX_SIDE}")
    if size is not None and (arr.shape[1] > size[0] or arr.shape[2] > size[1]):
        from PIL import Image

        arr = np.stack([np.asarray(Image.fromarray(ch).resize((size[1], size[0]), Image.Resampling.BILINEAR))
                        for ch in arr])
    return np.ascontiguousarray(arr)


class Downlinks:
    """The emulated downlink of every device: a shared medium's broadcast, or one FIFO per
    distinct link profile (a profile's timeline depends only on the arrivals, as in the simulator)."""

    def __init__(self, cfg: EmulationConfig):
        nets = [(i, d) for i, d in enumerate(cfg.devices) if d.link is not None]
        self.half = [d.link.rtt_s / 2.0 if d.link is not None else 0.0 for d in cfg.devices]
        self.nbytes = cfg.workload.input_bytes
        self.medium = None
        self.key: list[tuple | None] = [None] * len(cfg.devices)
        self.dirs: dict[tuple | None, netmodel.Direction] = {}
        if cfg.shared_medium and nets:
            self.medium = netmodel.Direction(*netmodel.min_steps([d.link.steps() for _, d in nets]))
        for i, d in nets:
            self.key[i] = k = tuple(tuple(x) for x in d.link.steps())
            if self.medium is None and k not in self.dirs:
                self.dirs[k] = netmodel.Direction(*k)
        self.bytes_down = self.nbytes * (1 if self.medium is not None else len(nets)) if nets else 0

    def arrivals(self, t: float) -> list[float]:
        """When request arriving at the master at ``t`` reaches each device (FIFO order of ``t``)."""
        if self.medium is not None:
            end = self.medium.send(t, self.nbytes)[0]
            return [t if k is None else end + h for k, h in zip(self.key, self.half)]
        ends = {k: d.send(t, self.nbytes)[0] for k, d in self.dirs.items()}
        return [t if k is None else ends[k] + h for k, h in zip(self.key, self.half)]


@dataclass
class Session:
    """The replication the master is running (HTTP requests join whichever is current)."""

    token: str
    seed: int
    epoch: float
    downlinks: Downlinks
    dilation: float = 1.0
    knows: Any = None      # vip_ray.core.master.Knowledge: devices the master knows are down
    lead: Any = None       # vip_ray.serve.lead.AnswerLead: how early a deadline-bound request stops waiting
    hold: Any = None       # vip_ray.serve.lead.AnswerLead: how late the master's hold timer fires
    stop: Any = None       # vip_ray.serve.lead.AnswerLead: from the master's stop waiting to its answer

    def now(self) -> float:
        """Emulated seconds since the epoch (measured wall time divided by the dilation)."""
        return (time.time() - self.epoch) / self.dilation

    def wall(self, v: float) -> float:
        """The wall-clock instant of emulated instant ``v``."""
        return self.epoch + v * self.dilation


class Ingress:
    """The master (Serve ingress deployment). ``groups`` are the device groups' handles, in
    :attr:`EmulationConfig.groups` order."""

    def __init__(self, config: EmulationConfig, *groups: Any):
        from vip_ray.serve import metrics

        self.cfg = config
        self.groups = list(groups)
        self.members = [list(g.devices) for g in config.groups]
        self.group_of = {d: gi for gi, g in enumerate(config.groups) for d in g.devices}
        self.D = len(config.devices)
        self.grace = config.options.grace_ms / 1e3
        self.deadline = config.workload.deadline_s
        self.session: Session | None = None
        self.group_ok = [True] * len(self.groups)
        self.timeouts = [0] * len(self.groups)
        self.errors: dict[int, str] = {}                    # group -> its last failed call
        self.snapshots: dict[tuple[int, str], dict] = {}   # (group, incarnation) -> latest counters
        self.http_ids = itertools.count()
        self.metrics = metrics.ingress_metrics()
        self.tags = {"app": config.app}
        self.prefix = config.options.route_prefix.rstrip("/")
        self._poller: asyncio.Task | None = None
        self.issued: dict[str, int] = {}
        from vip_ray.serve.device import GIL_SWITCH_S, in_replica

        if in_replica():
            gc.freeze()  # long-lived objects out of the collector's way (full collections stall the deadlines)
            # a timer due while the inference threads run Python waits for the GIL up to the switch
            # interval (5 ms by default): a finer one keeps the emulated instants on time
            sys.setswitchinterval(GIL_SWITCH_S)
        self._starting: asyncio.Lock | None = None
        from vip_ray.control.live import live_control

        self.control = live_control(config)   # the master's online controller; None: today's master

    # -- replications -----------------------------------------------------------------------------
    async def start(self, token: str, seed: int, epoch: float) -> list[dict]:
        """Begin replication ``token`` (emulated time 0 at wall-clock ``epoch``)."""
        from vip_ray.core.master import Knowledge

        from vip_ray.serve.lead import AnswerLead

        session = Session(token, seed, epoch, Downlinks(self.cfg), self.cfg.dilation,
                          Knowledge(self.cfg.devices, seed, self.cfg.workload.heartbeat_s))
        self.snapshots = {}
        self.timeouts = [0] * len(self.groups)
        infos = await asyncio.gather(*(g.reset.remote(token, seed, epoch) for g in self.groups))
        # until the run's own answer paths say otherwise, the lead is the quickest of a few round trips
        # to every group (a round trip is two paths); at most a quarter of the deadline
        trips = []
        for _ in range(5):
            t0 = time.time()
            await asyncio.gather(*(_bounded(g.reset.remote(token, seed, epoch), 2.0) for g in self.groups))
            trips.append(time.time() - t0)
        q = GUARD_QUANTILE
        session.lead = AnswerLead(self.cfg.options.answer_lead_ms / 1e3, start_s=min(trips), quantile=q,
                                  cap_s=0.25 * self.deadline * self.cfg.dilation)
        x = self.deadline * self.cfg.dilation
        session.hold = AnswerLead(0.0, start_s=HOLD_START_S, quantile=q, cap_s=0.05 * x)
        session.stop = AnswerLead(COLLECT_S, start_s=COLLECT_S, quantile=q, cap_s=0.1 * x)
        self.session = session
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        return list(infos)

    async def _session(self) -> Session:
        """The current replication; a live one (HTTP clients only) starts on first use."""
        if self.session is None:
            self._starting = self._starting or asyncio.Lock()
            async with self._starting:
                if self.session is None:
                    await self.start(f"live-{uuid.uuid4().hex[:8]}", self.cfg.base_seed, time.time() + 0.05)
        return self.session

    async def _poll(self) -> None:
        """Collect every group's counters (they die with a killed replica) and whether it answers."""
        while True:
            try:
                s = self.session
                snaps = await asyncio.gather(*(_bounded(g.stats.remote(s.token), 2.0) for g in self.groups))
                for gi, snap in enumerate(snaps):
                    self.group_ok[gi] = snap is not None  # dead or restarting: no counters this round
                    if snap is not None and snap["token"] == s.token == self.session.token:
                        self._keep(gi, snap)
            except Exception:  # keep polling: a lost round only costs freshness
                log.exception("polling the device groups failed")
            await asyncio.sleep(POLL_S)

    def _keep(self, gi: int, snap: dict) -> None:
        """Keep the latest snapshot of each replica incarnation (a poll may return after the final one)."""
        key = (gi, snap["incarnation"])
        old = self.snapshots.get(key)
        if old is None or (snap["now"] or 0.0) >= (old["now"] or 0.0):
            self.snapshots[key] = snap

    async def finish(self, token: str, wait_s: float) -> dict:
        """End of a replication: the groups' final counters (with those of replicas killed on the
        way) and every request's uplink bytes."""
        drains = await asyncio.gather(*(_bounded(g.drain.remote(token, wait_s), wait_s + 10.0) for g in self.groups))
        bytes_up: dict[int, int] = {}
        jobs: list[tuple] = []
        for gi, d in enumerate(drains):
            if d is None:
                continue
            jobs.extend((rid, *job) for rid, js in d["jobs"].items() for job in js)
            if d["token"] == token:
                self._keep(gi, {k: d[k] for k in ("incarnation", "group", "token", "now", "devices")})
            for rid, b in d["bytes_up"].items():
                bytes_up[rid] = bytes_up.get(rid, 0) + b
        return {"bytes_up": bytes_up, "jobs": jobs, "snapshots": list(self.snapshots.values()),
                "timeouts": {self.cfg.groups[gi].name: n for gi, n in enumerate(self.timeouts)},
                "errors": {self.cfg.groups[gi].name: e for gi, e in self.errors.items()},
                "unresolved": sum(d["unresolved"] for d in drains if d is not None)}

    async def replay(self, token: str, seed: int, epoch: float, times: np.ndarray, images: np.ndarray,
                     which: np.ndarray) -> dict:
        """Replication ``token``: issue request ``i`` (input ``images[which[i]]``) at ``epoch + times[i]``,
        from here — the master is where the scenario's inputs originate (see :mod:`.loadgen`)."""
        from vip_ray.serve.loadgen import send_on_schedule

        await self.start(token, seed, epoch)
        s = self.session
        self.issued[token] = 0

        async def send(i: int) -> dict:
            res = await self._handle(s, i, images[which[i]], float(times[i]), "load")
            self.issued[token] += 1
            return res

        results, lags = await send_on_schedule(times, epoch, send, self.cfg.dilation)
        return {"results": results, "send_lag_s": lags}

    async def progress(self, token: str) -> int:
        """Requests of replication ``token`` answered so far."""
        return self.issued.get(token, 0)

    # -- requests -------------------------------------------------------------------------------------
    async def predict(self, x: np.ndarray) -> dict:
        """One request from a Python client (a ``DeploymentHandle``), arriving now; as HTTP, without the body."""
        s = await self._session()
        return await self._handle(s, next(self.http_ids), np.ascontiguousarray(x, dtype=np.uint8), s.now(), "http")

    async def _handle(self, s: Session, rid: int, x: np.ndarray, t_a: float, stream: str) -> dict:
        received = s.now()
        arrive = s.downlinks.arrivals(t_a)
        deadline = t_a + self.deadline
        # a group's message must reach the master before the master itself stops waiting
        lead = s.lead.value() + s.stop.value()
        calls = [g.run.remote(s.token, s.seed, s.epoch, rid, stream, x, [arrive[i] for i in m], deadline, self.grace,
                              lead) for g, m in zip(self.groups, self.members)]
        live = self.control.request(s, t_a) if self.control is not None else None   # vip_ray.control.live
        if live is not None:   # the controller decides when to stop waiting (its own collection)
            replies = await live.collect(self, calls)
            since, path, overshoot = None, float("nan"), None
        else:
            # the master stops waiting for its groups (a dead replica's call never returns) early enough
            # that its answer is still on time: a high quantile of its own stop-to-answer times
            stop_wall = s.wall(deadline) - s.stop.value()
            replies, since, path, overshoot = await self._collect(calls, s.wall(deadline), stop_wall)
        collected = time.time()
        used = {r[0]: r for r in replies}
        if live is not None:   # the replies the controller's answer uses (none: the fallback below)
            decided = live.answer(used)
            used = decided[0]
        fallback = False
        if not used and self.cfg.workload.fallback != "none":
            fb = await self._fallback(s, rid, stream)
            if fb is not None:
                used, fallback = {fb[0]: fb}, True
        answered = bool(used)
        # the master waits for the devices its placement has running a variant, less those a missed
        # heartbeat says are down (vip_ray.core.master.expected)
        waits_for = [d for d, dev in enumerate(self.cfg.devices)
                     if dev.slot_at(t_a) is not None and not s.knows.known_down(d, t_a)]
        if fallback:
            ideal = release = next(iter(used.values()))[1]
        elif live is not None:   # the controller's wait set and answer (the margin rule with anytime)
            _, ideal, release = decided
        elif all(d in used for d in waits_for):
            ideal = release = max([t_a] + [used[d][1] for d in waits_for])
        else:
            # the simulator's master answers at the deadline itself; this one stopped waiting
            # the answer lead (wall, vip_ray.serve.lead) before it so that its answer is ready by the
            # deadline (DeviceGroup.run), and holds it until the deadline, as the simulator's does
            ideal = release = deadline
        out = None
        if answered:
            mask = np.zeros((1, self.D), dtype=bool)
            variant = np.zeros((1, self.D), dtype=np.int64)
            probs = np.zeros((1, self.D, self.cfg.num_classes))
            for d, (_, _, v, logits) in used.items():
                mask[0, d], variant[0, d] = True, v
                probs[0, d] = softmax(np.asarray(logits).astype(np.float64))
            out = self.cfg.aggregation(probs, variant, mask)[0]
        ready = s.now()
        # this answer's path: its slowest group message (from its send, or its stop) and the aggregation
        path = path + (time.time() - collected) if since is not None and not fallback else float("nan")
        s.lead.observe(path)
        # the emulated network still carries the last reply: hold the answer until it arrives. A
        # timer fires late (the more so on a busy host): a hold due within the master's own timer
        # lateness (a trailing high quantile) before the deadline ends that much early, so that an
        # answer the simulator gives by the deadline is not measured after it
        target = min(s.wall(release), s.wall(deadline) - s.hold.value())
        hold = target - time.time()
        if hold > 0:
            await asyncio.sleep(hold)
            s.hold.observe(time.time() - target)
        elif overshoot is not None and not fallback:   # it stopped waiting for a group: how long to an answer
            s.stop.observe(overshoot + time.time() - collected)
        finish = s.now()
        top = ranked(out[None], self.cfg.top_m)[0] if answered else np.full(self.cfg.top_m, -1)
        res = {"request_id": rid, "arrival_s": t_a, "received_s": received, "finish_s": finish,
               "ideal_finish_s": ideal, "answered": answered, "fallback": fallback,
               "responders": sorted(used), "prediction": int(top[0]), "top": [int(c) for c in top],
               "top_probs": [float(out[c]) for c in top] if answered else [],
               "bytes_down": s.downlinks.bytes_down, "answer_lead_s": lead,
               # where the overhead goes: the last group's message left at `sent_s` (emulated, after its
               # real outputs were ready; less its timer's lateness if it stopped at the lead), the
               # answer was ready at `ready_s`, and held to `ideal_finish_s`
               "sent_s": (since - s.epoch) / s.dilation if since is not None else float("nan"), "ready_s": ready,
               "answer_path_s": path}
        self._record(res)
        return res

    async def _collect(self, calls: list, deadline_wall: float,
                       stop_wall: float) -> tuple[list, float | None, float, float | None]:
        """Replies of every group that answers by ``stop_wall`` (the deadline, less the master's own
        timer lateness) — or, when no reply has come, within the grace period after the deadline for groups
        that have been answering (a transport hop late is harness, not network; a message after
        ``stop_wall`` makes the answer late, so it is waited for only when there is no answer
        without it); the latest ``since`` of the groups that answered, and the longest wall time a
        group's message took from its ``since`` to here; and how late after ``stop_wall`` it stopped
        waiting when it stopped there (``None`` otherwise)."""
        tasks = [asyncio.ensure_future(_awaitable(c)) for c in calls]
        received: dict[asyncio.Future, float] = {}
        for t in tasks:
            t.add_done_callback(_retrieve)
            t.add_done_callback(lambda f: received.setdefault(f, time.time()))
        pending = set(tasks)
        overshoot = None
        if pending:
            _, pending = await asyncio.wait(pending, timeout=max(0.0, stop_wall - time.time()))
            overshoot = time.time() - stop_wall if pending else None
        waiting = {t for t in pending if self.group_ok[tasks.index(t)]}
        if waiting and not any(t.result()[0] for t in tasks
                               if t.done() and not t.cancelled() and t.exception() is None):
            overshoot = None
            await asyncio.wait(waiting, timeout=max(0.0, deadline_wall + self.grace - time.time()))
        replies, since, path = [], None, float("nan")
        for gi, (t, call) in enumerate(zip(tasks, calls)):
            if t.done() and not t.cancelled() and t.exception() is None:
                got, sent = t.result()
                replies.extend(got)
                since = sent if since is None else max(since, sent)
                path = max(received.get(t, time.time()) - sent, path if path == path else 0.0)
            else:
                self.timeouts[gi] += 1
                self.group_ok[gi] = False
                if t.done() and not t.cancelled():
                    self.errors[gi] = repr(t.exception())[:300]
                call.cancel()  # a dead replica's queued calls must not pile up for its successor
                t.cancel()
        return replies, since, path, overshoot

    async def _fallback(self, s: Session, rid: int, stream: str):
        """``local``: the master's own late reply; ``best_effort``: the first late reply of anyone."""
        master = self.cfg.master
        if self.cfg.workload.fallback == "local":  # a strategy that left the master out has nothing to fall back on
            want = [] if master is None else [master]
        else:
            want = list(range(self.D))
        gis = sorted({self.group_of[d] for d in want})
        wait_s = self.cfg.options.fallback_wait_s * self.cfg.dilation  # a late reply comes X times later
        calls = [self.groups[gi].late.remote(s.token, rid, stream, [d for d in want if self.group_of[d] == gi],
                                             wait_s, self.grace) for gi in gis]
        call_of = {asyncio.ensure_future(_awaitable(c)): c for c in calls}
        for t in call_of:
            t.add_done_callback(_retrieve)
        tasks, best = set(call_of), None
        end = time.monotonic() + wait_s + self.grace
        while tasks and best is None:
            done, tasks = await asyncio.wait(tasks, timeout=max(0.0, end - time.monotonic()),
                                             return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break
            for t in done:
                if not t.cancelled() and t.exception() is None and t.result():
                    r = t.result()[0]
                    best = r if best is None or r[1] < best[1] else best
        for t in tasks:
            call_of[t].cancel()
            t.cancel()
        return best

    def _record(self, res: dict) -> None:
        m, tags = self.metrics, self.tags
        outcome = "fallback" if res["fallback"] else "answered" if res["answered"] else "unanswered"
        m.requests.inc(tags={**tags, "outcome": outcome})
        if not res["answered"] or res["finish_s"] - res["arrival_s"] > self.deadline + 1e-9:
            m.deadline_misses.inc(tags=tags)
        m.responders.observe(len(res["responders"]), tags=tags)
        if res["answered"]:
            m.latency_ms.observe(1e3 * (res["finish_s"] - res["arrival_s"]), tags=tags)
        m.overhead_ms.observe(1e3 * max(0.0, res["finish_s"] - res["ideal_finish_s"]), tags=tags)

    # -- health and HTTP -------------------------------------------------------------------------------
    async def health(self) -> dict:
        """Every device's state as its group reports it (``unreachable`` while a replica restarts)."""
        states = await asyncio.gather(*(_bounded(g.state.remote(), 1.0) for g in self.groups))
        devices = {}
        for gi, st in enumerate(states):
            for d in self.members[gi]:
                name = self.cfg.devices[d].name
                if st is None:
                    devices[name] = {"state": "unreachable", "group": self.cfg.groups[gi].name}
                else:
                    ds = st["device_state"][name]
                    state = "available" if ds["available"] else ("down" if not ds["up"] else "busy")
                    devices[name] = {"state": state, "group": self.cfg.groups[gi].name, "queue": ds["queue"],
                                     "replica": st["incarnation"]}
        from vip_ray.serve.metrics import process_memory_mb

        n_avail = sum(v["state"] == "available" for v in devices.values())
        return {"status": "ok" if n_avail else "no devices available", "app": self.cfg.app,
                "memory_mb": {"master": process_memory_mb(),
                              **{self.cfg.groups[gi].name: {k: st[k] for k in ("rss_mb", "pss_mb")}
                                 for gi, st in enumerate(states) if st is not None}},
                "scenario": self.cfg.scenario, "available": n_avail, "devices": devices,
                "replication": self.session.token if self.session else None}

    async def __call__(self, request) -> Any:
        from starlette.responses import JSONResponse

        path = request.url.path
        path = path[len(self.prefix):] if self.prefix and path.startswith(self.prefix) else path
        routes = {"/predict": "POST", "/health": "GET"}
        if path not in routes:
            return JSONResponse({"error": f"no route {path!r}; routes: POST {self.prefix}/predict, "
                                          f"GET {self.prefix}/health"}, status_code=404)
        if request.method != routes[path]:
            return JSONResponse({"error": f"{path} takes {routes[path]}, got {request.method}"}, status_code=405)
        if path == "/health":
            return JSONResponse(await self.health())
        c, h, w = self.cfg.input_shape
        try:
            body = await self._body(request)
            t0 = time.perf_counter()
            # off the event loop (a large image takes milliseconds the other requests' timers need);
            # the request's deadline starts once its input is decoded and resized
            x = await asyncio.to_thread(decode_input, body, c, (h, w))
            decode_ms = 1e3 * (time.perf_counter() - t0)
        except BadInput as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        s = await self._session()
        res = await self._handle(s, next(self.http_ids), x, s.now(), "http")
        answer, status = self._http_answer(res)
        answer["decode_ms"] = round(decode_ms, 3)
        return JSONResponse(answer, status_code=status)

    async def _body(self, request) -> bytes:
        limit = self.cfg.options.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadInput(413, f"body of {int(declared)} bytes exceeds the limit of {limit} bytes")
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit:
                raise BadInput(413, f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _http_answer(self, res: dict) -> tuple[dict, int]:
        names = self.cfg.class_names
        latency = res["finish_s"] - res["arrival_s"]   # measured (÷ the time dilation)
        body = {"request_id": res["request_id"], "responders": [self.cfg.devices[d].name for d in res["responders"]],
                "n_devices": self.D, "latency_ms": round(1e3 * latency, 3),
                "emulated_latency_ms": round(1e3 * (res["ideal_finish_s"] - res["arrival_s"]), 3),
                "deadline_ms": 1e3 * self.deadline,
                "deadline_met": bool(res["answered"] and latency <= self.deadline + 1e-9),
                "fallback": res["fallback"], "time_dilation": self.cfg.dilation}
        if not res["answered"]:
            fb = self.cfg.workload.fallback
            body["error"] = (f"no responders: none of the {self.D} devices answered within the "
                             f"{1e3 * self.deadline:g} ms deadline" + ("" if fb == "none" else
                                                                        f", and the {fb} fallback got no reply"))
            return body, 503
        body.update(label=res["prediction"], class_name=names[res["prediction"]],
                    score_kind=SCORE_KIND.get(self.cfg.aggregation.name, "score"),
                    top_k=[{"label": c, "class_name": names[c], "score": round(p, 6)}
                           for c, p in zip(res["top"], res["top_probs"])])
        return body, 200


async def _awaitable(resp):
    return await resp


async def _bounded(resp, timeout: float):
    """The call's result, or ``None`` if it fails or takes longer than ``timeout``."""
    try:
        return await asyncio.wait_for(_awaitable(resp), timeout=timeout)
    except Exception:
        return None


def _retrieve(task: asyncio.Future) -> None:
    """Consume a task's exception (cancelled or failed calls are expected here)."""
    if not task.cancelled():
        task.exception()
